import os
import signal
import subprocess
import sys
import textwrap

import pytest

from ss3d_data.atomic import atomic_link, atomic_write, atomic_write_bytes


def test_atomic_write_replaces_file(tmp_path):
    target = tmp_path / "a.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_exception_mid_write_keeps_previous_file(tmp_path):
    target = tmp_path / "a.bin"
    atomic_write_bytes(target, b"previous")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write(b"partial")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_killed_process_mid_write_keeps_previous_file(tmp_path):
    target = tmp_path / "a.bin"
    atomic_write_bytes(target, b"previous")
    script = textwrap.dedent(
        f"""
        import os, signal
        from ss3d_data.atomic import atomic_write
        with atomic_write({str(target)!r}) as handle:
            handle.write(b"x" * 1_000_000)
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"previous"


def test_a_link_survives_its_source_being_rewritten(tmp_path):
    source, target = tmp_path / "last.bin", tmp_path / "final.bin"
    atomic_write_bytes(target, b"stale")
    atomic_write_bytes(source, b"step 10")
    atomic_link(source, target)
    assert target.read_bytes() == b"step 10"
    assert os.stat(source).st_ino == os.stat(target).st_ino  # a second name, not a second copy
    atomic_write_bytes(source, b"step 20")
    assert target.read_bytes() == b"step 10"
    assert sorted(os.listdir(tmp_path)) == ["final.bin", "last.bin"]


def test_a_link_to_a_missing_source_leaves_no_trace(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_link(tmp_path / "absent.bin", tmp_path / "final.bin")
    assert os.listdir(tmp_path) == []
