"""Stage 1, pretraining on synthetic multi-view renders (paper Sec. 3.1).

Per instance: one view is the input; ``supervision_views`` other views supervise it. On each, ``rays_per_view``
pixels are sampled and their rays volume-rendered with ``samples_per_ray`` uniform samples inside the object's
bounds; the loss is ``mask_weight * MSE(mask) + colour_weight * MSE(colour)``. Adam; ReduceLROnPlateau on the
epoch's mean loss (averaged over ranks so every rank takes the same decision).

Beyond the paper (``occupancy_weight`` > 0; 0 in the ``paper`` preset): the synthetic meshes are known, so
``occupancy_points`` points per instance, labelled inside/outside from the mesh when the shards were written, add
``occupancy_weight * BCE`` (:func:`~ss3d_train.objectives.occupancy_loss`) with the extraction threshold as the
decision boundary. It teaches the 3D shape directly, at a fraction of the cost of rendered rays.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ss3d_data.errors import Ss3dError
from ss3d_data.presets import load_preset, section_config
from ss3d_model import VolumeConfig
from ss3d_model.config import ExtractConfig
from ss3d_train.data import ShardDataset, ViewsTransform, data_manifest_hash, index_categories, make_loader, shards_from
from ss3d_train.distributed import World, all_mean, setup_world, teardown_world, wrap_ddp
from ss3d_train.loop import RunOptions, StageRun, epoch_batches, images_per_second, stage_progress
from ss3d_train.objectives import (
    RenderObjective,
    ShapeObjective,
    build_student,
    depth_jitter,
    occupancy_loss,
    render_loss,
    supervised_rays,
)


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

    def __post_init__(self) -> None:
        if self.occupancy_weight < 0 or self.occupancy_points < 0 or not 0 <= self.occupancy_near_fraction <= 1:
            raise Ss3dError("[pretrain] occupancy_weight and occupancy_points must be >= 0 and "
                            "occupancy_near_fraction in [0, 1]")
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
    data = preset.section("data")
    volume = VolumeConfig.from_preset(preset)
    epochs = options.epochs or cfg.epochs
    shards = shards_from(shard_specs)
    run = StageRun("pretrain", preset, options, world, shards={"views": shards})

    network, encoder_init, parents = build_student(preset, init, options.seed)
    network.to(world.device)
    occupancy_points = cfg.occupancy_points if cfg.occupancy_weight > 0 else 0
    transform = ViewsTransform(network.config.input_size, int(data["supervision_size"]), cfg.supervision_views,
                               float(data["mask_threshold"]), occupancy_points, cfg.occupancy_near_fraction)
    dataset = ShardDataset(shards, transform, options.seed, world.rank, world.size, max_bad=options.max_bad)
    loader = make_loader(dataset, cfg.batch_size, options.workers)
    optimizer = torch.optim.Adam(network.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=cfg.plateau_factor, threshold=cfg.plateau_threshold, patience=cfg.plateau_patience)
    generator = torch.Generator().manual_seed(options.seed * 1000 + world.rank)
    position: dict[str, Any] = {"step": 0, "epoch": 0, "batch": 0, "loss_sum": 0.0, "loss_count": 0}

    restored = run.restore(network, optimizer, generator)
    if restored is not None:
        _, info = restored
        scheduler.load_state_dict(info["scheduler"])
        position = info["position"]
        parents, encoder_init = info["parents"], info["encoder_init"]

    objective_type = ShapeObjective if occupancy_points else RenderObjective
    objective = wrap_ddp(world, objective_type(network, volume.samples_per_ray, run.micro_batch,
                                               options.precision))
    threshold = ExtractConfig.from_preset(preset).density_threshold
    manifest = data_manifest_hash(shards)
    categories = index_categories(shards)

    def checkpoint(final: bool = False) -> None:
        meta = run.meta(position, categories, manifest, encoder_init, parents)
        info = {"position": position, "scheduler": scheduler.state_dict(), "parents": parents,
                "encoder_init": encoder_init}
        run.save(network, optimizer, generator, meta, info, final=final)

    with stage_progress(world) as bar:
        task = bar.add_task("pretrain", total=None, status="")
        while position["epoch"] < epochs:
            dataset.set_epoch(position["epoch"])
            for index, batch in epoch_batches(loader, world, position["batch"]):
                started = time.perf_counter()
                loss, parts = _pretrain_loss(objective, batch, cfg, volume, generator, world, threshold)
                position["batch"] = index + 1
                if not run.update(optimizer, loss, position["step"]):
                    continue
                value = float(all_mean(world, loss.detach().reshape(1)).item())
                position["loss_sum"] += value
                position["loss_count"] += 1
                rate = images_per_second(cfg.batch_size * world.size, started)
                bar.update(task, advance=1, status=f"epoch {position['epoch']} loss {value:.4f} {rate:.1f} img/s")
                values = {"loss": value, "lr": optimizer.param_groups[0]["lr"], "images_per_s": rate,
                          **{name: float(part) for name, part in parts.items()}}
                if run.end_step(position, values, cfg.checkpoint_every, checkpoint):
                    return run.last
            mean = position["loss_sum"] / max(position["loss_count"], 1)
            scheduler.step(mean)
            position.update(epoch=position["epoch"] + 1, batch=0, loss_sum=0.0, loss_count=0)
    checkpoint(final=True)
    run.finish(network, dataset)
    return run.final


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
    args = (batch["input"].to(device), per_object["origins"], per_object["directions"], per_object["near"],
            per_object["far"], jitter)
    labelled = "occupancy_points" in batch
    outputs = objective(*args, batch["occupancy_points"].to(device)) if labelled else objective(*args)
    rendered = render_loss(outputs[0], outputs[1], per_object["target_mask"], per_object["target_rgb"],
                           cfg.mask_weight, cfg.colour_weight)
    if not labelled:
        return rendered, {}
    occupancy = occupancy_loss(outputs[2], batch["occupancy_labels"].to(device), threshold)
    parts = {"render_loss": float(rendered.detach()), "occupancy_loss": float(occupancy.detach())}
    return rendered + cfg.occupancy_weight * occupancy, parts
