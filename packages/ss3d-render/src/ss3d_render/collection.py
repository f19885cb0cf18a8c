"""In-the-wild style image collections (``ss3d-render collection``): for the chosen categories, images of each
instance from random *unknown* cameras, for self-training (which sees images and approximate masks only).

Per image: azimuth U(azimuth_deg), elevation U(collection_elevation_deg), distance U(collection_distance_range),
focal ``focal_px`` x U[1 - collection_focal_jitter, 1 + collection_focal_jitter], roll U[-r, r]; fresh random
lighting; optionally a procedural background behind the object (``background``) and a degraded mask
(``degrade``). Samples are ``kind = "image"`` without cameras. The true camera goes only to the evaluation sidecar
``<out>/cameras.jsonl`` (format ``ss3d-cameras`` of :mod:`ss3d_data.sidecar`: one ``{"format", "version", "key",
"intrinsics", "cam2world"}`` object per line, sorted by key), rebuilt at
the end of every run from one small file per image under ``<out>/.cameras/`` so that parallel processes and
resumed runs never write the same file concurrently.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ss3d_data.atomic import atomic_write_text
from ss3d_data.cameras import look_at_cam2world
from ss3d_data.config import RenderConfig, render_config
from ss3d_data.errors import Ss3dError
from ss3d_data.manifest import MeshRecord, read_manifest
from ss3d_data.schema import Sample, SampleInfo, make_key, write_sample_dir
from ss3d_data.sidecar import camera_line, write_cameras
from ss3d_render.cameras import intrinsics_matrix, sample_orbit
from ss3d_render.imaging import composite, degrade_mask, random_background
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

SIDECAR_NAME = "cameras.jsonl"
_PARTS_DIR = ".cameras"
_RETRIES = 10


def image_keys(instance_id: str, count: int) -> list[str]:
    """Sample keys of an instance's collection images: the instance id alone for one image, else ``<id>-vNN``."""
    return [instance_id] if count == 1 else [make_key(instance_id, f"v{j:02d}") for j in range(count)]


def render_instance_images(
    scene: RenderScene,
    record: MeshRecord,
    manifest_path: Path,
    config: RenderConfig,
    seed: int,
    background: bool,
    degrade: bool,
) -> list[tuple[Sample, np.ndarray, np.ndarray]]:
    """Render one instance's collection images: a list of (sample, intrinsics [3, 3], cam2world [4, 4]); the
    cameras are returned for the sidecar only, the samples carry none. Deterministic given (seed, instance)."""
    rng = instance_rng(seed, record.instance_id, "collection")
    size = config.image_size
    scene.load_object(record.resolve(manifest_path), record.matrix())
    scene.set_noise_seed(int(rng.integers(2**31)))
    results = []
    max_radius = round(config.collection_degrade_fraction * size)
    for key in image_keys(record.instance_id, config.collection_views_per_instance):
        lighting = scene.randomise_lighting(rng)
        jitter = config.collection_focal_jitter
        for _ in range(_RETRIES):
            eye = sample_orbit(
                rng, 1, config.azimuth_deg, config.collection_elevation_deg, config.collection_distance_range
            )[0]
            focal = config.focal_px * float(rng.uniform(1 - jitter, 1 + jitter))
            cam2world = look_at_cam2world(eye, roll_deg=float(rng.uniform(-1, 1) * config.collection_roll_deg))
            rgba = scene.render(cam2world, focal)
            if (rgba[..., 3] >= 128).any():
                break
        else:
            raise Ss3dError(f"{record.instance_id}: no camera out of {_RETRIES} shows the object")
        extra = {**scene.settings(), "seed": seed, "lighting": lighting}
        if background:
            backdrop, extra["background"] = random_background(rng, size)
            rgb, mask = composite(rgba, backdrop), rgba[..., 3].copy()
        else:
            rgb, mask = premultiply(rgba)
        if degrade:
            mask, extra["degrade"] = degrade_mask(mask, rng, max_radius)
        info = SampleInfo(
            kind="image",
            key=key,
            category=record.category,
            instance_id=record.instance_id,
            source=record.source,
            licence=record.licence,
            split=record.split,
            attribution=record.attribution,
            extra=extra,
        )
        sample = Sample(info, rgb[None], mask[None])
        sample.validate()
        results.append((sample, intrinsics_matrix(focal, size, size), cam2world))
    return results


def rebuild_sidecar(out: str | os.PathLike[str]) -> Path:
    """(Re)write ``out/cameras.jsonl`` from the per-image camera files of every process, sorted by key, keeping
    only images whose sample folder exists."""
    out_path = Path(out)
    parts = sorted((out_path / _PARTS_DIR).glob("*.json")) if (out_path / _PARTS_DIR).is_dir() else []
    rows = []
    for part in parts:
        if not (out_path / part.stem).is_dir():
            continue
        try:
            raw = json.loads(part.read_text(encoding="utf-8"))
            rows.append((raw["key"], raw["intrinsics"], raw["cam2world"]))
        except (ValueError, KeyError, TypeError) as err:
            raise Ss3dError(
                f"{part}: unreadable camera file ({err})", hint="delete it and its sample folder, then re-run"
            ) from None
    return write_cameras(out_path / SIDECAR_NAME, rows)


def render_collection(
    manifest: str | os.PathLike[str],
    out: str | os.PathLike[str],
    preset: str = "paper",
    categories: Sequence[str] | None = None,
    background: bool = False,
    degrade: bool = False,
    shard_index: int = 0,
    num_shards: int = 1,
    seed: int | None = None,
    limit: int | None = None,
    views_per_instance: int | None = None,
) -> RenderSummary:
    """Render the collection images of the selected categories into ``out/<key>/`` (``kind = "image"``),
    skipping instances whose images all exist, then rebuild the camera sidecar ``out/cameras.jsonl``. Blender's own
    output goes to ``out/blender.log`` (see :class:`~ss3d_render.jobs.BlenderLog`)."""
    config = render_config(preset)
    if views_per_instance is not None:
        if views_per_instance < 1:
            raise Ss3dError("views per instance must be at least 1")
        config = dataclasses.replace(config, collection_views_per_instance=views_per_instance)
    seed = config.seed if seed is None else seed
    manifest_path = Path(manifest)
    selected = select_categories(read_manifest(manifest_path), categories)
    records = assigned_records(selected, shard_index, num_shards)[:limit]
    out_path = Path(out)
    parts_dir = out_path / _PARTS_DIR
    parts_dir.mkdir(parents=True, exist_ok=True)
    summary = RenderSummary(assigned=len(records))
    count = config.collection_views_per_instance
    todo = [r for r in records if not all((out_path / k).is_dir() for k in image_keys(r.instance_id, count))]
    summary.skipped = len(records) - len(todo)
    if todo:
        log = BlenderLog(log_path(out_path, shard_index, num_shards))
        with log, RenderScene(config.image_size, config.cycles_samples, config.max_bounces, log=log) as scene:
            def render_one(record: MeshRecord) -> int:
                images = render_instance_images(scene, record, manifest_path, config, seed, background, degrade)
                for sample, intrinsics, cam2world in images:
                    # camera first: a sample folder that exists always has its camera on disk
                    atomic_write_text(parts_dir / f"{sample.info.key}.json",
                                      camera_line(sample.info.key, intrinsics, cam2world))
                    write_sample_dir(sample, out_path)
                return len(images)

            render_each(todo, summary, "collection", "img", render_one, log)
            summary.textures_unresolved = scene.textures_unresolved
        summary.log = log.path
    rebuild_sidecar(out_path)
    return summary
