"""Stage 2, self-training one category expert on an image collection with masks and no cameras (paper Sec. 3.2).

Each image i has K camera hypotheses pi_ik (look-at elevation, azimuth, distance) and probabilities
rho_i = softmax(w_i). For a batch: rays through the same sampled pixels are rendered under every hypothesis, giving
per-hypothesis losses L_ik = mask_weight * MSE(mask) + colour_weight * MSE(colour). Per network step:

1. ``camera_steps_per_step`` camera updates on the unweighted mean over hypotheses (fresh pixels each time), so every
   hypothesis improves its own fit (authors' code);
2. one probability update on sum_k rho_ik * L_ik (losses held fixed), moving mass to the hypotheses that fit;
3. in the joint phase, one network update on sum_k rho_ik * L_ik (cameras held fixed).

The first ``camera_epochs`` epochs skip step 3 (network frozen). Cameras and their Adam moments are per-image rows
updated only for the images in the batch (:class:`~ss3d_train.sparse_adam.SparseRowAdam`); they persist across epochs
and are saved in the training-state file, so a run resumes exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ss3d_data.config import data_config
from ss3d_data.errors import Ss3dError
from ss3d_data.presets import check_values, load_preset, section_config
from ss3d_model import (
    MultiHypothesisCameras,
    ReconstructionNetwork,
    VolumeConfig,
    pixel_rays,
    ray_bounds,
    sample_pixels,
)
from ss3d_train.data import (
    ImageTransform,
    ShardDataset,
    data_manifest_hash,
    index_categories,
    make_loader,
    shard_keys,
    shards_from,
)
from ss3d_train.distributed import World, all_mean, all_sum_, setup_world, teardown_world, wrap_ddp
from ss3d_train.loop import KeptBuffers, Metrics, guarded_update, images_per_second, new_position, run_stage
from ss3d_train.objectives import (
    RenderObjective,
    build_student,
    depth_jitter,
    frozen,
    gather_pixels,
    parameter_groups,
    render_loss,
    require_canonical_frame,
)
from ss3d_train.run import NonFiniteGuard, RunOptions, StageRun, finite_everywhere
from ss3d_train.sparse_adam import SparseRowAdam


@dataclass(frozen=True)
class SelftrainConfig:
    batch_size: int                  # images per process and step
    hypotheses: int                  # K camera hypotheses per image
    camera_epochs: int               # epochs with the network frozen
    joint_epochs: int                # epochs of joint training after them
    camera_steps_per_step: int       # camera updates per network update
    rays_per_hypothesis: int         # sampled pixels, shared by all hypotheses of an image
    lr_network: float
    lr_camera: float
    mask_weight: float
    colour_weight: float
    camera_distance_range: list[float]
    camera_focal_px: float           # focal length of every hypothesis, at supervision size
    checkpoint_every: int
    trunk_lr_scale: float = 1.0      # the encoder trunk's lr relative to lr_network (objectives.parameter_groups)
    grad_clip_norm: float = 0.0      # > 0: clip the gradient's L2 norm to it (beyond the paper); 0 = off

    def __post_init__(self) -> None:
        check_values("selftrain", self, positive=("batch_size", "hypotheses", "camera_steps_per_step",
                                                  "rays_per_hypothesis", "lr_network", "lr_camera",
                                                  "camera_focal_px", "checkpoint_every", "trunk_lr_scale"),
                     non_negative=("camera_epochs", "joint_epochs", "mask_weight", "colour_weight",
                                   "grad_clip_norm"))
        near_far = self.camera_distance_range
        if len(near_far) != 2 or not 0 < near_far[0] <= near_far[1]:
            raise Ss3dError(f"[selftrain] camera_distance_range must be [near, far] with 0 < near <= far "
                            f"(got {near_far!r})")


def selftrain(shards: list[str], init: str | Path, options: RunOptions, category: str | None = None) -> Path:
    """Self-train an expert from ``init`` (the pretrained checkpoint) on ``image`` shards of one category."""
    world = setup_world(options.device)
    try:
        return _selftrain(shards, init, options, category, world)
    finally:
        teardown_world(world)


def hypothesis_rays(cameras: MultiHypothesisCameras, indices: Tensor, pixels: Tensor, volume: VolumeConfig,
                    detach: bool) -> dict[str, Tensor]:
    """Rays of every hypothesis through the same pixels. indices [B], pixels long [B, R, 2] -> origins, directions
    [B, K*R, 3], near, far [B, K*R] (hypothesis-major within each image)."""
    poses = cameras.poses(indices)                                           # [B, K, 4, 4]
    if detach:
        poses = poses.detach()
    b, k = poses.shape[:2]
    r = pixels.shape[1]
    px = (pixels.to(poses.dtype) + 0.5).unsqueeze(1).expand(b, k, r, 2)
    intr = cameras.intrinsics.expand(b, k, 3, 3)
    origins, directions = pixel_rays(intr, poses, px)                        # [B, K, R, 3]
    near, far = ray_bounds(origins, volume)
    return {"origins": origins.reshape(b, k * r, 3), "directions": directions.reshape(b, k * r, 3),
            "near": near.reshape(b, k * r), "far": far.reshape(b, k * r)}


def per_hypothesis_loss(mask: Tensor, rgb: Tensor, target_mask: Tensor, target_rgb: Tensor, k: int,
                        cfg: SelftrainConfig) -> Tensor:
    """mask [B, K*R], rgb [B, K*R, 3], targets [B, R] / [B, R, 3] -> L [B, K]."""
    b = mask.shape[0]
    r = target_mask.shape[1]
    return render_loss(mask.view(b, k, r), rgb.view(b, k, r, 3), target_mask.unsqueeze(1),
                       target_rgb.unsqueeze(1), cfg.mask_weight, cfg.colour_weight, reduce_dims=(-1,))


def hypothesis_losses(render, cameras: MultiHypothesisCameras, indices: Tensor, rgb: Tensor, mask: Tensor,
                      cfg: SelftrainConfig, volume: VolumeConfig, generator: torch.Generator,
                      detach_cameras: bool) -> Tensor:
    """Render ``cfg.rays_per_hypothesis`` random pixels of every image through each of its K hypothesis cameras and
    score them against the image: L [B, K]. ``render(origins, directions, near, far, jitter) -> (mask, rgb)`` is the
    network (with its encoding of the batch); ``detach_cameras`` for the network step, where only weights learn.
    rgb [B, s, s, 3], mask [B, s, s] (the supervision images of ``indices``)."""
    pixels = sample_pixels(indices.shape[0], cfg.rays_per_hypothesis, rgb.shape[1], generator).to(rgb.device)
    rays = hypothesis_rays(cameras, indices, pixels, volume, detach=detach_cameras)
    jitter = depth_jitter(rays["near"].shape, volume.samples_per_ray, generator, rgb.device)
    pred_mask, pred_rgb = render(rays["origins"], rays["directions"], rays["near"], rays["far"], jitter)
    return per_hypothesis_loss(pred_mask, pred_rgb, gather_pixels(mask, pixels), gather_pixels(rgb, pixels),
                               cfg.hypotheses, cfg)


def _selftrain(shard_specs: list[str], init: str | Path, options: RunOptions, category: str | None,
               world: World) -> Path:
    preset = load_preset(options.preset)
    cfg = section_config(SelftrainConfig, preset.section("selftrain"), "selftrain")
    data = data_config(preset)
    volume = VolumeConfig.from_preset(preset)
    sup_size = data.supervision_size
    epochs = cfg.camera_epochs + cfg.joint_epochs
    shards = shards_from(shard_specs)
    run = StageRun("selftrain", preset, options, world, shards={"images": shards})
    categories = index_categories(shards)
    if category is None:
        if len(categories) != 1:
            raise Ss3dError(f"self-training trains one category; these shards hold {categories or 'unknown'}",
                            hint="pass --category NAME")
        category = categories[0]
    elif categories and category not in categories:
        raise Ss3dError(f"category {category!r} is not in these shards (they hold {', '.join(categories)})")

    network, encoder_init, parents = build_student(preset, init, options.seed)
    require_canonical_frame(network, "selftrain", "the network")
    network.to(world.device)
    keys = sorted(k for s in shards for k in shard_keys(s))
    if len(set(keys)) != len(keys):
        raise Ss3dError("sample keys repeat across these shards; each image needs its own key for its cameras")
    index_of = {k: i for i, k in enumerate(keys)}
    transform = ImageTransform(network.config.input_size, sup_size, data.mask_threshold, index_of,
                               frozenset([category]))
    dataset = ShardDataset(shards, transform, options.seed, world.rank, world.size, max_bad=options.max_bad)
    loader = make_loader(dataset, cfg.batch_size, options.workers)

    cam_gen = torch.Generator().manual_seed(options.seed)  # same on every rank: identical initial hypotheses
    cameras = MultiHypothesisCameras(len(keys), cfg.hypotheses, tuple(cfg.camera_distance_range),
                                     cfg.camera_focal_px, sup_size, generator=cam_gen).to(world.device)
    pose_opt = SparseRowAdam(cameras.raw.data, cfg.lr_camera)
    prob_opt = SparseRowAdam(cameras.logits.data, cfg.lr_camera)
    optimizer = torch.optim.Adam(parameter_groups(network, cfg.lr_network, cfg.trunk_lr_scale))
    generator = torch.Generator().manual_seed(options.seed * 1000 + 1 + world.rank)
    owned = torch.zeros(len(keys), dtype=torch.bool, device=world.device)
    for shard in dataset.rank_shards(max(options.workers, 1)):
        owned[[index_of[k] for k in shard_keys(shard)]] = True
    position = new_position()

    restored = run.restore(network, optimizer, generator)
    if restored is not None:
        tensors, info = restored
        if info["keys"] != keys:
            raise Ss3dError("--resume: the shards hold other images than the run being resumed")
        with torch.no_grad():
            cameras.raw.copy_(tensors["cameras.raw"])
            cameras.logits.copy_(tensors["cameras.logits"])
        pose_opt.load_state_tensors("cameras.raw_adam", tensors)
        prob_opt.load_state_tensors("cameras.logits_adam", tensors)
        position, parents, encoder_init = info["position"], info["parents"], info["encoder_init"]

    renderer = RenderObjective(network, volume, run.micro_batch, options.precision)
    state = SelftrainState(cfg, volume, network, renderer, wrap_ddp(world, renderer), cameras, pose_opt, prob_opt,
                           optimizer, generator, world, run.guard, position)
    manifest = data_manifest_hash(shards)

    def sync_cameras() -> None:
        """Every image's camera rows are updated by the one rank reading its shard: gather them everywhere."""
        if not world.distributed:
            return
        for t in (cameras.raw.data, cameras.logits.data, *pose_opt.owned_tensors(), *prob_opt.owned_tensors()):
            t[~owned] = 0
            all_sum_(world, t)

    def checkpoint(final: bool) -> None:
        sync_cameras()
        tensors = {"cameras.raw": cameras.raw.data, "cameras.logits": cameras.logits.data,
                   **pose_opt.state_tensors("cameras.raw_adam"), **prob_opt.state_tensors("cameras.logits_adam")}
        meta = run.meta(position, [category], manifest, encoder_init, parents)
        info = {"position": position, "parents": parents, "encoder_init": encoder_init, "keys": keys,
                "cameras": cameras.settings()}
        run.save(network, optimizer, generator, meta, info, tensors, final=final)

    return run_stage(run, network, state, selftrain_step, loader, epochs, checkpoint, cfg.checkpoint_every,
                     label=f"selftrain {category}", status=_status)


@dataclass
class SelftrainState:
    """What one self-training step reads and updates (the loop owns the rest)."""

    cfg: SelftrainConfig
    volume: VolumeConfig
    network: ReconstructionNetwork
    renderer: RenderObjective          # renders rays of an encoded batch (camera steps)
    objective: torch.nn.Module         # the same, DDP-wrapped when distributed (network steps)
    cameras: MultiHypothesisCameras    # every image's hypotheses, indexed by the batch's "index"
    pose_opt: SparseRowAdam
    prob_opt: SparseRowAdam
    optimizer: torch.optim.Optimizer   # the network's
    generator: torch.Generator
    world: World
    guard: NonFiniteGuard
    position: dict[str, Any] = field(default_factory=new_position)

    @property
    def joint(self) -> bool:
        """Past the camera-only epochs: the network learns too."""
        return self.position["epoch"] >= self.cfg.camera_epochs


def selftrain_step(state: SelftrainState, batch: dict[str, Any]) -> Metrics | None:
    """Camera updates, one probability update and (in the joint phase) one network update on a batch of ``image``
    samples; None when the expected loss was not finite (the batch is skipped)."""
    started = time.perf_counter()
    cfg, cameras, network, world = state.cfg, state.cameras, state.network, state.world
    indices = batch["index"].to(world.device)
    images = batch["input"].to(world.device)
    rgb, mask = batch["rgb"].to(world.device), batch["mask"].to(world.device)
    # Camera updates see the network as a fixed function: eval mode keeps batch-norm statistics still.
    network.eval()
    with torch.no_grad():
        z = network.encode(images)
    network.train()
    losses = None
    render_encoded = partial(state.renderer.render, z)
    with frozen(network):  # only the cameras learn here: no weight gradients are computed
        for _ in range(cfg.camera_steps_per_step):
            losses = hypothesis_losses(render_encoded, cameras, indices, rgb, mask, cfg, state.volume,
                                       state.generator, detach_cameras=False)
            if not torch.isfinite(losses).all():
                break
            (grad,) = torch.autograd.grad(losses.mean(1).sum(), cameras.raw)
            state.pose_opt.step(indices, grad[indices])
    probs = cameras.probabilities(indices)
    expected = (probs * losses.detach()).sum(1)
    if not state.guard.ok(finite_everywhere(world, expected), state.position["step"]):
        return None
    (grad,) = torch.autograd.grad(expected.sum(), cameras.logits)
    state.prob_opt.step(indices, grad[indices])
    loss_value = expected.mean()
    if state.joint:
        kept = KeptBuffers(network)
        per_hyp = hypothesis_losses(partial(state.objective, images), cameras, indices, rgb, mask, cfg,
                                    state.volume, state.generator, detach_cameras=True)
        loss = (cameras.probabilities(indices).detach() * per_hyp).sum(1).mean()
        grad_norm = guarded_update(state.guard, world, state.optimizer, loss, state.position["step"], kept,
                                   cfg.grad_clip_norm)
        if grad_norm is None:
            return None
        loss_value = loss.detach()
    metrics = {"loss": float(all_mean(world, loss_value.reshape(1)).item()),
               "top_probability": float(all_mean(world, probs.detach().max(1).values.mean().reshape(1)).item()),
               "joint": int(state.joint),
               "images_per_s": images_per_second(indices.shape[0] * world.size, started)}
    if state.joint:  # the camera phase leaves the network alone: no network gradient to report
        metrics["grad_norm"] = grad_norm
    return metrics


def _status(values: Metrics) -> str:
    return (f"{'joint' if values['joint'] else 'cameras'} loss {values['loss']:.4f} "
            f"top-p {values['top_probability']:.2f} {values['images_per_s']:.1f} img/s")


def read_cameras_state(checkpoint: str | Path) -> tuple[list[str], Tensor, Tensor]:
    """(keys, raw [N, K, 3], logits [N, K]) saved with a self-training checkpoint's state file."""
    keys, raw, logits, _ = _saved_cameras(checkpoint)
    return keys, raw, logits


def load_cameras(checkpoint: str | Path) -> tuple[list[str], MultiHypothesisCameras]:
    """The self-trained cameras of an expert checkpoint: (image keys, their cameras, rows in key order)."""
    keys, raw, logits, settings = _saved_cameras(checkpoint)
    if settings is None:
        raise Ss3dError(f"{checkpoint}: its state file records no camera settings (self-trained before they were "
                        "saved)", hint="self-train the expert again")
    return keys, MultiHypothesisCameras.from_saved(settings, raw, logits)


def _saved_cameras(checkpoint: str | Path) -> tuple[list[str], Tensor, Tensor, dict[str, Any] | None]:
    from ss3d_model import load_state, state_path

    path = state_path(checkpoint)
    if not path.is_file():
        raise Ss3dError(f"{checkpoint}: no training-state file beside it ({path.name}), where self-training keeps "
                        "its cameras")
    tensors, info = load_state(path)
    if "cameras.raw" not in tensors:
        raise Ss3dError(f"{checkpoint}: its state file holds no self-training cameras")
    return info["keys"], tensors["cameras.raw"], tensors["cameras.logits"], info.get("cameras")
