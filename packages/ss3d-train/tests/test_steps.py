"""One step of each stage on one real batch, and the shared stage loop, without running a stage: each step is a plain
function of a small state and a batch (what the benchmark times, too)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ss3d_data import Ss3dError, iter_samples, load_preset, resolve_shards, section_config
from ss3d_data.config import data_config, render_config
from ss3d_model import ModelConfig, MultiHypothesisCameras, ReconstructionNetwork, VolumeConfig
from ss3d_model.network import load_imagenet_encoder
from ss3d_model.reconstruct import init_checkpoint
from ss3d_train import selftrain
from ss3d_train.data import ImageTransform, ShardDataset, ViewsTransform, make_loader
from ss3d_train.distill import DistillConfig, DistillState, ExpertCameras, distill_step
from ss3d_train.distributed import World
from ss3d_train.loop import new_position, run_stage
from ss3d_train.objectives import FieldObjective, RenderObjective, load_teacher, parameter_groups
from ss3d_train.pretrain import PretrainConfig, PretrainState, pretrain_step
from ss3d_train.run import NonFiniteGuard, RunOptions, StageRun, weights_fingerprint
from ss3d_train.selftrain import SelftrainConfig, SelftrainState, selftrain_step
from ss3d_train.sparse_adam import SparseRowAdam

CPU = World(0, 1, 0, torch.device("cpu"))


def network_of(preset) -> ReconstructionNetwork:
    torch.manual_seed(0)
    return ReconstructionNetwork(ModelConfig.from_preset(preset)).train()


def batch_of(folder: Path, transform, size: int = 2) -> dict:
    items = [transform(s, np.random.default_rng(i)) for i, s in enumerate(iter_samples(resolve_shards(str(folder))))]
    return torch.utils.data.default_collate(items[:size])


def poisoned(batch: dict) -> dict:
    """The same batch with NaN input images: every loss of the step is NaN."""
    return {**batch, "input": torch.full_like(batch["input"], float("nan"))}


def pretrain_state(preset) -> PretrainState:
    network = network_of(preset)
    cfg = section_config(PretrainConfig, preset.section("pretrain"), "pretrain")
    volume = VolumeConfig.from_preset(preset)
    return PretrainState(cfg, volume, RenderObjective(network, volume),
                         torch.optim.Adam(network.parameters(), lr=cfg.lr), torch.Generator().manual_seed(0), CPU,
                         NonFiniteGuard(3), 2.0)


def views_transform(preset, supervision_views: int) -> ViewsTransform:
    data = data_config(preset)
    return ViewsTransform(ModelConfig.from_preset(preset).input_size, data.supervision_size, supervision_views,
                          data.mask_threshold)


def test_pretrain_step_updates_the_weights_and_skips_a_nan_batch(views_dir, small_preset):
    preset = load_preset(str(small_preset))
    state = pretrain_state(preset)
    network = state.objective.network
    batch = batch_of(views_dir, views_transform(preset, state.cfg.supervision_views))
    before = weights_fingerprint(network)
    metrics = pretrain_step(state, batch)
    assert metrics is not None and math.isfinite(metrics["loss"]) and metrics["lr"] == state.cfg.lr
    assert weights_fingerprint(network) != before
    # the epoch's running sum is the step's; the loop, not the step, counts steps
    assert state.position["loss_sum"] == metrics["loss"] and state.position["loss_count"] == 1
    assert state.position["step"] == 0
    after = weights_fingerprint(network)
    assert pretrain_step(state, poisoned(batch)) is None
    assert weights_fingerprint(network) == after and state.guard.skipped == 1 and state.position["loss_count"] == 1


def test_the_trunk_learns_at_its_own_rate_and_importance_samples_train(views_dir, small_preset):
    """trunk_lr_scale 0.1: Adam's first step moves every weight by about its group's rate, so the trunk's largest
    change is a tenth of the rest's; the step renders with hierarchical sampling (importance_samples > 0)."""
    preset = load_preset(str(small_preset))
    state = pretrain_state(preset)
    network = state.objective.network
    volume = dataclasses.replace(state.volume, importance_samples=state.volume.samples_per_ray // 2)
    state.volume, state.objective = volume, RenderObjective(network, volume)
    state.optimizer = torch.optim.Adam(parameter_groups(network, 1e-3, 0.1))
    assert [group["lr"] for group in state.optimizer.param_groups] == [1e-3, pytest.approx(1e-4)]
    grouped = [id(p) for group in state.optimizer.param_groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in network.parameters())
    before = {name: p.detach().clone() for name, p in network.named_parameters()}
    batch = batch_of(views_dir, views_transform(preset, state.cfg.supervision_views))
    metrics = pretrain_step(state, batch)
    assert metrics is not None and math.isfinite(metrics["loss"]) and metrics["lr"] == 1e-3
    moved = {name: float((p.detach() - before[name]).abs().max()) for name, p in network.named_parameters()}
    trunk = max(v for name, v in moved.items() if name.startswith("encoder.trunk."))
    rest = max(v for name, v in moved.items() if not name.startswith("encoder.trunk."))
    assert trunk <= 1.2e-4 and rest >= 0.8e-3
    assert parameter_groups(network, 1e-3)[0]["params"] == list(network.parameters())


def test_a_pretrain_step_of_a_pixel_aligned_imagenet_lite0(views_dir, small_preset):
    """The `cpu` preset's trunk, pixel-aligned: the wheel's ImageNet Lite0 with frozen batch norms and a tenth of the
    rate. One step on real views moves the trunk by about its rate, the rest by theirs, and leaves the batch norms'
    ImageNet statistics as they were loaded."""
    preset = load_preset(str(small_preset))
    config = dataclasses.replace(ModelConfig.from_preset(preset), encoder_arch="efficientnet_lite0",
                                 frozen_batchnorm=True, pixel_features=8, pixel_layers=2)
    torch.manual_seed(0)
    network = ReconstructionNetwork(config)
    assert load_imagenet_encoder(network)
    network.train()
    cfg = section_config(PretrainConfig, preset.section("pretrain"), "pretrain")
    volume = VolumeConfig.from_preset(preset)
    state = PretrainState(cfg, volume, RenderObjective(network, volume),
                          torch.optim.Adam(parameter_groups(network, 1e-3, 0.1)), torch.Generator().manual_seed(0),
                          CPU, NonFiniteGuard(3), 2.0)
    data = data_config(preset)
    transform = ViewsTransform(config.input_size, data.supervision_size, cfg.supervision_views, data.mask_threshold,
                               view_frame=True)
    batch = batch_of(views_dir, transform)
    statistics = network.encoder.trunk.bn1.running_var.clone()
    before = {name: p.detach().clone() for name, p in network.named_parameters()}
    metrics = pretrain_step(state, batch)
    assert metrics is not None and math.isfinite(metrics["loss"])
    moved = {name: float((p.detach() - before[name]).abs().max()) for name, p in network.named_parameters()}
    trunk = max(v for name, v in moved.items() if name.startswith("encoder.trunk."))
    rest = max(v for name, v in moved.items() if not name.startswith("encoder.trunk."))
    assert 0.5e-4 <= trunk <= 1.2e-4 and rest >= 0.8e-3
    assert moved["encoder.pixel.weight"] >= 0.8e-3 and moved["decoder.pixel.weight"] >= 0.8e-3
    assert torch.equal(network.encoder.trunk.bn1.running_var, statistics)


def test_selftrain_step_moves_cameras_always_and_the_network_only_in_the_joint_phase(collection_dirs,
                                                                                      small_preset):
    preset = load_preset(str(small_preset))
    cfg = section_config(SelftrainConfig, preset.section("selftrain"), "selftrain")
    volume = VolumeConfig.from_preset(preset)
    data = data_config(preset)
    network = network_of(preset)
    sup = data.supervision_size
    keys = [s.info.key for s in iter_samples(resolve_shards(str(collection_dirs["box"])))]
    transform = ImageTransform(network.config.input_size, sup, data.mask_threshold,
                               {k: i for i, k in enumerate(keys)}, frozenset(["box"]))
    batch = batch_of(collection_dirs["box"], transform)
    cameras = MultiHypothesisCameras(len(keys), cfg.hypotheses, tuple(cfg.camera_distance_range),
                                     cfg.camera_focal_px, sup, generator=torch.Generator().manual_seed(0))
    renderer = RenderObjective(network, volume)
    state = SelftrainState(cfg, volume, network, renderer, renderer, cameras,
                           SparseRowAdam(cameras.raw.data, cfg.lr_camera),
                           SparseRowAdam(cameras.logits.data, cfg.lr_camera),
                           torch.optim.Adam(network.parameters(), lr=cfg.lr_network),
                           torch.Generator().manual_seed(0), CPU, NonFiniteGuard(3))
    rows = batch["index"]
    others = torch.ones(len(keys), dtype=torch.bool)
    others[rows] = False

    def snapshot():
        return weights_fingerprint(network), cameras.raw.detach().clone(), cameras.logits.detach().clone()

    weights, raw, logits = snapshot()
    metrics = selftrain_step(state, batch)  # epoch 0: the camera phase
    assert metrics is not None and metrics["joint"] == 0 and 0 < metrics["top_probability"] <= 1
    assert "grad_norm" not in metrics                                    # no network gradient to report
    assert weights_fingerprint(network) == weights                       # network frozen
    assert not torch.equal(cameras.raw[rows], raw[rows]) and not torch.equal(cameras.logits[rows], logits[rows])
    assert torch.equal(cameras.raw[others], raw[others])                 # only the batch's images' rows move

    state.position["epoch"] = cfg.camera_epochs                          # the joint phase
    metrics = selftrain_step(state, batch)
    assert metrics is not None and metrics["joint"] == 1 and math.isfinite(metrics["loss"])
    assert math.isfinite(metrics["grad_norm"]) and metrics["grad_norm"] > 0
    assert weights_fingerprint(network) != weights

    weights, raw, logits = snapshot()
    assert selftrain_step(state, poisoned(batch)) is None
    assert state.guard.skipped == 1 and weights_fingerprint(network) == weights
    assert torch.equal(cameras.logits, logits)                           # no probability update either


def box_batch(collection_dirs, preset) -> dict:
    """The box collection's first images as distillation's collection batch."""
    data = data_config(preset)
    transform = ImageTransform(ModelConfig.from_preset(preset).input_size, data.supervision_size,
                               data.mask_threshold, categories=frozenset(["box"]))
    return batch_of(collection_dirs["box"], transform)


def distill_state(preset, student, teachers: dict, synthetic_batches: list, expert_cameras=None) -> DistillState:
    cfg = section_config(DistillConfig, preset.section("distill"), "distill")
    render = render_config(preset)
    return DistillState(cfg, VolumeConfig.from_preset(preset), teachers, FieldObjective(student),
                        torch.optim.Adam(student.parameters(), lr=cfg.lr), torch.Generator().manual_seed(0), CPU,
                        NonFiniteGuard(3), render.focal_px, render.image_size, list(render.distance_range),
                        iter(synthetic_batches), expert_cameras or {})


@pytest.mark.float_sensitive
def test_distill_step_moves_the_student_towards_its_teacher(collection_dirs, views_dir, small_preset):
    preset = load_preset(str(small_preset))
    student = network_of(preset)
    torch.manual_seed(1)
    teacher = ReconstructionNetwork(student.config).eval()  # another initialisation: a real gap to close
    batch = box_batch(collection_dirs, preset)
    synthetic = batch_of(views_dir, views_transform(preset, 0))
    state = distill_state(preset, student, {"box": teacher, "__synthetic__": teacher}, [synthetic] * 5)
    steps = [distill_step(state, batch) for _ in range(4)]
    losses = [m["loss"] for m in steps]
    assert all(math.isfinite(m["grad_norm"]) and m["grad_norm"] > 0 for m in steps)
    # measured (AVX-512 and AVX2 alike): 0.116, then 0.055-0.056
    assert all(math.isfinite(x) for x in losses) and np.mean(losses[1:]) < 0.7 * losses[0]
    before = weights_fingerprint(student)
    assert distill_step(state, poisoned(batch)) is None
    assert weights_fingerprint(student) == before and state.guard.skipped == 1


@pytest.mark.float_sensitive
def test_a_pixel_aligned_distill_step_moves_the_student_towards_its_teachers(tmp_path, collection_dirs, views_dir,
                                                                            small_preset, override_preset):
    """The same on a pixel-aligned student: collection points carried to a real self-trained expert's frame, synthetic
    points in the views' view frame for a pixel-aligned synthetic teacher."""
    init_checkpoint(str(small_preset), tmp_path / "init.safetensors")
    expert_path = selftrain([str(collection_dirs["box"])], tmp_path / "init.safetensors",
                            RunOptions(out=tmp_path / "expert", preset=str(small_preset), stop_after=2))
    expert = load_teacher(expert_path, torch.device("cpu"))
    preset = load_preset(str(override_preset(small_preset, tmp_path, model={"pixel_features": 4})))
    student = network_of(preset)
    torch.manual_seed(1)
    synthetic = ReconstructionNetwork(student.config).eval()  # another initialisation: a real gap to close
    batch = box_batch(collection_dirs, preset)
    data = data_config(preset)
    views = ViewsTransform(student.config.input_size, data.supervision_size, 0, data.mask_threshold,
                           view_frame=True)
    state = distill_state(preset, student, {"box": expert, "__synthetic__": synthetic},
                          [batch_of(views_dir, views)] * 10, {"box": ExpertCameras.load(expert_path)})
    assert state.pixel_aligned
    losses = [distill_step(state, batch)["loss"] for _ in range(10)]
    # measured (AVX-512 and AVX2 alike): 0.103, then 0.088 ... 0.037-0.042 over the last three
    assert all(math.isfinite(x) for x in losses) and np.mean(losses[-3:]) < 0.6 * losses[0]


def test_the_stage_loop_counts_logs_checkpoints_and_stops(views_dir, small_preset, tmp_path):
    """``run_stage`` with a step that only counts: epochs, resume skipping, skipped steps, end-of-epoch hook,
    periodic checkpoints and --stop-after, as the three stages rely on."""
    preset = load_preset(str(small_preset))
    network = network_of(preset)
    dataset = ShardDataset([str(p) for p in resolve_shards(str(views_dir))], views_transform(preset, 1), 0)
    loader = make_loader(dataset, 2, 0)  # 8 instances: 4 batches an epoch

    class Counting:
        def __init__(self) -> None:
            self.position, self.seen, self.ends, self.checkpoints = new_position(), [], [], []

    def step(state: Counting, batch: dict) -> dict | None:
        state.seen.append((state.position["epoch"], state.position["batch"]))
        if state.position["epoch"] == 1 and state.position["batch"] == 2:
            return None  # as a non-finite step would: not counted
        return {"loss": float(state.position["batch"])}

    def run_once(state: Counting, out: Path, **options) -> Path:
        run = StageRun("pretrain", preset, RunOptions(out=out, preset=str(small_preset), **options), CPU)
        return run_stage(run, network, state, step, loader, 2, lambda final: state.checkpoints.append(
            (state.position["step"], final)), 3, label="test", end_epoch=lambda: state.ends.append(
            state.position["epoch"]))

    whole = Counting()
    assert run_once(whole, tmp_path / "whole").name == "pretrain.safetensors"
    assert whole.seen == [(e, b) for e in range(2) for b in range(1, 5)]
    assert whole.position == {"step": 7, "epoch": 2, "batch": 0} and whole.ends == [0, 1]
    assert whole.checkpoints == [(3, False), (6, False), (7, True)]
    logged = [line for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines() if line]
    assert len(logged) == 7

    stopped = Counting()
    assert run_once(stopped, tmp_path / "stopped", stop_after=5).name == "last.safetensors"
    assert stopped.position == {"step": 5, "epoch": 1, "batch": 1} and stopped.checkpoints == [(3, False),
                                                                                              (5, False)]
    # a resumed position skips the batches already done
    resumed = Counting()
    resumed.position = dict(stopped.position)
    run_once(resumed, tmp_path / "resumed")
    assert resumed.seen == [(1, 2), (1, 3), (1, 4)] and resumed.position["step"] == 7 and resumed.ends == [1]
    assert resumed.checkpoints == [(6, False), (7, True)]


@pytest.mark.parametrize("bad", [{"camera_steps_per_step": 0}, {"hypotheses": 0}, {"batch_size": 0},
                                 {"rays_per_hypothesis": -1}, {"camera_distance_range": [3.0, 2.0]},
                                 {"camera_focal_px": 0.0}])
def test_selftrain_preset_values_are_checked_in_one_line(small_preset, override_preset, tmp_path, bad):
    preset = load_preset(str(override_preset(small_preset, tmp_path, selftrain=bad)))
    with pytest.raises(Ss3dError, match=rf"\[selftrain\] {next(iter(bad))}"):
        section_config(SelftrainConfig, preset.section("selftrain"), "selftrain")


def test_a_bad_preset_value_is_one_line_naming_its_section(small_preset, override_preset, tmp_path):
    from typer.testing import CliRunner

    from ss3d_train.cli import app

    preset = override_preset(small_preset, tmp_path, selftrain={"camera_steps_per_step": 0})
    result = CliRunner().invoke(app, ["selftrain", str(tmp_path / "none"), "--init", str(tmp_path / "none.st"),
                                      "--out", str(tmp_path / "run"), "--preset", str(preset)])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "[selftrain] camera_steps_per_step must be > 0 (got 0)" in said, result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_every_named_preset_gives_valid_stage_configs():
    from ss3d_data import available_presets

    for name in available_presets():
        preset = load_preset(name)
        for config_type, section in ((PretrainConfig, "pretrain"), (SelftrainConfig, "selftrain"),
                                     (DistillConfig, "distill")):
            section_config(config_type, preset.section(section), section)  # raises naming the bad value
        data_config(preset), render_config(preset), ModelConfig.from_preset(preset)


def _update_norm(state: PretrainState, batch: dict) -> tuple[float, float]:
    """(L2 norm of the change one plain-SGD (lr 1) pretraining step makes, i.e. the gradient norm the step applied;
    the step's logged ``grad_norm``)."""
    network = state.objective.network
    before = [p.detach().clone() for p in network.parameters()]
    metrics = pretrain_step(state, batch)
    assert metrics is not None
    applied = float(torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(network.parameters(), before))))
    return applied, metrics["grad_norm"]


@pytest.mark.float_sensitive
def test_grad_clip_norm_bounds_the_step_and_zero_leaves_it_alone(views_dir, small_preset):
    preset = load_preset(str(small_preset))
    batch = batch_of(views_dir, views_transform(preset, 2))
    applied, logged = {}, {}
    for clip in (0.0, 1e-4):
        torch.manual_seed(0)
        state = pretrain_state(preset)
        state = dataclasses.replace(state, cfg=dataclasses.replace(state.cfg, grad_clip_norm=clip),
                                    optimizer=torch.optim.SGD(state.objective.network.parameters(), lr=1.0))
        applied[clip], logged[clip] = _update_norm(state, batch)
    assert applied[0.0] > 1e-3  # the unclipped gradient is far larger than the clip ...
    assert applied[1e-4] == pytest.approx(1e-4, rel=1e-3)  # ... so the clipped step has exactly the clip's norm
    # The logged grad_norm is the gradient's norm before clipping: the unclipped step's size, in both runs.
    assert logged[0.0] == pytest.approx(applied[0.0], rel=1e-4)
    assert logged[1e-4] == pytest.approx(logged[0.0], rel=1e-4)


@pytest.mark.parametrize("section,config", [("pretrain", PretrainConfig), ("selftrain", SelftrainConfig),
                                            ("distill", DistillConfig)])
def test_a_negative_grad_clip_norm_is_refused_in_every_stage(small_preset, override_preset, tmp_path, section,
                                                             config):
    preset = load_preset(str(override_preset(small_preset, tmp_path, **{section: {"grad_clip_norm": -1.0}})))
    with pytest.raises(Ss3dError, match=rf"\[{section}\] grad_clip_norm"):
        section_config(config, preset.section(section), section)
