"""Distillation: the student approaches its teachers; synthetic teaching; exact resume; CLI argument checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ss3d_data import Ss3dError, iter_samples, load_preset, resolve_shards
from ss3d_data.preprocess import crop_to_mask
from ss3d_model import load_network, read_checkpoint_meta
from ss3d_train import RunOptions, distill, distill_loss, pretrain
from ss3d_train.cli import app, parse_experts
from ss3d_train.run import weights_fingerprint


def teacher_gap(student_path, teachers: dict, collection_dirs, size: int) -> float:
    """Mean distillation loss between student and each image's teacher at fixed points."""
    student = load_network(student_path)[0]
    generator = torch.Generator().manual_seed(0)
    gaps = []
    for category, folder in collection_dirs.items():
        teacher = load_network(teachers[category])[0]
        crops = [crop_to_mask(s.images[0], s.masks[0], size).image for s in iter_samples(resolve_shards(str(folder)))]
        images = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
        points = (torch.rand(images.shape[0], 512, 3, generator=generator) * 2 - 1) * 0.6
        with torch.no_grad():
            gaps.append(distill_loss(*student(images, points), *teacher(images, points)).item())
    return float(np.mean(gaps))


@pytest.fixture(scope="module")
def teachers(tmp_path_factory, views_dir, small_preset):
    """Two real, different 'experts' (short pretraining runs with different seeds) and a synthetic model."""
    root = tmp_path_factory.mktemp("teachers")
    made = {}
    for seed, name in enumerate(("box", "ball", "synthetic")):
        made[name] = pretrain([str(views_dir)], RunOptions(out=root / name, preset=str(small_preset), epochs=1,
                                                           seed=seed + 10))
    return made


@pytest.mark.slow
def test_student_approaches_its_teachers(tmp_path, teachers, collection_dirs, views_dir, small_preset):
    experts = {"box": teachers["box"], "ball": teachers["ball"]}
    collections = [str(d) for d in collection_dirs.values()]
    start = distill(collections, experts, RunOptions(out=tmp_path / "start", preset=str(small_preset),
                                                     stop_after=1), synthetic=teachers["synthetic"],
                    synthetic_shards=[str(views_dir)])
    final = distill(collections, experts, RunOptions(out=tmp_path / "run", preset=str(small_preset), epochs=5),
                    synthetic=teachers["synthetic"], synthetic_shards=[str(views_dir)])
    size = load_preset(str(small_preset)).section("model")["input_size"]
    before, after = teacher_gap(start, experts, collection_dirs, size), teacher_gap(final, experts,
                                                                                   collection_dirs, size)
    print(f"student-teacher gap {before:.4f} -> {after:.4f}")
    assert after < 0.8 * before  # measured: 0.0017 -> 0.0008 after 8 epochs
    meta = read_checkpoint_meta(final)
    assert meta.stage == "distill" and meta.categories == ["ball", "box"] and meta.encoder_init == "random"
    assert set(meta.extra["parents"]) == {"box", "ball", "__synthetic__"}


@pytest.mark.slow
def test_a_warm_started_student_begins_at_its_init_checkpoint(tmp_path, teachers, collection_dirs, views_dir,
                                                              small_preset):
    experts = {"box": teachers["box"], "ball": teachers["ball"]}
    collections = [str(d) for d in collection_dirs.values()]
    kw = dict(synthetic=teachers["synthetic"], synthetic_shards=[str(views_dir)], init=teachers["synthetic"])
    warm = distill(collections, experts, RunOptions(out=tmp_path / "warm", preset=str(small_preset), stop_after=1),
                   **kw)
    cold = distill(collections, experts, RunOptions(out=tmp_path / "cold", preset=str(small_preset), stop_after=1),
                   synthetic=teachers["synthetic"], synthetic_shards=[str(views_dir)])
    init = dict(load_network(teachers["synthetic"])[0].named_parameters())
    # one Adam step moves every weight by about the learning rate: far closer to the init than a fresh network is
    # (parameters only: batch-norm running statistics move with every forward pass in training mode)
    for path, near in ((warm, True), (cold, False)):
        weights = dict(load_network(path)[0].named_parameters())
        gap = max(float((weights[k] - init[k]).detach().abs().max()) for k in init)
        assert (gap < 0.01) == near, (path, gap)
    assert read_checkpoint_meta(warm).extra["parents"]["student-init"] == str(teachers["synthetic"])


@pytest.mark.slow
def test_distill_resume_is_exact(tmp_path, teachers, collection_dirs, views_dir, small_preset):
    experts = {"box": teachers["box"], "ball": teachers["ball"]}
    collections = [str(d) for d in collection_dirs.values()]
    kw = dict(synthetic=teachers["synthetic"], synthetic_shards=[str(views_dir)])
    straight = distill(collections, experts, RunOptions(out=tmp_path / "a", preset=str(small_preset)), **kw)
    distill(collections, experts, RunOptions(out=tmp_path / "b", preset=str(small_preset), stop_after=5), **kw)
    resumed = distill(collections, experts, RunOptions(out=tmp_path / "b", preset=str(small_preset), resume=True),
                      **kw)
    assert weights_fingerprint(load_network(straight)[0]) == weights_fingerprint(load_network(resumed)[0])


def test_distill_arguments_are_checked(tmp_path, collection_dirs, small_preset):
    assert parse_experts(["chair=a.safetensors", "mug=b=c"]) == {"chair": "a.safetensors", "mug": "b=c"}
    for bad in (["chair"], ["=x"], ["a=x", "a=y"]):
        with pytest.raises(Ss3dError):
            parse_experts(bad)
    with pytest.raises(Ss3dError, match="go together"):
        distill([str(collection_dirs["box"])], {"box": "x"}, RunOptions(out=tmp_path / "r", preset=str(small_preset)),
                synthetic="s.safetensors")
    result = CliRunner().invoke(app, ["distill", "--out", str(tmp_path / "r2"), "--expert", "box",
                                      "--collections", str(collection_dirs["box"])])
    assert result.exit_code == 2 and "CATEGORY=CHECKPOINT" in result.output
    result = CliRunner().invoke(app, ["distill", "--out", str(tmp_path / "r3"), "--expert",
                                      f"box={tmp_path / 'missing.safetensors'}", "--collections",
                                      str(collection_dirs["box"]), "--preset", str(small_preset)])
    assert result.exit_code == 2 and "no such file" in result.output
