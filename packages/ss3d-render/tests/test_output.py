"""What a render run prints: Blender's C-level output goes to ``<out>/blender.log``, the terminal gets progress,
skipped meshes and one summary line (issue 13). A subprocess is the honest check: only a real process has file
descriptors 1 and 2 that Blender writes to (CliRunner captures Python's streams only)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ss3d_data.errors import Ss3dError
from ss3d_data.manifest import write_manifest
from ss3d_render.jobs import BlenderLog, RenderSummary, log_path, render_each

WINDOWS_TEXTURE = "C:/Documents and Settings/author/Desktop/wood.jpg"  # as Sweet Home 3D's MTL files have them


def test_blender_log_takes_descriptors_1_and_2_and_notes_errors(tmp_path: Path, capfd):
    log = BlenderLog(tmp_path / "out" / "blender.log")
    with pytest.raises(Ss3dError) as raised, log:
        os.write(1, b"from C on fd 1\n")
        os.write(2, b"from C on fd 2\n")
        log.note("ss3d-render: a note of ours")
        with log.capture():
            print("a Python-level print of an add-on")
        raise Ss3dError("it broke")
    os.write(2, b"after the block\n")
    text = log.path.read_text()
    assert text.startswith("==== ") and text.index("fd 1") < text.index("fd 2") < text.index("a note of ours")
    assert "a Python-level print of an add-on" in text and "after the block" not in text
    out, err = capfd.readouterr()
    assert "from C" not in out + err and "add-on" not in out + err and "after the block" in err
    assert raised.value.hint == f"Blender's output: {log.path}"
    assert log_path(tmp_path, 0, 1).name == "blender.log" and log_path(tmp_path, 2, 4).name == "blender-2-of-4.log"


def test_the_terminal_shows_the_first_few_failures_and_the_log_all_of_them(tmp_path: Path, capsys, kit):
    mesh = kit.sphere_file(tmp_path)[1]
    records = [kit.record(f"m{i}", tmp_path / "m.obj", mesh, np.eye(4)) for i in range(8)]

    def fail(record):
        raise Ss3dError(f"{record.instance_id} is broken")

    summary = RenderSummary(assigned=8)
    with BlenderLog(tmp_path / "blender.log") as log:
        render_each(records, summary, "views", "views", fail, log)
    terminal = capsys.readouterr().err
    assert len(summary.failed) == 8 and terminal.count("skipped m") == 5 and "m4 is broken" in terminal
    assert "m5 is broken" not in terminal and f"more meshes skipped: listed in {log.path}" in terminal
    assert all(f"skipped m{i}: m{i} is broken" in log.path.read_text() for i in range(8))


@pytest.mark.blender
@pytest.mark.slow
def test_a_cli_render_prints_a_few_lines_and_blender_writes_to_the_log(tmp_path: Path, test_preset: Path, kit):
    path, mesh, matrix = kit.sphere_file(tmp_path)
    (tmp_path / "sphere.mtl").write_text(f"newmtl wood\nKd 0.5 0.4 0.3\nmap_Kd {WINDOWS_TEXTURE}\n")
    path.write_text("mtllib sphere.mtl\nusemtl wood\n" + path.read_text())
    (tmp_path / "broken.obj").write_text("this is not a mesh\n")
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(manifest, [kit.record("sphere", path, mesh, matrix),
                              kit.record("broken", tmp_path / "broken.obj", mesh, matrix)])
    out = tmp_path / "views"
    result = subprocess.run(
        [sys.executable, "-m", "ss3d_render", "views", "--manifest", str(manifest), "--out", str(out),
         "--preset", str(test_preset)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    terminal = result.stdout + result.stderr
    assert result.returncode == 0, terminal
    assert len(terminal.splitlines()) <= 15, terminal
    assert re.search(r"^views: 1 of 2 meshes rendered \(3 images\), 0 already present, 1 failed, "
                     rf"1 textures unresolved; .* Blender's output: {re.escape(str(out / 'blender.log'))}$",
                     terminal, re.MULTILINE), terminal
    assert "skipped broken:" in terminal  # ss3d's own messages still reach the terminal
    assert "Failed to open dir" not in terminal and "Saved:" not in terminal
    log = (out / "blender.log").read_text()
    # Blender's own lines: the texture search on fd 2, the import time (printf, fd 1), a line per frame
    assert "Failed to open dir (No such file or directory)" in log and "Documents and Settings/author" in log
    assert "OBJ import of 'sphere.obj' took" in log and log.count("| Saved: '") == 3
    assert f"1 textures unresolved: {tmp_path / WINDOWS_TEXTURE}" in log and "skipped broken:" in log
