"""Stage 1, pretraining on synthetic multi-view renders (paper Sec. 3.1).

Per instance: one view is the input; ``supervision_views`` other views supervise it. On each, ``rays_per_view``
pixels are sampled and their rays volume-rendered with ``samples_per_ray`` uniform samples inside the object's
bounds; the loss is ``mask_weight * MSE(mask) + colour_weight * MSE(colour)``. Adam; ReduceLROnPlateau on the
epoch's mean loss (averaged over ranks so every rank takes the same decision).

Beyond the paper (``lr_schedule = "cosine"``; ``"plateau"`` in the ``paper`` preset): the rate follows a half cosine
from ``lr`` down to ``lr * lr_final_scale`` over the run's epochs, so it is set by the step budget rather than by
the loss's noise (on a 2-core budget the plateau rule had halved the rate to 1e-8 long before the end of a long run).

Beyond the paper (``occupancy_weight`` > 0; 0 in the ``paper`` preset): the synthetic meshes are known, so
``occupancy_points`` points per instance, labelled inside/outside from the mesh when the shards were written, add
``occupancy_weight * BCE`` (:func:`~ss3d_train.objectives.occupancy_loss`) with the extraction threshold as the
decision boundary. It teaches the 3D shape directly, at a fraction of the cost of rendered rays.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ss3d_data.config import data_config
from ss3d_data.errors import Ss3dError
from ss3d_data.presets import check_values, load_preset, section_config
from ss3d_model import VolumeConfig
from ss3d_model.cameras import crop_projection
from ss3d_model.config import ExtractConfig
from ss3d_train.data import ShardDataset, ViewsTransform, data_manifest_hash, index_categories, make_loader, shards_from
from ss3d_train.distributed import World, all_mean, setup_world, teardown_world, wrap_ddp
from ss3d_train.loop import KeptBuffers, Metrics, guarded_update, images_per_second, new_position, run_stage
from ss3d_train.objectives import (
    RenderObjective,
    ShapeObjective,
    build_student,
    depth_jitter,
    occupancy_loss,
    parameter_groups,
    render_loss,
    supervised_rays,
)
from ss3d_train.run import NonFiniteGuard, RunOptions, StageRun

LR_SCHEDULES = ("plateau", "cosine")


@dataclass(frozen=True)
class PretrainConfig:
    batch_size: int            # instances per process and step
    supervision_views: int     # K other views supervising each input view
    rays_per_view: int         # sampled pixels per supervising view
    epochs: int
    lr: float                  # Adam learning rate
    plateau_factor: float      # ReduceLROnPlateau factor
    plateau_threshold: float   # ReduceLROnPlateau relative threshold
    plateau_patience: int      # epochs without improvement before the lr drops
    mask_weight: float
    colour_weight: float
    checkpoint_every: int      # steps between periodic checkpoints
    occupancy_weight: float = 0.0        # 3D supervision (beyond the paper): weight of the occupancy BCE; 0 = off
    occupancy_points: int = 0            # labelled points per instance and step
    occupancy_near_fraction: float = 0.5  # share of them drawn around the surface (the rest uniform in the box)
    input_colour_jitter: float = 0.0     # input-view colour augmentation (beyond the paper; ViewsTransform); 0 = off
    input_yaw_frame: bool = False        # predict in the input camera's yaw frame (beyond the paper; ViewsTransform)
    trunk_lr_scale: float = 1.0          # the encoder trunk's lr relative to lr (objectives.parameter_groups)
    input_crop_jitter: float = 0.0       # input-view scale augmentation (beyond the paper; ViewsTransform); 0 = off
    lr_schedule: str = "plateau"         # "plateau" (the paper's) or "cosine" (beyond the paper: to the run's end)
    lr_final_scale: float = 0.01         # cosine: the last epoch's rate relative to lr
    grad_clip_norm: float = 0.0          # > 0: clip the gradient's L2 norm to it (beyond the paper); 0 = off

    def __post_init__(self) -> None:
        check_values("pretrain", self, positive=("batch_size", "supervision_views", "rays_per_view", "epochs", "lr",
                                                 "plateau_factor", "checkpoint_every", "trunk_lr_scale"),
                     non_negative=("plateau_threshold", "plateau_patience", "mask_weight", "colour_weight",
                                   "occupancy_weight", "occupancy_points", "grad_clip_norm"),
                     fractions=("occupancy_near_fraction", "input_colour_jitter", "input_crop_jitter",
                                "lr_final_scale"))
        if self.lr_schedule not in LR_SCHEDULES:
            raise Ss3dError(f"[pretrain] lr_schedule must be one of {', '.join(LR_SCHEDULES)}, "
                            f"got {self.lr_schedule!r}")
        if self.occupancy_weight > 0 and self.occupancy_points == 0:
            raise Ss3dError("[pretrain] occupancy_weight > 0 needs occupancy_points > 0")


def pretrain(shards: list[str], options: RunOptions, init: str | Path | None = None) -> Path:
    """Pretrain on ``views`` shards; returns the final checkpoint path (written by rank 0)."""
    world = setup_world(options.device)
    try:
        return _pretrain(shards, options, init, world)
    finally:
        teardown_world(world)


def _pretrain(shard_specs: list[str], options: RunOptions, init: str | Path | None, world: World) -> Path:
    preset = load_preset(options.preset)
    cfg = section_config(PretrainConfig, preset.section("pretrain"), "pretrain")
    data = data_config(preset)
    volume = VolumeConfig.from_preset(preset)
    epochs = options.epochs or cfg.epochs
    shards = shards_from(shard_specs)
    run = StageRun("pretrain", preset, options, world, shards={"views": shards})

    network, encoder_init, parents = build_student(preset, init, options.seed)
    network.to(world.device)
    occupancy_points = cfg.occupancy_points if cfg.occupancy_weight > 0 else 0
    pixel_aligned = network.config.pixel_features > 0
    if pixel_aligned and cfg.input_yaw_frame:
        raise Ss3dError("[pretrain] input_yaw_frame and a pixel-aligned model ([model] pixel_features > 0) exclude "
                        "each other: the latter predicts in the input camera's view frame")
    transform = ViewsTransform(network.config.input_size, data.supervision_size, cfg.supervision_views,
                               data.mask_threshold, occupancy_points, cfg.occupancy_near_fraction,
                               cfg.input_colour_jitter, cfg.input_yaw_frame, view_frame=pixel_aligned,
                               crop_jitter=cfg.input_crop_jitter)
    dataset = ShardDataset(shards, transform, options.seed, world.rank, world.size, max_bad=options.max_bad)
    loader = make_loader(dataset, cfg.batch_size, options.workers)
    optimizer = torch.optim.Adam(parameter_groups(network, cfg.lr, cfg.trunk_lr_scale))
    scheduler = epoch_scheduler(optimizer, cfg, epochs)
    generator = torch.Generator().manual_seed(options.seed * 1000 + world.rank)
    position = new_position(loss_sum=0.0, loss_count=0)

    restored = run.restore(network, optimizer, generator)
    if restored is not None:
        _, info = restored
        scheduler.load_state_dict(info["scheduler"])
        position = info["position"]
        parents, encoder_init = info["parents"], info["encoder_init"]

    objective_type = ShapeObjective if occupancy_points else RenderObjective
    objective = wrap_ddp(world, objective_type(network, volume, run.micro_batch,
                                               options.precision))
    state = PretrainState(cfg, volume, objective, optimizer, generator, world, run.guard,
                          ExtractConfig.from_preset(preset).density_threshold, position)
    manifest = data_manifest_hash(shards)
    categories = index_categories(shards)

    def checkpoint(final: bool) -> None:
        meta = run.meta(position, categories, manifest, encoder_init, parents)
        info = {"position": position, "scheduler": scheduler.state_dict(), "parents": parents,
                "encoder_init": encoder_init}
        run.save(network, optimizer, generator, meta, info, final=final)

    def end_epoch() -> None:
        if cfg.lr_schedule == "plateau":
            scheduler.step(position["loss_sum"] / max(position["loss_count"], 1))
        else:
            scheduler.step()
        position.update(loss_sum=0.0, loss_count=0)

    return run_stage(run, network, state, pretrain_step, loader, epochs, checkpoint, cfg.checkpoint_every,
                     label="pretrain", end_epoch=end_epoch)


def cosine_factor(epoch: int, epochs: int, final_scale: float) -> float:
    """The cosine schedule's rate in ``epoch`` (0-based) of ``epochs``, relative to the base rate: 1 in the first
    epoch, ``final_scale`` in the last."""
    done = min(epoch, epochs - 1) / max(epochs - 1, 1)
    return final_scale + (1.0 - final_scale) * 0.5 * (1.0 + math.cos(math.pi * done))


def epoch_scheduler(optimizer: torch.optim.Optimizer, cfg: PretrainConfig, epochs: int):
    """The pretraining rate schedule, stepped after every epoch. The cosine one's horizon is this invocation's
    ``epochs``: a run resumed with more ``--epochs`` stretches it (each group keeps its own base rate, so the
    trunk's ``trunk_lr_scale`` holds throughout)."""
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda epoch: cosine_factor(epoch, epochs, cfg.lr_final_scale))
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=cfg.plateau_factor, threshold=cfg.plateau_threshold, patience=cfg.plateau_patience)


@dataclass
class PretrainState:
    """What one pretraining step reads and updates (the loop owns the rest)."""

    cfg: PretrainConfig
    volume: VolumeConfig
    objective: torch.nn.Module        # RenderObjective or ShapeObjective, DDP-wrapped when distributed
    optimizer: torch.optim.Optimizer
    generator: torch.Generator        # ray and depth sampling
    world: World
    guard: NonFiniteGuard
    threshold: float                  # extraction level: the occupancy loss's decision boundary
    position: dict[str, Any] = field(default_factory=lambda: new_position(loss_sum=0.0, loss_count=0))


def pretrain_step(state: PretrainState, batch: dict[str, Any]) -> Metrics | None:
    """One optimiser step on a batch of ``views`` samples; None when the loss was not finite (nothing changed).
    Adds the loss to the epoch's sum that ReduceLROnPlateau reads."""
    started = time.perf_counter()
    kept = KeptBuffers(state.objective)
    loss, parts = _pretrain_loss(state.objective, batch, state.cfg, state.volume, state.generator, state.world,
                                 state.threshold)
    grad_norm = guarded_update(state.guard, state.world, state.optimizer, loss, state.position["step"], kept,
                               state.cfg.grad_clip_norm)
    if grad_norm is None:
        return None
    value = float(all_mean(state.world, loss.detach().reshape(1)).item())
    state.position["loss_sum"] += value
    state.position["loss_count"] += 1
    return {"loss": value, "lr": state.optimizer.param_groups[0]["lr"], "grad_norm": grad_norm,
            "images_per_s": images_per_second(batch["input"].shape[0] * state.world.size, started),
            **{name: float(part) for name, part in parts.items()}}


def _pretrain_loss(objective, batch: dict[str, Any], cfg: PretrainConfig, volume: VolumeConfig,
                   generator: torch.Generator, world: World, threshold: float = 0.0
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """One batch's loss: B inputs, K supervising views each, R rays per view (plus the occupancy term when the batch
    carries labelled points). -> (loss, its parts as floats on this rank, for the metrics)."""
    device = world.device
    rgb, mask = batch["rgb"].to(device), batch["mask"].to(device)          # [B, K, s, s, 3], [B, K, s, s]
    b, k, s = rgb.shape[0], rgb.shape[1], rgb.shape[2]
    rays = supervised_rays(batch["intrinsics"].to(device).reshape(b * k, 3, 3),
                           batch["cam2world"].to(device).reshape(b * k, 4, 4),
                           rgb.reshape(b * k, s, s, 3), mask.reshape(b * k, s, s), cfg.rays_per_view, volume,
                           generator)
    per_object = {name: value.reshape(b, k * cfg.rays_per_view, *value.shape[2:]) for name, value in rays.items()}
    jitter = depth_jitter(per_object["near"].shape, volume.samples_per_ray, generator, device)
    images = batch["input"].to(device)
    args = (images, per_object["origins"], per_object["directions"], per_object["near"], per_object["far"], jitter)
    # Pixel-aligned networks read the input view's projection (the batch is then in its view frame).
    projection = crop_projection(batch["input_intrinsics"], batch["input_cam2world"], batch["input_crop"],
                                 images.shape[-1]).to(device) if _pixel_aligned(objective) else None
    labelled = "occupancy_points" in batch
    outputs = objective(*args, batch["occupancy_points"].to(device), projection=projection) if labelled else \
        objective(*args, projection=projection)
    rendered = render_loss(outputs[0], outputs[1], per_object["target_mask"], per_object["target_rgb"],
                           cfg.mask_weight, cfg.colour_weight)
    if not labelled:
        return rendered, {}
    occupancy = occupancy_loss(outputs[2], batch["occupancy_labels"].to(device), threshold)
    parts = {"render_loss": float(rendered.detach()), "occupancy_loss": float(occupancy.detach())}
    return rendered + cfg.occupancy_weight * occupancy, parts


def _pixel_aligned(objective: torch.nn.Module) -> bool:
    return getattr(objective, "module", objective).network.config.pixel_features > 0
