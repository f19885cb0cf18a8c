"""Stage 3, distilling every category expert (and the synthetic-only model) into one unified student (paper Sec. 3.3).

For each image of category c, the student and expert c are queried at the same ``points_per_image`` points of the
canonical frame: a ``ray_point_fraction`` share along rays of a camera looking at the object (the true input camera
for synthetic views; a random look-at camera for collection images, whose cameras are unknown) and the rest uniform
in [-point_half_size, point_half_size]^3. Loss (authors' code): (MSE of colour logits + MSE of ReLU density) / 2.
No volume rendering. Teachers run in eval mode without gradients. A ``synthetic_fraction`` of each batch are
synthetic views taught by the synthetic-only model.

A pixel-aligned student (beyond the paper; ``[model] pixel_features``) predicts in each input's view frame
(:func:`ss3d_train.data.view_frame`) and reads its image through that frame's camera, so its points are placed
there. A synthetic view's camera is known: the synthetic teacher (then pixel-aligned too) answers at the same points.
A collection image's camera is not: the student sees it as it will see any photo at inference
(:func:`ss3d_model.cameras.photo_camera`), and the expert answers at the same points carried to its canonical frame by
the similarity that makes them show where they show through the expert's self-trained camera for that image
(:func:`view_to_expert`), so the student learns the expert's shape where the image shows it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ss3d_data.config import data_config, render_config
from ss3d_data.errors import Ss3dError
from ss3d_data.presets import check_values, load_preset, section_config
from ss3d_model import ReconstructionNetwork, VolumeConfig, intrinsics_matrix, look_at, pixel_rays, ray_bounds
from ss3d_model.cameras import VIEW_BOX_HALF_SIZE, VIEW_DISTANCE, crop_projection, photo_camera
from ss3d_train.data import (
    ImageTransform,
    ShardDataset,
    ViewsTransform,
    data_manifest_hash,
    index_categories,
    make_loader,
    shards_from,
)
from ss3d_train.distributed import World, all_mean, setup_world, teardown_world, wrap_ddp
from ss3d_train.loop import (
    KeptBuffers,
    Metrics,
    epoch_batches,
    guarded_update,
    images_per_second,
    new_position,
    run_stage,
)
from ss3d_train.objectives import (
    FieldObjective,
    build_student,
    load_teacher,
    parameter_groups,
    require_canonical_frame,
)
from ss3d_train.run import NonFiniteGuard, RunOptions, StageRun
from ss3d_train.selftrain import load_cameras

SYNTHETIC = "__synthetic__"  # teacher key of the synthetic-only model


@dataclass(frozen=True)
class DistillConfig:
    batch_size: int              # images per process and step (collection + synthetic)
    points_per_image: int        # query points per image
    point_half_size: float       # uniform points in [-h, h]^3
    ray_point_fraction: float    # share of points along rays of a camera looking at the object
    synthetic_fraction: float    # share of each batch taught by the synthetic-only model
    epochs: int
    lr: float
    checkpoint_every: int
    trunk_lr_scale: float = 1.0  # the encoder trunk's lr relative to lr (objectives.parameter_groups)
    grad_clip_norm: float = 0.0  # > 0: clip the gradient's L2 norm to it (beyond the paper); 0 = off

    def __post_init__(self) -> None:
        check_values("distill", self, positive=("batch_size", "points_per_image", "point_half_size", "epochs", "lr",
                                                "checkpoint_every", "trunk_lr_scale"),
                     non_negative=("grad_clip_norm",), fractions=("ray_point_fraction", "synthetic_fraction"))


def distill_loss(student_sigma: Tensor, student_rgb: Tensor, teacher_sigma: Tensor, teacher_rgb: Tensor) -> Tensor:
    """(MSE(colour logits) + MSE(relu(sigma))) / 2. sigma [B, N], rgb [B, N, 3]."""
    colour = torch.mean((student_rgb - teacher_rgb) ** 2)
    density = torch.mean((torch.relu(student_sigma) - torch.relu(teacher_sigma)) ** 2)
    return (colour + density) / 2


def sample_points(cam2world: Tensor, intrinsics: Tensor, side: int, cfg: DistillConfig, volume: VolumeConfig,
                  generator: torch.Generator, half_size: float | None = None) -> Tensor:
    """cam2world [B, 4, 4], intrinsics [B, 3, 3] of a square ``side`` image -> points [B, N, 3]: rays through random
    pixels with a random depth within the object's ray bounds, plus uniform points in the cube of ``half_size``
    (default ``cfg.point_half_size``)."""
    b, n = cam2world.shape[0], cfg.points_per_image
    on_rays = int(round(n * cfg.ray_point_fraction))
    pixels = torch.rand(b, on_rays, 2, generator=generator) * side
    origins, directions = pixel_rays(intrinsics, cam2world, pixels.to(cam2world.dtype))
    near, far = ray_bounds(origins, volume)
    t = near + (far - near) * torch.rand(b, on_rays, generator=generator)
    ray_points = origins + directions * t.unsqueeze(-1)
    half = cfg.point_half_size if half_size is None else half_size
    cube = (torch.rand(b, n - on_rays, 3, generator=generator) * 2 - 1) * half
    return torch.cat([ray_points, cube.to(ray_points.dtype)], 1)


def random_cameras(count: int, focal_px: float, side: int, distance_range: list[float],
                   generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Look-at cameras at random directions (collection images carry no camera) -> cam2world [n, 4, 4], K [n, 3, 3]."""
    u = torch.rand(count, 3, generator=generator)
    elevation = torch.asin(u[:, 0] * 2 - 1)                 # uniform over the sphere
    azimuth = u[:, 1] * 2 * math.pi
    distance = distance_range[0] + u[:, 2] * (distance_range[1] - distance_range[0])
    return look_at(elevation, azimuth, distance), intrinsics_matrix(focal_px, side).expand(count, 3, 3)


@dataclass(frozen=True)
class ExpertCameras:
    """An expert's self-trained camera of each of its images (its most probable hypothesis): what a pixel-aligned
    student needs to ask the expert about the image."""

    row_of: dict[str, int]    # image key -> row
    cam2world: Tensor         # [N, 4, 4] in the expert's canonical frame
    focal_per_side: float     # focal length per pixel of the crop's side (the crop is the expert's whole image)

    @classmethod
    def load(cls, checkpoint: str | Path) -> ExpertCameras:
        keys, cameras = load_cameras(checkpoint)
        settings = cameras.settings()
        return cls({k: i for i, k in enumerate(keys)}, cameras.most_probable().detach(),
                   settings["focal_px"] / settings["size"])


def view_to_expert(crop: Tensor, width: int, height: int, size: int, expert_pose: Tensor,
                   expert_focal_per_side: float) -> Tensor:
    """The similarity [3, 4] that takes a pixel-aligned student's view-frame points to an expert's canonical frame
    for one collection image: a point shows at the same place of the input crop (crop [3] of a ``width`` x
    ``height`` image at ``size`` px) through the student's camera (:func:`~ss3d_model.cameras.photo_camera`) and
    of the expert's image (the same crop) through the expert's camera ``expert_pose`` [4, 4].

    The crop centre's ray at depth VIEW_DISTANCE (the object's depth in the view frame) goes to the canonical
    origin; the scale matches the two cameras' magnifications there. Exact along that ray; elsewhere as exact as the
    two perspectives agree (their focal lengths differ), which keeps the expert's shape undistorted."""
    k, pose = photo_camera(width, height)
    scale, offset = float(crop[0]), crop[1:].double()
    centre = (size / 2 - offset) / scale                                  # the crop centre in image pixels
    ray = torch.linalg.solve(k.double(), torch.cat([centre, torch.ones(1, dtype=torch.float64)]))
    anchor = ray * VIEW_DISTANCE                                          # student camera coordinates
    turn = _rotation_onto_z(ray / ray.norm())
    expert_pose = expert_pose.double()
    distance = expert_pose[:3, 3].norm()
    magnify = (float(k[0, 0]) * scale / size) / expert_focal_per_side * distance / anchor.norm()
    world2cam = pose.double()[:3, :3].T
    cam_shift = -world2cam @ pose.double()[:3, 3]
    on_axis = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64) * distance
    rotation = expert_pose[:3, :3]
    linear = magnify * rotation @ turn @ world2cam
    shift = rotation @ (on_axis + magnify * turn @ (cam_shift - anchor)) + expert_pose[:3, 3]
    return torch.cat([linear, shift[:, None]], 1).float()


def _rotation_onto_z(unit: Tensor) -> Tensor:
    """The smallest rotation [3, 3] taking the unit vector ``unit`` (z > 0) onto +Z (Rodrigues)."""
    z = torch.tensor([0.0, 0.0, 1.0], dtype=unit.dtype)
    axis = torch.linalg.cross(unit, z)
    sin, cos = axis.norm(), torch.dot(unit, z)
    if sin < 1e-12:
        return torch.eye(3, dtype=unit.dtype)
    a = axis / sin
    cross = torch.tensor([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]], dtype=unit.dtype)
    return torch.eye(3, dtype=unit.dtype) + sin * cross + (1 - cos) * cross @ cross


STUDENT_INIT = "student-init"  # the parents entry naming the checkpoint the student started from


def distill(collections: list[str], experts: dict[str, str | Path], options: RunOptions,
            synthetic: str | Path | None = None, synthetic_shards: list[str] | None = None,
            init: str | Path | None = None) -> Path:
    """Distil ``experts`` (category -> checkpoint) and optionally the synthetic-only model into one student: a fresh
    network from the preset, or the checkpoint ``init`` (its architecture from the file)."""
    world = setup_world(options.device)
    try:
        return _distill(collections, experts, options, synthetic, synthetic_shards, init, world)
    finally:
        teardown_world(world)


def _distill(collection_specs: list[str], experts: dict[str, str | Path], options: RunOptions,
             synthetic: str | Path | None, synthetic_specs: list[str] | None, init: str | Path | None,
             world: World) -> Path:
    preset = load_preset(options.preset)
    cfg = section_config(DistillConfig, preset.section("distill"), "distill")
    data = data_config(preset)
    render = render_config(preset)
    volume = VolumeConfig.from_preset(preset)
    epochs = options.epochs or cfg.epochs
    if not experts:
        raise Ss3dError("distillation needs at least one --expert CATEGORY=CHECKPOINT")
    if (synthetic is None) != (not synthetic_specs):
        raise Ss3dError("--synthetic and --synthetic-shards go together")
    collections = shards_from(collection_specs)
    syn_shards = shards_from(synthetic_specs) if synthetic is not None else []
    run = StageRun("distill", preset, options, world, shards={"collections": collections, "synthetic": syn_shards})

    teachers: dict[str, ReconstructionNetwork] = {c: load_teacher(p, world.device) for c, p in experts.items()}
    if synthetic is not None:
        teachers[SYNTHETIC] = load_teacher(synthetic, world.device)
    student, encoder_init, _ = build_student(preset, init, options.seed)
    pixel_aligned = student.config.pixel_features > 0
    for category, teacher in teachers.items():
        if category != SYNTHETIC:
            require_canonical_frame(teacher, "distill", f"expert {category}")
        elif (teacher.config.pixel_features > 0) != pixel_aligned:
            raise Ss3dError("distill: the synthetic teacher and the student must predict in the same frame (both "
                            "pixel-aligned, [model] pixel_features > 0, or neither)")
    student.to(world.device)
    input_size = student.config.input_size
    # A pixel-aligned student asks each collection image's expert through the expert's camera for that image.
    expert_cameras = {c: ExpertCameras.load(p) for c, p in experts.items()} if pixel_aligned else {}
    parents = {c: str(p) for c, p in experts.items()} | ({SYNTHETIC: str(synthetic)} if synthetic else {}) \
        | ({STUDENT_INIT: str(init)} if init else {})
    threshold = data.mask_threshold

    synthetic_per_batch = int(round(cfg.batch_size * cfg.synthetic_fraction)) if synthetic is not None else 0
    collection_per_batch = cfg.batch_size - synthetic_per_batch
    if collection_per_batch < 1:
        raise Ss3dError(f"[distill] batch_size {cfg.batch_size} leaves no room for collection images")
    main = ShardDataset(collections, ImageTransform(input_size, data.supervision_size, threshold,
                                                    categories=frozenset(experts)), options.seed, world.rank,
                        world.size, max_bad=options.max_bad)
    main_loader = make_loader(main, collection_per_batch, options.workers)
    syn = ShardDataset(syn_shards, ViewsTransform(input_size, data.supervision_size, 0, threshold,
                                                  view_frame=pixel_aligned),
                       options.seed + 1, world.rank, world.size, max_bad=options.max_bad) if syn_shards else None
    syn_loader = make_loader(syn, synthetic_per_batch, options.workers) if syn is not None else None

    optimizer = torch.optim.Adam(parameter_groups(student, cfg.lr, cfg.trunk_lr_scale))
    generator = torch.Generator().manual_seed(options.seed * 1000 + 2 + world.rank)
    position = new_position(syn_pass=0, syn_batch=0)
    restored = run.restore(student, optimizer, generator)
    if restored is not None:
        _, info = restored
        position, encoder_init = info["position"], info["encoder_init"]
    manifest = data_manifest_hash(collections + syn_shards)
    # the student learns the experts' categories and, through the synthetic teacher, the synthetic views' ones
    categories = sorted(set(experts) | set(index_categories(syn_shards) if syn_shards else []))

    def checkpoint(final: bool) -> None:
        meta = run.meta(position, categories, manifest, encoder_init, parents)
        info = {"position": position, "encoder_init": encoder_init}
        run.save(student, optimizer, generator, meta, info, final=final)

    def synthetic_batches():
        """Endless synthetic batches; its own pass/position counters make it resumable."""
        while True:
            syn.set_epoch(position["syn_pass"])
            got = False
            for index, batch in epoch_batches(syn_loader, world, position["syn_batch"]):
                got = True
                position["syn_batch"] = index + 1
                yield batch
            if not got and position["syn_batch"] == 0:
                raise Ss3dError("the synthetic shards yield no full batch on some rank")
            position.update(syn_pass=position["syn_pass"] + 1, syn_batch=0)

    objective = wrap_ddp(world, FieldObjective(student, run.micro_batch, options.precision))
    state = DistillState(cfg, volume, teachers, objective, optimizer, generator, world, run.guard,
                         render.focal_px, render.image_size, list(render.distance_range),
                         synthetic_batches() if syn is not None else None, expert_cameras, position)
    return run_stage(run, student, state, distill_step, main_loader, epochs, checkpoint, cfg.checkpoint_every,
                     label="distill", datasets=(syn,))


@dataclass
class DistillState:
    """What one distillation step reads and updates (the loop owns the rest)."""

    cfg: DistillConfig
    volume: VolumeConfig
    teachers: dict[str, ReconstructionNetwork]   # category (or SYNTHETIC) -> teacher in eval mode
    objective: torch.nn.Module                  # FieldObjective of the student, DDP-wrapped when distributed
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    world: World
    guard: NonFiniteGuard
    focal_px: float                             # random cameras of collection images: the renders' intrinsics
    image_size: int
    distance_range: list[float]
    synthetic: Iterator[dict[str, Any]] | None  # endless synthetic batches (their place is in ``position``)
    expert_cameras: dict[str, ExpertCameras] = field(default_factory=dict)  # category -> (pixel-aligned student)
    position: dict[str, Any] = field(default_factory=lambda: new_position(syn_pass=0, syn_batch=0))

    @property
    def pixel_aligned(self) -> bool:
        """A pixel-aligned student: only it carries its experts' cameras (there is always an expert)."""
        return bool(self.expert_cameras)


def distill_step(state: DistillState, batch: dict[str, Any]) -> Metrics | None:
    """One student update on a batch of collection images (plus a synthetic batch when the state has a stream):
    every teacher answers at the student's query points. None when the loss was not finite."""
    started = time.perf_counter()
    device = state.world.device
    groups = _teacher_groups(batch, state)
    images = torch.cat([g["input"] for g in groups]).to(device)
    # A pixel-aligned student's points fill the view frame's box, where it will be meshed.
    half = max(state.cfg.point_half_size, VIEW_BOX_HALF_SIZE) if state.pixel_aligned else state.cfg.point_half_size
    points = torch.cat([sample_points(g["cam2world"], g["intrinsics"], g["side"], state.cfg, state.volume,
                                      state.generator, half) for g in groups]).to(device)
    projection = torch.cat([g["projection"] for g in groups]).to(device) if state.pixel_aligned else None
    with torch.no_grad():
        targets, start = [], 0
        for g in groups:
            for teacher_name, rows in g["teachers"]:
                sel = torch.tensor(rows) + start
                teacher = state.teachers[teacher_name]
                at = points[sel]
                if g.get("to_canonical") is not None:  # an expert: its canonical frame
                    similarity = g["to_canonical"][rows].to(device)
                    at = at @ similarity[..., :3].transpose(1, 2) + similarity[:, None, :, 3]
                pixel = projection[sel] if teacher.config.pixel_features else None
                targets.append((sel, *teacher(images[sel], at, pixel)))
            start += g["input"].shape[0]
        t_sigma = torch.empty(points.shape[:2], device=device)
        t_rgb = torch.empty(*points.shape[:2], 3, device=device)
        for sel, sigma, rgb in targets:
            t_sigma[sel], t_rgb[sel] = sigma, rgb
    kept = KeptBuffers(state.objective)
    s_sigma, s_rgb = state.objective(images, points, projection)
    loss = distill_loss(s_sigma, s_rgb, t_sigma, t_rgb)
    grad_norm = guarded_update(state.guard, state.world, state.optimizer, loss, state.position["step"], kept,
                               state.cfg.grad_clip_norm)
    if grad_norm is None:
        return None
    rate = images_per_second(images.shape[0] * state.world.size, started)
    return {"loss": float(all_mean(state.world, loss.detach().reshape(1)).item()), "grad_norm": grad_norm,
            "images_per_s": rate,
            "points_per_s": rate * state.cfg.points_per_image}


def _teacher_groups(batch: dict[str, Any], state: DistillState) -> list[dict[str, Any]]:
    """The batch as groups (collection images, then synthetic views), each with the cameras its points are shot from,
    its (teacher, rows) assignment and, for a pixel-aligned student, the input views' projections and (collection
    images) the view-frame-to-canonical maps of their experts."""
    by_category: dict[str, list[int]] = {}
    for row, category in enumerate(batch["category"]):
        by_category.setdefault(category, []).append(row)
    groups = [_collection_group(batch, state) | {"teachers": sorted(by_category.items())}]
    if state.synthetic is not None:
        syn = next(state.synthetic)
        group = {"input": syn["input"], "cam2world": syn["input_cam2world"], "intrinsics": syn["input_intrinsics"],
                 "side": int(syn["input_side"][0]), "teachers": [(SYNTHETIC, list(range(syn["input"].shape[0])))]}
        if state.pixel_aligned:  # the views are in the input camera's view frame (ViewsTransform's view_frame)
            group["projection"] = crop_projection(syn["input_intrinsics"], syn["input_cam2world"], syn["input_crop"],
                                                  syn["input"].shape[-1])
        groups.append(group)
    return groups


def _collection_group(batch: dict[str, Any], state: DistillState) -> dict[str, Any]:
    """Collection images carry no camera: a canonical student's points are shot from random look-at cameras; a
    pixel-aligned one's from the camera assumed for any photo (as at inference), in its view frame."""
    count = batch["input"].shape[0]
    if not state.pixel_aligned:
        side = state.image_size
        c2w, intr = random_cameras(count, state.focal_px, side, state.distance_range, state.generator)
        return {"input": batch["input"], "cam2world": c2w, "intrinsics": intr, "side": side}
    size = batch["input"].shape[-1]
    crops, intrinsics, poses, to_canonical = batch["input_crop"], [], [], []
    for row, (category, key) in enumerate(zip(batch["category"], batch["key"])):
        cameras = state.expert_cameras[category]
        index = cameras.row_of.get(key)
        if index is None:
            raise Ss3dError(f"expert {category} has no camera for image {key}: a pixel-aligned student asks each "
                            "image's expert through the expert's self-trained camera",
                            hint="distill on the collections the experts were self-trained on")
        width, height = (int(v) for v in batch["photo_size"][row])
        k, pose = photo_camera(width, height)
        scale, offset = crops[row, 0], crops[row, 1:]
        crop_k = k.clone()                                   # the same camera, in the input crop's pixels
        crop_k[:2] *= scale
        crop_k[:2, 2] += offset
        intrinsics.append(crop_k)
        poses.append(pose)
        to_canonical.append(view_to_expert(crops[row], width, height, size, cameras.cam2world[index],
                                           cameras.focal_per_side))
    intrinsics, cam2world = torch.stack(intrinsics), torch.stack(poses)
    whole = torch.tensor([[1.0, 0.0, 0.0]]).expand(count, 3)  # intrinsics already in the crop's pixels
    return {"input": batch["input"], "cam2world": cam2world, "intrinsics": intrinsics, "side": size,
            "projection": crop_projection(intrinsics, cam2world, whole, size),
            "to_canonical": torch.stack(to_canonical)}
