"""tools/gpu-check: its --dry-run runs every step of the GPU check on the CPU at the smallest sizes, so the script a
lent GPU gets has run before; without a GPU and without --dry-run it refuses in one line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[3] / "tools" / "gpu-check"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_the_dry_run_runs_every_step_and_writes_its_figures(views_dir, tmp_path):
    out = tmp_path / "figures"
    done = run("--dry-run", "--out", str(out), "--shards", f"{views_dir}/*.tar")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = [line.split("\t") for line in (out / "summary.tsv").read_text().splitlines()]
    assert [row[0] for row in summary] == ["info", "tests", "bench-model", "bench-train", "bench-train-memory",
                                           "pretrain"]
    assert all(row[1] == "0" for row in summary), summary
    assert "4 passed" in (out / "tests.txt").read_text()  # the CUDA tests, on the CPU
    model = (out / "bench-model.txt").read_text()
    assert "of matmul" in model and "coarse-to-fine 32^3" in model
    assert "of matmul" in (out / "bench-train.txt").read_text()
    metrics = [json.loads(line) for line in (out / "pretrain-metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3] and all(m["images_per_s"] > 0 for m in metrics)
    assert not (out / "pretrain-run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_or_with_a_bad_argument_it_refuses_in_one_line(tmp_path):
    for args, said in ((["--out", str(tmp_path / "x")], "no CUDA GPU visible"),
                       (["--dry-run", "--bogus"], "unknown argument '--bogus'"),
                       (["--dry-run"], "--out DIR is required")):
        done = run(*args)
        assert done.returncode == 2 and done.stderr.startswith("error: gpu-check:") and said in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
