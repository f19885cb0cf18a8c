"""A pretraining process killed with SIGKILL and resumed ends with the same weights as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from ss3d_model import load_network
from ss3d_train.run import weights_fingerprint


def command(views_dir, out, preset, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ss3d_train", "pretrain", str(views_dir), "--out", str(out), "--preset",
            str(preset), "--epochs", "3", "--seed", "5", *extra]


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(views_dir, small_preset, tmp_path):
    env = {**os.environ, "SS3D_DEBUG": "1"}
    straight = subprocess.run(command(views_dir, tmp_path / "straight", small_preset), env=env,
                              capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-2000:]

    out = tmp_path / "killed"
    victim = subprocess.Popen(command(views_dir, out, small_preset), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (out / "last.state.safetensors").exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)  # mid-run: after the first periodic checkpoint, wherever the loop is
    victim.wait()
    assert not (out / "pretrain.safetensors").exists(), "the run finished before it could be killed"
    resumed = subprocess.run(command(views_dir, out, small_preset, "--resume"), env=env, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = load_network(tmp_path / "straight" / "pretrain.safetensors")[0]
    b = load_network(out / "pretrain.safetensors")[0]
    assert weights_fingerprint(a) == weights_fingerprint(b)
