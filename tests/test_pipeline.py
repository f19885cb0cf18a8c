"""The whole recipe, tiny: `just demo` on procedural meshes with the `mini` preset, then checks that every stage's
files exist and validate against their contracts, and that the distilled model beats a randomly initialised
network both in its point-wise loss to its teachers and in IoU on the tiny test set (the `mini` preset extracts at
density 1.25, where a random network's field (under ~1.1) reconstructs nothing).

Why the IoU margin holds on any x86-64 CPU: without 3D supervision the trained fields peaked at only 1.5-2, and on
an AVX2 machine (another float trajectory) the distilled field stayed under 1.25 everywhere: no surface, IoU 0, a
coin toss between machines. The `mini` preset now adds pretraining's occupancy loss, which pushes the field above
the threshold wherever the mesh is solid; measured with ATEN_CPU_CAPABILITY=avx2, every test image then has a
surface and the distilled mean IoU is 0.25 against the random network's 0, five times the 0.05 the test asks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ss3d_data import SkipCounter, iter_samples, resolve_shards
from ss3d_data.manifest import read_manifest
from ss3d_data.preprocess import crop_to_mask
from ss3d_model import ModelConfig, ReconstructionNetwork, load_checkpoint, load_network
from ss3d_train import distill_loss

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PRETRAIN, SELFTRAIN, HELDOUT = ["chair", "table", "lamp"], ["cup", "bottle"], ["vase"]

pytestmark = [pytest.mark.slow, pytest.mark.blender, pytest.mark.torchrun]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    base = tmp_path_factory.mktemp("pipeline")
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "SS3D_SOURCE": "procedural",
        "SS3D_PRESET": "mini",
        "SS3D_DATA": str(base / "data"),
        "SS3D_RUNS": str(base / "runs"),
        "SS3D_PRETRAIN": ",".join(PRETRAIN),
        "SS3D_SELFTRAIN": ",".join(SELFTRAIN),
        "SS3D_HELDOUT": ",".join(HELDOUT),
        "SS3D_MAX_TRAIN": "6",
        "SS3D_MAX_TEST": "1",
    }
    cmd = [BIN / "just", "--justfile", ROOT / "justfile", "--working-directory", ROOT, "demo"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # a second run of the training stages finds every checkpoint in place and redoes nothing (the whole `demo`
    # again re-checks renders and rescores cached rows: 2.5 minutes of a suite that must stay short)
    again = subprocess.run([*cmd[:-1], "pretrain", "selftrain", "distill"], env=env, capture_output=True, text=True,
                           timeout=120)
    said = again.stdout + again.stderr
    assert again.returncode == 0, said
    assert all(f"{stage}: done" in said for stage in ("pretrain", "selftrain cup", "selftrain bottle", "distill"))
    return base / "data", base / "runs"


def test_every_stage_wrote_valid_files(pipeline):
    data, runs = pipeline
    for name in ("pretrain", "selftrain", "test"):
        assert read_manifest(data / f"{name}.jsonl")
    counts = {}
    for spec in ("train/synthetic-views-*.tar", "train/wild-cup-*.tar", "train/wild-bottle-*.tar", "test"):
        skips = SkipCounter(max_bad=0)
        samples = list(iter_samples(resolve_shards(str(data / "shards" / spec)), skips))
        counts[spec] = samples
        assert samples and skips.skipped == 0
    assert all(s.info.kind == "views" and s.cam2world is not None for s in counts["train/synthetic-views-*.tar"])
    assert all(s.info.kind == "image" and s.cam2world is None for s in counts["train/wild-cup-*.tar"])
    assert {s.info.split for s in counts["test"]} == {"test"}

    _, meta = load_checkpoint(runs / "pretrain" / "pretrain.safetensors")
    assert meta.stage == "pretrain" and set(meta.categories) == set(PRETRAIN)
    for category in SELFTRAIN:
        _, meta = load_checkpoint(runs / f"expert-{category}" / f"expert-{category}.safetensors")
        assert meta.stage == "selftrain" and category in meta.categories
    _, meta = load_checkpoint(runs / "distill" / "distill.safetensors")
    assert meta.stage == "distill" and set(SELFTRAIN) <= set(meta.categories)
    assert not set(HELDOUT) & set(meta.categories)

    results = runs / "results"
    for label in ("synthetic-only", "distilled"):
        for metric in ("iou", "chamfer"):
            rows = [json.loads(x) for x in (results / f"{label}.{metric}.jsonl").read_text().splitlines()]
            assert len(rows) == len(counts["test"])
    assert (results / "tables.md").read_text().count("|") > 10
    html = (results / "report.html").read_text()
    assert html.count("<img") >= len(counts["test"]) and "http" not in html.replace("http-equiv", "")


def _inputs(shards: str, size: int) -> torch.Tensor:
    images = []
    for sample in iter_samples(resolve_shards(shards)):
        crop = crop_to_mask(sample.images[0], sample.masks[0], size)
        images.append(torch.from_numpy(crop.image).permute(2, 0, 1).float() / 255)
    return torch.stack(images)


@pytest.mark.float_sensitive
def test_distilled_student_matches_its_teachers_better_than_a_random_network(pipeline):
    data, runs = pipeline
    student, meta = load_network(runs / "distill" / "distill.safetensors")
    torch.manual_seed(0)
    random_net = ReconstructionNetwork(ModelConfig.from_dict(meta.model_config))
    generator = torch.Generator().manual_seed(0)
    ours, theirs = [], []
    for category in SELFTRAIN:
        teacher, _ = load_network(runs / f"expert-{category}" / f"expert-{category}.safetensors")
        images = _inputs(str(data / "shards" / "train" / f"wild-{category}-*.tar"), student.config.input_size)
        points = (torch.rand(len(images), 2048, 3, generator=generator) - 0.5) * 1.2
        with torch.no_grad():
            target = teacher.decode(teacher.encode(images), points)
            for net, out in ((student, ours), (random_net, theirs)):
                out.append(float(distill_loss(*net.decode(net.encode(images), points), *target)))
    assert np.mean(ours) < 0.85 * np.mean(theirs), (ours, theirs)


def _mean_iou(path: Path) -> float:
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    return float(np.mean([r["iou"] or 0.0 for r in rows]))  # a failed row (no surface at all) scores 0


@pytest.mark.float_sensitive
def test_distilled_model_beats_a_random_network_in_iou(pipeline, tmp_path):
    data, runs = pipeline
    random_net = tmp_path / "random.safetensors"
    env = {**os.environ, "SS3D_PRESET": "mini"}
    subprocess.run([BIN / "ss3d-model", "init", "--out", random_net, "--seed", "0"], env=env, check=True,
                   capture_output=True)
    subprocess.run([BIN / "ss3d-eval", "iou", "--shards", data / "shards" / "test", "--manifest", data / "test.jsonl",
                    "--checkpoint", random_net, "--label", "random", "--out", tmp_path], env=env, check=True,
                   capture_output=True)
    ours, theirs = _mean_iou(runs / "results" / "distilled.iou.jsonl"), _mean_iou(tmp_path / "random.iou.jsonl")
    assert ours > theirs + 0.05, (ours, theirs)
