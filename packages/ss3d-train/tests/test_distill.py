"""Distillation: the student approaches its teachers; synthetic teaching; exact resume; CLI argument checks; a
pixel-aligned student's points carried to its expert's frame."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ss3d_data import Ss3dError, iter_samples, load_preset, resolve_shards
from ss3d_data.preprocess import crop_to_mask
from ss3d_model import load_network, read_checkpoint_meta
from ss3d_model.cameras import VIEW_DISTANCE, photo_camera, photo_projection
from ss3d_model.reconstruct import init_checkpoint
from ss3d_train import RunOptions, distill, distill_loss, pretrain, selftrain
from ss3d_train.cli import app, parse_experts
from ss3d_train.distill import ExpertCameras, view_to_expert
from ss3d_train.run import weights_fingerprint
from ss3d_train.selftrain import load_cameras


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
def test_student_approaches_its_teachers(tmp_path, teachers, collection_dirs, views_dir, small_preset,
                                        override_preset):
    experts = {"box": teachers["box"], "ball": teachers["ball"]}
    collections = [str(d) for d in collection_dirs.values()]
    preset = override_preset(small_preset, tmp_path, distill={"checkpoint_every": 1000})  # the final one only
    start = distill(collections, experts, RunOptions(out=tmp_path / "start", preset=str(preset),
                                                     stop_after=1), synthetic=teachers["synthetic"],
                    synthetic_shards=[str(views_dir)])
    final = distill(collections, experts, RunOptions(out=tmp_path / "run", preset=str(preset), epochs=5),
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
@pytest.mark.float_sensitive
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


@pytest.fixture(scope="module")
def box_expert(tmp_path_factory, collection_dirs, small_preset):
    """A real self-trained expert of the box collection (a few camera steps from a fresh network): its state file
    holds every image's camera hypotheses."""
    root = tmp_path_factory.mktemp("expert")
    init_checkpoint(str(small_preset), root / "init.safetensors")
    return selftrain([str(collection_dirs["box"])], root / "init.safetensors",
                     RunOptions(out=root / "box", preset=str(small_preset), stop_after=2))


def test_a_pixel_aligned_students_points_show_where_its_expert_sees_them(box_expert, collection_dirs):
    """A collection image's points, placed in the student's view frame and seen through the photo camera it uses at
    inference, go to the expert's canonical frame by a similarity under which the expert's own camera shows them at
    the same place of the (shared) crop: exactly on the crop centre's ray at the object's depth, within 1% of the
    crop's side around it, though the two cameras' focal lengths differ."""
    size = 40
    cameras = ExpertCameras.load(box_expert)
    keys, hypotheses = load_cameras(box_expert)
    assert set(cameras.row_of) == set(keys) and len(keys) == 4
    expert_k, expert_side = hypotheses.intrinsics.double(), hypotheses.settings()["size"]
    torch.manual_seed(0)
    for sample in iter_samples(resolve_shards(str(collection_dirs["box"]))):
        height, width = sample.images.shape[1:3]
        cropped = crop_to_mask(sample.images[0], sample.masks[0], size)
        crop = torch.tensor([cropped.scale, *cropped.offset], dtype=torch.float32)
        pose = cameras.cam2world[cameras.row_of[sample.info.key]].double()
        similarity = view_to_expert(crop, width, height, size, pose, cameras.focal_per_side).double()
        k, student_pose = photo_camera(width, height)
        projection = photo_projection(crop[None], width, height, size)[0].double()

        def student_uv(points):
            shown = torch.cat([points, torch.ones(len(points), 1, dtype=points.dtype)], 1) @ projection.T
            return shown[:, :2] / shown[:, 2:]

        def expert_uv(points):
            canonical = points @ similarity[:, :3].T + similarity[:, 3]
            pixels = ((canonical - pose[:3, 3]) @ pose[:3, :3]) @ expert_k.T
            return pixels[:, :2] / pixels[:, 2:] / expert_side * 2 - 1

        # the object's centre: on the crop centre's ray at depth VIEW_DISTANCE, the canonical origin for the expert
        centre = (size / 2 - crop[1:]) / crop[0]
        ray = torch.linalg.solve(k, torch.cat([centre, torch.ones(1)])).double()
        anchor = student_pose[:3, :3].double() @ (ray * VIEW_DISTANCE) + student_pose[:3, 3].double()
        assert torch.allclose(anchor @ similarity[:, :3].T + similarity[:, 3], torch.zeros(3, dtype=torch.float64),
                              atol=1e-5)
        assert torch.allclose(student_uv(anchor[None]), torch.zeros(1, 2, dtype=torch.float64), atol=1e-5)
        assert torch.allclose(expert_uv(anchor[None]), torch.zeros(1, 2, dtype=torch.float64), atol=1e-5)
        around = anchor + (torch.rand(200, 3, dtype=torch.float64) - 0.5) * 0.4  # the object's size
        gap = (student_uv(around) - expert_uv(around)).abs().max()
        assert gap < 0.02, gap  # uv spans [-1, 1]; measured 0.002-0.003 (0.06 without the focal ratio)
        linear = similarity[:, :3]                  # a similarity: a rotation times one scale
        scale = torch.linalg.det(linear) ** (1 / 3)
        assert torch.allclose(linear.T @ linear, scale ** 2 * torch.eye(3, dtype=torch.float64), atol=1e-6)


@pytest.mark.slow
def test_a_pixel_aligned_student_distils_from_canonical_experts(tmp_path, box_expert, collection_dirs, views_dir,
                                                                small_preset, override_preset):
    pixel = override_preset(small_preset, tmp_path, model={"pixel_features": 4})
    synthetic = pretrain([str(views_dir)], RunOptions(out=tmp_path / "syn", preset=str(pixel), stop_after=2))
    canonical = tmp_path / "canonical.safetensors"
    init_checkpoint(str(small_preset), canonical)
    box = [str(collection_dirs["box"])]
    options = RunOptions(out=tmp_path / "run", preset=str(pixel), stop_after=3)
    final = distill(box, {"box": box_expert}, options, synthetic=synthetic, synthetic_shards=[str(views_dir)],
                    init=synthetic)
    student = load_network(final)[0]
    assert student.config.pixel_features == 4
    logged = [line for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if line]
    assert len(logged) == 3 and all(np.isfinite(json.loads(line)["loss"]) for line in logged)
    with pytest.raises(Ss3dError, match="same frame"):  # a canonical synthetic teacher for a pixel-aligned student
        distill(box, {"box": box_expert}, RunOptions(out=tmp_path / "r1", preset=str(pixel)),
                synthetic=canonical, synthetic_shards=[str(views_dir)])
    with pytest.raises(Ss3dError, match="has no camera for image"):  # the ball images are not the expert's
        distill([str(collection_dirs["ball"])], {"ball": box_expert},
                RunOptions(out=tmp_path / "r2", preset=str(pixel)))
    with pytest.raises(Ss3dError, match="state file"):  # a pretrained checkpoint has no cameras
        distill(box, {"box": canonical}, RunOptions(out=tmp_path / "r3", preset=str(pixel)))
