import os
import signal
import subprocess
import sys
import textwrap

import pytest

from ss3d_data.atomic import atomic_link, atomic_write, atomic_write_bytes
from ss3d_data.errors import Ss3dError


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


def _kill_mid_write(target, size: int) -> None:
    """A separate process starts writing ``size`` bytes to ``target`` and is SIGKILLed before the rename."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from ss3d_data.atomic import atomic_write
        with atomic_write({str(target)!r}) as handle:
            handle.write(b"x" * {size})
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    assert subprocess.run([sys.executable, "-c", script], check=False).returncode == -signal.SIGKILL


def test_killed_process_mid_write_keeps_previous_file(tmp_path):
    target = tmp_path / "a.bin"
    atomic_write_bytes(target, b"previous")
    _kill_mid_write(target, 1_000_000)
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
    with pytest.raises(Ss3dError, match="final.bin"):
        atomic_link(tmp_path / "absent.bin", tmp_path / "final.bin")
    assert os.listdir(tmp_path) == []


def test_a_killed_writers_temp_file_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "last.bin"
    atomic_write_bytes(target, b"previous")
    _kill_mid_write(target, 100_000)
    leftovers = [n for n in os.listdir(tmp_path) if n != "last.bin"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".last.bin.tmp-")
    # Temps of a live writer (this very test process stands in for one), of another target and of an unknown
    # shape are not touched.
    live = tmp_path / f".last.bin.tmp-{os.getppid()}-inflight"
    other = tmp_path / ".other.bin.tmp-999999999-x"
    odd = tmp_path / ".last.bin.tmp-handmade"
    for path in (live, other, odd):
        path.write_bytes(b"keep")
    atomic_write_bytes(target, b"next")
    assert target.read_bytes() == b"next"
    assert sorted(os.listdir(tmp_path)) == sorted(["last.bin", live.name, other.name, odd.name])


@pytest.mark.parametrize("failure", ["enospc_write", "eacces_fsync", "parent_is_a_file", "target_is_a_folder"])
def test_os_errors_are_one_line_and_leave_the_previous_file(tmp_path, monkeypatch, failure):
    target = tmp_path / "a.bin"
    atomic_write_bytes(target, b"previous")
    if failure == "enospc_write":
        def full(*args, **kwargs):
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(os, "fsync", full)  # the data reaches the disk at fsync: where a full disk shows
    elif failure == "eacces_fsync":
        def denied(*args, **kwargs):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(os, "replace", denied)
    elif failure == "parent_is_a_file":
        target = tmp_path / "a.bin" / "inner.bin"
    else:
        target = tmp_path / "folder"
        target.mkdir()
    with pytest.raises(Ss3dError) as caught:
        atomic_write_bytes(target, b"new")
    message = str(caught.value)
    assert "\n" not in message and str(target) in message
    assert (tmp_path / "a.bin").read_bytes() == b"previous"
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]
