import os
import signal
import subprocess
import sys
import textwrap

import pytest

from ss3d_data.atomic import atomic_write, atomic_write_bytes


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
