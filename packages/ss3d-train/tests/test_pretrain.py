"""Pretraining on real analytic-shape shards: loss, run folder, checkpoint metadata, exact resume, NaN guard."""

from __future__ import annotations

import importlib
import json
import math

import numpy as np
import pytest
import torch

from ss3d_data import Ss3dError, iter_samples, load_preset, resolve_shards
from ss3d_data.presets import section_config
from ss3d_model import VolumeConfig, load_network, look_at, read_checkpoint_meta, state_path
from ss3d_model.cameras import VIEW_DISTANCE, crop_projection, photo_projection
from ss3d_model.reconstruct import encode_input
from ss3d_train import PretrainConfig, RunOptions, pretrain
from ss3d_train.data import ViewsTransform
from ss3d_train.distributed import World
from ss3d_train.objectives import RenderObjective, occupancy_loss
from ss3d_train.pretrain import _pretrain_loss, cosine_factor, epoch_scheduler
from ss3d_train.run import weights_fingerprint


def fixed_batch_loss(checkpoint, shards, preset_path) -> float:
    """The pretraining loss of a checkpoint on every instance, with fixed views and rays (train-mode batch norm, as
    in training), averaged over several ray draws."""
    preset = load_preset(str(preset_path))
    cfg = section_config(PretrainConfig, preset.section("pretrain"), "pretrain")
    network, _ = load_network(checkpoint)
    network.train()
    transform = ViewsTransform(network.config.input_size, 24, 3, 0.5)
    items = [transform(s, np.random.default_rng(7)) for s in iter_samples(resolve_shards(shards))]
    batch = torch.utils.data.default_collate(items)
    objective = RenderObjective(network, VolumeConfig.from_preset(preset))
    world = World(0, 1, 0, torch.device("cpu"))
    generator = torch.Generator().manual_seed(123)
    with torch.no_grad():
        return float(np.mean([_pretrain_loss(objective, batch, cfg, VolumeConfig.from_preset(preset), generator,
                                             world)[0].item() for _ in range(4)]))


@pytest.mark.slow
@pytest.mark.float_sensitive
def test_pretrain_reduces_loss_and_writes_its_run(views_dir, small_preset, override_preset, tmp_path):
    preset = override_preset(small_preset, tmp_path, pretrain={"checkpoint_every": 1000})  # the final one only
    first = pretrain([str(views_dir)], RunOptions(out=tmp_path / "a", preset=str(preset), epochs=1,
                                                  name="start"), init=None)
    # The first run's starting point is its own init: continue from a fresh init checkpoint for the comparison.
    final = pretrain([str(views_dir)], RunOptions(out=tmp_path / "b", preset=str(preset), epochs=6),
                     init=first)
    assert fixed_batch_loss(final, str(views_dir), small_preset) < fixed_batch_loss(first, str(views_dir),
                                                                                    small_preset)
    run = tmp_path / "b"
    for name in ("pretrain.safetensors", "last.safetensors", "last.state.safetensors", "config.json",
                 "metrics.jsonl", "replicas.json"):
        assert (run / name).is_file(), name
    meta = read_checkpoint_meta(final)
    assert (meta.stage, meta.epoch, meta.step) == ("pretrain", 6, 24)  # 8 instances / batch 2 = 4 steps an epoch
    assert meta.categories == ["ball", "box"]
    assert len(meta.data_manifest_hash) == 16 and meta.extra["parents"] == [str(first)]
    config = json.loads((run / "config.json").read_text())
    assert config["options"]["epochs"] == 6 and config["preset"]["sections"]["pretrain"]["rays_per_view"] == 48
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, 25)) and all(np.isfinite(x["loss"]) for x in lines)


@pytest.mark.slow
def test_resume_after_a_stop_gives_the_same_weights(views_dir, small_preset, tmp_path):
    opts = dict(preset=str(small_preset), epochs=2, seed=3)
    straight = pretrain([str(views_dir)], RunOptions(out=tmp_path / "straight", **opts))
    # Stop mid-epoch (step 5 of 8; the periodic checkpoint is at step 3), then resume to the end.
    stopped = pretrain([str(views_dir)], RunOptions(out=tmp_path / "split", stop_after=5, **opts))
    assert stopped.name == "last.safetensors" and read_checkpoint_meta(stopped).step == 5
    with pytest.raises(Ss3dError, match="already holds a run"):
        pretrain([str(views_dir)], RunOptions(out=tmp_path / "split", **opts))
    resumed = pretrain([str(views_dir)], RunOptions(out=tmp_path / "split", resume=True, **opts))
    a, _ = load_network(straight)
    b, _ = load_network(resumed)
    assert weights_fingerprint(a) == weights_fingerprint(b)
    metrics = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in metrics] == list(range(1, 9))
    assert [json.loads(x)["loss"] for x in metrics] == [
        json.loads(x)["loss"] for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    _, state = __import__("ss3d_model").load_state(state_path(resumed))
    assert state["position"]["epoch"] == 2


def test_the_cosine_schedule_runs_from_lr_to_its_final_scale_and_resumes_exactly():
    # Two groups as with a slower trunk: each decays from its own base rate; the state survives a JSON round trip.
    weights = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))]
    cfg = section_config(PretrainConfig, {**load_preset("cpu").section("pretrain"), "lr_schedule": "cosine",
                                          "lr_final_scale": 0.05, "lr": 1e-3}, "pretrain")

    def run(epochs_done, scheduler_state=None):
        optimizer = torch.optim.Adam([{"params": [weights[0]], "lr": 1e-3}, {"params": [weights[1]], "lr": 1e-4}])
        scheduler = epoch_scheduler(optimizer, cfg, 5)
        if scheduler_state is not None:
            optimizer.param_groups[0]["lr"], optimizer.param_groups[1]["lr"] = scheduler_state["_last_lr"]
            scheduler.load_state_dict(scheduler_state)
        rates = []
        for _ in range(epochs_done):
            rates += [group["lr"] for group in optimizer.param_groups]
            optimizer.step()  # no gradients: nothing moves, but the order is the loop's
            scheduler.step()
        return rates, json.loads(json.dumps(scheduler.state_dict()))

    rates, _ = run(5)
    rest, trunk = rates[0::2], rates[1::2]
    assert (rest[0], trunk[0], rest[-1], trunk[-1]) == pytest.approx((1e-3, 1e-4, 5e-5, 5e-6))
    assert all(a > b for a, b in zip(rest, rest[1:]))
    assert [a / b for a, b in zip(rest, trunk)] == pytest.approx([10] * 5)
    assert rest[2] == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5))  # half way: the mean of the two ends
    first, state = run(2)
    second, _ = run(3, state)
    assert first + second == pytest.approx(rates)
    assert cosine_factor(0, 1, 0.05) == 1.0  # a one-epoch run trains at lr


@pytest.mark.slow
def test_a_cosine_run_logs_its_decaying_rate_and_resumes_to_the_same_weights(views_dir, small_preset,
                                                                            override_preset, tmp_path):
    preset = override_preset(small_preset, tmp_path, pretrain={"lr_schedule": "cosine", "lr_final_scale": 0.1})
    opts = dict(preset=str(preset), epochs=3, seed=2)
    straight = pretrain([str(views_dir)], RunOptions(out=tmp_path / "straight", **opts))
    pretrain([str(views_dir)], RunOptions(out=tmp_path / "split", stop_after=6, **opts))  # mid-epoch 1
    resumed = pretrain([str(views_dir)], RunOptions(out=tmp_path / "split", resume=True, **opts))
    a, _ = load_network(straight)
    b, _ = load_network(resumed)
    assert weights_fingerprint(a) == weights_fingerprint(b)
    lines = {run: [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
             for run in ("straight", "split")}
    assert [x["lr"] for x in lines["split"]] == [x["lr"] for x in lines["straight"]]
    per_epoch = [sorted({x["lr"] for x in lines["straight"] if x["epoch"] == e}) for e in range(3)]
    assert per_epoch == [[pytest.approx(1e-3)], [pytest.approx(1e-3 * 0.55)], [pytest.approx(1e-4)]]
    with pytest.raises(Ss3dError, match="lr_schedule must be one of plateau, cosine"):
        pretrain([str(views_dir)], RunOptions(out=tmp_path / "bad", preset=str(override_preset(
            small_preset, tmp_path, pretrain={"lr_schedule": "linear"}))))


def test_repeated_nan_losses_stop_the_run(views_dir, small_preset, tmp_path, monkeypatch):
    # Every loss is NaN (a NaN --init checkpoint is now refused up front, so the loss itself is made NaN): every
    # step is skipped and counted.
    stage = importlib.import_module("ss3d_train.pretrain")  # the package's ``pretrain`` attribute is the function
    real = stage._pretrain_loss

    def nan_loss(*args, **kwargs):
        loss, parts = real(*args, **kwargs)
        return loss * float("nan"), parts

    monkeypatch.setattr(stage, "_pretrain_loss", nan_loss)
    with pytest.raises(Ss3dError, match="NaN/Inf for 4 steps in a row"):
        pretrain([str(views_dir)], RunOptions(out=tmp_path / "run", preset=str(small_preset), max_nonfinite=3))


def test_bad_input_is_refused_clearly(collection_dirs, views_dir, small_preset, override_preset, tmp_path):
    with pytest.raises(Ss3dError, match="reads 'views' shards"):
        pretrain([str(collection_dirs["box"])], RunOptions(out=tmp_path / "run", preset=str(small_preset)))
    with pytest.raises(Ss3dError, match="no such shard"):
        pretrain([str(tmp_path / "missing")], RunOptions(out=tmp_path / "run2", preset=str(small_preset)))
    with pytest.raises(Ss3dError, match="does not exist"):
        pretrain([str(collection_dirs["box"])], RunOptions(out=tmp_path / "run3", preset=str(small_preset),
                                                           resume=True))
    not_a_shard = tmp_path / "notes.txt"
    not_a_shard.write_text("not a tar archive\n")
    with pytest.raises(Ss3dError, match="not a tar shard"):
        pretrain([str(not_a_shard)], RunOptions(out=tmp_path / "run4", preset=str(small_preset)))
    # 8 instances cannot fill one batch of 64: an error, not a checkpoint that was never trained
    huge_batch = override_preset(small_preset, tmp_path, pretrain={"batch_size": 64})
    with pytest.raises(Ss3dError, match="no full batch of 64"):
        pretrain([str(views_dir)], RunOptions(out=tmp_path / "run5", preset=str(huge_batch)))
    assert not list((tmp_path / "run5").glob("*.safetensors"))


def test_occupancy_loss_golden_values():
    sigma = torch.tensor([[3.0, 2.0, 0.0]])
    labels = torch.tensor([[1.0, 1.0, 0.0]])
    # logits sigma - 2: [1, 0, -2] -> losses log(1 + e^-1), log 2, log(1 + e^-2)
    expected = (math.log1p(math.exp(-1)) + math.log(2) + math.log1p(math.exp(-2))) / 3
    assert occupancy_loss(sigma, labels, 2.0).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
@pytest.mark.float_sensitive
def test_occupancy_supervision_teaches_the_solid(occupancy_views_dir, views_dir, small_preset, override_preset,
                                                tmp_path):
    # density_scale 10 (as the cpu preset): densities reach the threshold within a few dozen steps. Weight 100: the
    # render loss's gradients otherwise dominate Adam's normalised steps and when the occupancy loss leaves its prior
    # (0.58) is a trajectory: at weight 10 it fell after 60-80 steps with AVX2 kernels and not in 160 steps with
    # ATEN_CPU_CAPABILITY=default; at weight 100 it falls from about step 30 there (accuracy 0.91 at 160 steps).
    # One checkpoint at the end: writing the small preset's every-3-steps checkpoints took most of this test's time.
    preset = override_preset(small_preset, tmp_path, pretrain={"occupancy_weight": 100.0, "occupancy_points": 512,
                                                               "checkpoint_every": 1000},
                             extract={"density_threshold": 1.0}, model={"density_scale": 10.0})
    first = pretrain([str(occupancy_views_dir)], RunOptions(out=tmp_path / "a", preset=str(preset), epochs=1,
                                                            name="start"))
    final = pretrain([str(occupancy_views_dir)], RunOptions(out=tmp_path / "b", preset=str(preset), epochs=40),
                     init=first)
    lines = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert {"render_loss", "occupancy_loss"} <= set(lines[0])

    def accuracy(checkpoint) -> float:
        """Share of labelled points (all 8 instances, 4096 each) on the right side of the extraction threshold."""
        network, _ = load_network(checkpoint)
        network.eval()
        transform = ViewsTransform(network.config.input_size, 24, 2, 0.5, occupancy_points=4096)
        items = [transform(s, np.random.default_rng(11)) for s in iter_samples(resolve_shards(
            str(occupancy_views_dir)))]
        batch = torch.utils.data.default_collate(items)
        with torch.no_grad():
            sigma, _ = network.decode(network.encode(batch["input"]), batch["occupancy_points"])
        return float(((sigma > 1.0).float() == batch["occupancy_labels"]).float().mean())

    # Before: all points outside (the 73% of outside labels).
    before, after = accuracy(first), accuracy(final)
    assert after > 0.8 and after > before + 0.07, (before, after)
    # Shards without labels are refused up front by a preset that needs them.
    with pytest.raises(Ss3dError, match="carries no occupancy labels"):
        pretrain([str(views_dir)], RunOptions(out=tmp_path / "c", preset=str(preset), epochs=1))


def test_colour_jitter_changes_only_the_input_foreground(views_dir):
    sample = next(iter(iter_samples(resolve_shards(str(views_dir)))))
    plain = ViewsTransform(32, 24, 2, 0.5)(sample, np.random.default_rng(3))
    jittered = ViewsTransform(32, 24, 2, 0.5, colour_jitter=0.3)(sample, np.random.default_rng(3))
    foreground = plain["input"].sum(0) > 0
    assert foreground.any() and not foreground.all()
    assert (jittered["input"][:, ~foreground] == 0).all()                       # the background stays black
    change = (jittered["input"] - plain["input"])[:, foreground].abs().mean()
    assert change > 0.01                                                         # the object's colours moved
    for key in ("rgb", "mask", "cam2world", "intrinsics"):                      # same views, true colours
        assert torch.equal(plain[key], jittered[key]), key
    again = ViewsTransform(32, 24, 2, 0.5, colour_jitter=0.3)(sample, np.random.default_rng(3))
    assert torch.equal(again["input"], jittered["input"])                       # drawn from the sample's RNG


def test_yaw_frame_turns_the_scene_so_the_input_camera_sits_at_azimuth_zero(occupancy_views_dir):
    sample = next(iter(iter_samples(resolve_shards(str(occupancy_views_dir)))))
    canonical = ViewsTransform(32, 24, 2, 0.5, occupancy_points=64)(sample, np.random.default_rng(5))
    turned = ViewsTransform(32, 24, 2, 0.5, occupancy_points=64, yaw_frame=True)(sample, np.random.default_rng(5))
    position = turned["input_cam2world"][:3, 3]
    assert abs(position[0]) < 1e-5 and position[1] < 0                        # on -Y, as look_at's azimuth 0
    assert abs(canonical["input_cam2world"][0, 3]) > 1e-3                      # (it was not there before)
    # One rotation about Z for the whole scene: cameras relative to the input view, heights, labels unchanged.
    turn = turned["input_cam2world"] @ torch.linalg.inv(canonical["input_cam2world"])
    assert torch.allclose(turn[2], torch.tensor([0.0, 0.0, 1.0, 0.0]), atol=1e-5)
    assert torch.allclose(turned["cam2world"], turn @ canonical["cam2world"], atol=1e-5)
    assert torch.allclose(turned["occupancy_points"], canonical["occupancy_points"] @ turn[:3, :3].T, atol=1e-5)
    assert torch.equal(turned["occupancy_labels"], canonical["occupancy_labels"])
    for key in ("input", "rgb", "mask", "intrinsics"):
        assert torch.equal(turned[key], canonical[key]), key


def test_view_frame_puts_the_input_camera_level_on_minus_y_and_keeps_every_image(occupancy_views_dir):
    sample = next(iter(iter_samples(resolve_shards(str(occupancy_views_dir)))))
    canonical = ViewsTransform(32, 24, 2, 0.5, occupancy_points=256)(sample, np.random.default_rng(5))
    framed = ViewsTransform(32, 24, 2, 0.5, occupancy_points=256, view_frame=True)(sample,
                                                                                  np.random.default_rng(5))
    # The input camera becomes the view frame's camera, whatever its pose was.
    view_camera = look_at(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(VIEW_DISTANCE))
    torch.testing.assert_close(framed["input_cam2world"], view_camera, atol=1e-5, rtol=0)
    assert not torch.allclose(canonical["input_cam2world"], view_camera, atol=1e-2)
    # A similarity of the whole scene: every other view sees each point where it saw it before, and labelled points
    # move with the scene (so every image and label is unchanged).
    scale = VIEW_DISTANCE / float(canonical["input_cam2world"][:3, 3].norm())
    turn = framed["input_cam2world"][:3, :3] @ canonical["input_cam2world"][:3, :3].T
    torch.testing.assert_close(framed["occupancy_points"], scale * canonical["occupancy_points"] @ turn.T,
                               atol=1e-5, rtol=0)
    for key in ("input", "rgb", "mask", "intrinsics", "occupancy_labels", "input_crop"):
        assert torch.equal(framed[key], canonical[key]), key

    def pixels(points, intrinsics, cam2world):
        camera = (points - cam2world[:3, 3]) @ cam2world[:3, :3]
        image = camera @ intrinsics.T
        return image[:, :2] / image[:, 2:]

    for k in range(2):
        torch.testing.assert_close(pixels(framed["occupancy_points"], framed["intrinsics"][k], framed["cam2world"][k]),
                                   pixels(canonical["occupancy_points"], canonical["intrinsics"][k],
                                          canonical["cam2world"][k]), atol=1e-3, rtol=0)
    # The input view's projection carries the solid onto the input crop's mask.
    projection = crop_projection(framed["input_intrinsics"][None], framed["input_cam2world"][None],
                                 framed["input_crop"][None], 32)
    # These renders' focal is 90 px at 48 px, the photo assumption's 1.875 per side: inference's projection is exact.
    torch.testing.assert_close(photo_projection(framed["input_crop"][None], 48, 48, 32), projection, atol=1e-4,
                               rtol=0)
    inside = framed["occupancy_points"][framed["occupancy_labels"] > 0.5]
    image = inside @ projection[0, :, :3].T + projection[0, :, 3]
    column_row = ((image[:, :2] / image[:, 2:] + 1) * 16).long().clamp(0, 31)
    foreground = framed["input"].sum(0) > 0
    assert foreground[column_row[:, 1], column_row[:, 0]].float().mean() > 0.95


def test_crop_jitter_shrinks_the_input_and_its_projection_follows(occupancy_views_dir):
    """A drawn crop margin makes the object smaller in the input, and the recorded crop still carries the solid
    onto the input's foreground (a pixel-aligned model reads the right pixels)."""
    sample = next(iter(iter_samples(resolve_shards(str(occupancy_views_dir)))))
    plain = ViewsTransform(32, 24, 2, 0.5, occupancy_points=256, view_frame=True)(sample, np.random.default_rng(5))
    jittered = [ViewsTransform(32, 24, 2, 0.5, occupancy_points=256, view_frame=True, crop_jitter=0.4)(
        sample, np.random.default_rng(seed)) for seed in range(6)]

    def extent(image):  # the object's longer side in the input, in pixels
        rows, cols = (image.sum(0) > 0.05).any(1).nonzero(), (image.sum(0) > 0.05).any(0).nonzero()
        return max(int(rows.max() - rows.min()), int(cols.max() - cols.min())) + 1

    sides = [extent(j["input"]) for j in jittered]
    assert extent(plain["input"]) >= 31 and min(sides) < 0.8 * 32 and max(sides) <= 32
    assert len(set(sides)) > 2                                        # the margin is drawn, not fixed
    for framed in jittered:
        projection = crop_projection(framed["input_intrinsics"][None], framed["input_cam2world"][None],
                                     framed["input_crop"][None], 32)
        inside = framed["occupancy_points"][framed["occupancy_labels"] > 0.5]
        image = inside @ projection[0, :, :3].T + projection[0, :, 3]
        column_row = ((image[:, :2] / image[:, 2:] + 1) * 16).long().clamp(0, 31)
        foreground = framed["input"].sum(0) > 0
        assert foreground[column_row[:, 1], column_row[:, 0]].float().mean() > 0.9


@pytest.mark.slow
def test_a_pixel_aligned_model_pretrains_and_reconstructs_in_its_view_frame(views_dir, small_preset, tmp_path,
                                                                            override_preset):
    preset = override_preset(small_preset, tmp_path, model={"pixel_features": 4})
    final = pretrain([str(views_dir)], RunOptions(out=tmp_path / "run", preset=str(preset), epochs=2), init=None)
    network, meta = load_network(final)
    assert network.config.pixel_features == 4 and meta.stage == "pretrain"
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses)
    sample = next(iter(iter_samples(resolve_shards(str(views_dir)))))
    code = encode_input(network.eval(), sample.images[0], sample.masks[0])
    assert code.shape == (1, network.config.code_dim)
    with pytest.raises(Ss3dError, match="pixel_features > 0.*input_yaw_frame|input_yaw_frame.*pixel"):
        (tmp_path / "yaw").mkdir()
        yaw = override_preset(small_preset, tmp_path / "yaw", model={"pixel_features": 4},
                              pretrain={"input_yaw_frame": True})
        pretrain([str(views_dir)], RunOptions(out=tmp_path / "yaw", preset=str(yaw), epochs=1), init=None)
