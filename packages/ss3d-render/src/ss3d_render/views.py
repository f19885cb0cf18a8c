"""Synthetic multi-view sets (``ss3d-render views``): for every mesh of a manifest, ``views_per_instance`` Cycles
renders from random orbit cameras, written as one ``kind = "views"`` sample folder per instance.

Cameras: azimuth U(azimuth_deg), elevation U(elevation_deg), distance U(distance_range), looking at the origin
with Z up, fixed focal ``focal_px``. Lighting is random per instance and shared by its views (the model predicts
view-independent colour, so the views of one instance should agree on it). RGB is composited over black (the
paper's inputs have a zero background); the mask is the film's alpha.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ss3d_data.cameras import look_at_cam2world
from ss3d_data.config import RenderConfig, render_config
from ss3d_data.errors import Ss3dError
from ss3d_data.manifest import MeshRecord, read_manifest
from ss3d_data.schema import Sample, SampleInfo, write_sample_dir
from ss3d_render.cameras import intrinsics_matrix, sample_orbit
from ss3d_render.jobs import (
    BlenderLog,
    RenderSummary,
    assigned_records,
    instance_rng,
    log_path,
    premultiply,
    render_each,
    select_categories,
)
from ss3d_render.scene import RenderScene

_RETRIES_PER_VIEW = 10  # fresh cameras tried when a view misses the object entirely (thin or off-centre meshes)


def render_instance_views(
    scene: RenderScene, record: MeshRecord, manifest_path: Path, config: RenderConfig, seed: int
) -> Sample:
    """Render all views of one instance. Returns the validated sample (images [V, H, W, 3], masks [V, H, W],
    intrinsics [V, 3, 3], cam2world [V, 4, 4]); deterministic given (seed, instance_id)."""
    rng = instance_rng(seed, record.instance_id, "views")
    size = config.image_size
    scene.load_object(record.resolve(manifest_path), record.matrix())
    lighting = scene.randomise_lighting(rng)
    scene.set_noise_seed(int(rng.integers(2**31)))
    intrinsics = intrinsics_matrix(config.focal_px, size, size)
    images, masks, poses = [], [], []
    for view in range(config.views_per_instance):
        for _ in range(_RETRIES_PER_VIEW):
            eye = sample_orbit(rng, 1, config.azimuth_deg, config.elevation_deg, config.distance_range)[0]
            cam2world = look_at_cam2world(eye)
            rgb, mask = premultiply(scene.render(cam2world, config.focal_px))
            if (mask >= 128).any():
                break
        else:
            raise Ss3dError(f"{record.instance_id}: view {view} shows no object after {_RETRIES_PER_VIEW} cameras")
        images.append(rgb)
        masks.append(mask)
        poses.append(cam2world)
    info = SampleInfo(
        kind="views",
        key=record.instance_id,
        category=record.category,
        instance_id=record.instance_id,
        source=record.source,
        licence=record.licence,
        split=record.split,
        attribution=record.attribution,
        extra={**scene.settings(), "seed": seed, "focal_px": config.focal_px, "lighting": lighting},
    )
    sample = Sample(
        info,
        np.stack(images),
        np.stack(masks),
        np.repeat(intrinsics[None], len(poses), axis=0).astype(np.float32),
        np.stack(poses).astype(np.float32),
    )
    sample.validate()
    return sample


def render_views(
    manifest: str | os.PathLike[str],
    out: str | os.PathLike[str],
    preset: str = "paper",
    shard_index: int = 0,
    num_shards: int = 1,
    seed: int | None = None,
    limit: int | None = None,
    categories: Sequence[str] | None = None,
) -> RenderSummary:
    """Render every instance of ``manifest`` (of ``categories`` if given) assigned to this process into
    ``out/<instance_id>/``; instances whose folder exists are skipped (resume). ``limit`` caps the instances
    considered (after the process split). Blender's own output goes to ``out/blender.log`` (see
    :class:`~ss3d_render.jobs.BlenderLog`)."""
    config = render_config(preset)
    seed = config.seed if seed is None else seed
    manifest_path = Path(manifest)
    selected = select_categories(read_manifest(manifest_path), categories)
    records = assigned_records(selected, shard_index, num_shards)[:limit]
    out_path = Path(out)
    out_path.mkdir(parents=True, exist_ok=True)
    summary = RenderSummary(assigned=len(records))
    todo = [r for r in records if not (out_path / r.instance_id).is_dir()]
    summary.skipped = len(records) - len(todo)
    if not todo:
        return summary
    log = BlenderLog(log_path(out_path, shard_index, num_shards))
    with log, RenderScene(config.image_size, config.cycles_samples, config.max_bounces, log=log) as scene:
        def render_one(record: MeshRecord) -> int:
            sample = render_instance_views(scene, record, manifest_path, config, seed)
            write_sample_dir(sample, out_path)
            return sample.num_views

        render_each(todo, summary, "views", "views", render_one, log)
        summary.textures_unresolved = scene.textures_unresolved
    summary.log = log.path
    return summary
