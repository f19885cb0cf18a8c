"""Every stage under ``torchrun --nproc_per_node=2`` (gloo): runs through the CLI and ends with identical replicas."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ss3d_model import read_checkpoint_meta


def torchrun(*args: str, cwd) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "ss3d_train", *args]
    env = {**os.environ, "SS3D_DEBUG": "1"}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def replicas(folder) -> list[str]:
    record = json.loads((folder / "replicas.json").read_text())
    assert record["world_size"] == 2
    return record["fingerprints"]


@pytest.mark.torchrun
@pytest.mark.slow
def test_every_stage_runs_under_torchrun_with_identical_replicas(tmp_path, views_dir, collection_dirs, small_preset):
    preset = str(small_preset)
    torchrun("pretrain", str(views_dir), "--out", str(tmp_path / "pre"), "--preset", preset, "--epochs", "1",
             cwd=tmp_path)
    pre = tmp_path / "pre" / "pretrain.safetensors"
    prints = replicas(tmp_path / "pre")
    assert len(prints) == 2 and prints[0] == prints[1]
    assert read_checkpoint_meta(pre).extra["world_size"] == 2

    torchrun("selftrain", str(collection_dirs["box"]), "--init", str(pre), "--out", str(tmp_path / "self"),
             "--preset", preset, "--name", "expert-box", cwd=tmp_path)
    expert = tmp_path / "self" / "expert-box.safetensors"
    prints = replicas(tmp_path / "self")
    assert prints[0] == prints[1] and read_checkpoint_meta(expert).categories == ["box"]

    torchrun("distill", "--out", str(tmp_path / "dist"), "--expert", f"box={expert}", "--expert", f"ball={expert}",
             "--collections", str(collection_dirs["box"]), "--collections", str(collection_dirs["ball"]),
             "--synthetic", str(pre), "--synthetic-shards", str(views_dir), "--preset", preset, "--epochs", "1",
             cwd=tmp_path)
    prints = replicas(tmp_path / "dist")
    assert prints[0] == prints[1]
    assert read_checkpoint_meta(tmp_path / "dist" / "distill.safetensors").categories == ["ball", "box"]
