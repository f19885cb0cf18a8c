"""Render throughput at 128 px: views per second end to end (import, lighting, renders, sample folders written),
the scene setup time per instance, and the ratio to the 15 views/s target.

    .venv/bin/python packages/ss3d-render/bench/bench_render.py [--preset paper] [--instances 6] [--views 20]
        [--manifest meshes.jsonl]   # real meshes (the first --instances records) instead of procedural ones

The preset's [render] section is used with image_size forced to 128 (focal scaled to keep its field of view).
Meshes are procedural (sphere, box, capsule, cylinder, ...) of a few thousand faces. As a machine reference the
script also measures a float32 matmul rate in the same run; the load average is printed because the machine may be
shared.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import trimesh

from ss3d_data.manifest import MeshRecord, canonical_matrix, read_manifest, write_manifest

TARGET_VIEWS_PER_S = 15.0
SIZE = 128


def _meshes() -> list[trimesh.Trimesh]:
    return [
        trimesh.creation.icosphere(subdivisions=4),
        trimesh.creation.box(extents=[1.0, 0.6, 0.8]),
        trimesh.creation.capsule(height=1.0, radius=0.4, count=[32, 32]),
        trimesh.creation.cylinder(radius=0.5, height=1.2, sections=64),
        trimesh.creation.cone(radius=0.5, height=1.0, sections=64),
        trimesh.creation.annulus(r_min=0.3, r_max=0.5, height=0.3, sections=64),
    ]


def _manifest(folder: Path, instances: int) -> Path:
    records = []
    shapes = _meshes()
    for i in range(instances):
        mesh = shapes[i % len(shapes)]
        path = folder / f"shape{i:03d}.obj"
        mesh.export(path)
        matrix = canonical_matrix(mesh.bounds[0], mesh.bounds[1], up_axis="z")
        records.append(MeshRecord(f"shape{i:03d}", "shape", "procedural", "CC0-1.0", "", path.name, len(mesh.faces),
                                  False, "train", tuple(tuple(float(x) for x in row) for row in matrix)))
    manifest = folder / "manifest.jsonl"
    write_manifest(manifest, records)
    return manifest


def _matmul_gflops(n: int = 1024, repeats: int = 5) -> float:
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a
    start = time.perf_counter()
    for _ in range(repeats):
        a @ a
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper", help="base preset whose [render] settings are measured")
    parser.add_argument("--instances", type=int, default=6, help="meshes rendered")
    parser.add_argument("--views", type=int, default=20, help="views per instance (paper: 20)")
    parser.add_argument("--manifest", type=Path, default=None, help="render these meshes instead of procedural ones")
    args = parser.parse_args()

    from ss3d_data.cameras import look_at_cam2world
    from ss3d_data.config import render_config
    from ss3d_render.cameras import sample_orbit
    from ss3d_render.jobs import quiet_stdout
    from ss3d_render.scene import RenderScene
    from ss3d_render.views import render_views

    base = render_config(args.preset)
    focal = base.focal_px * SIZE / base.image_size
    reference = _matmul_gflops()
    with tempfile.TemporaryDirectory(prefix="ss3d-bench-render-") as tmp:
        folder = Path(tmp)
        if args.manifest is None:
            manifest = _manifest(folder, args.instances)
        else:  # a copy with absolute paths, cut to --instances records
            records = [replace(r, path=str(r.resolve(args.manifest).resolve()))
                       for r in read_manifest(args.manifest)[: args.instances]]
            manifest = folder / "manifest.jsonl"
            write_manifest(manifest, records)
        meshes = read_manifest(manifest)
        preset = folder / "bench.toml"
        preset.write_text(f'[preset]\ninherit = "{args.preset}"\n\n[render]\nimage_size = {SIZE}\n'
                          f"focal_px = {focal}\nviews_per_instance = {args.views}\n")

        # Breakdown with the scene object itself: per instance, the import + lighting time and the first render
        # (which also uploads the new geometry to Cycles), against steady-state views.
        imports, firsts, views = [], [], []
        with RenderScene(SIZE, base.cycles_samples, base.max_bounces) as scene:
            rng = np.random.default_rng(0)
            for record in meshes:
                poses = [look_at_cam2world(e) for e in sample_orbit(rng, 5, base.azimuth_deg, base.elevation_deg,
                                                                    base.distance_range)]
                with quiet_stdout():
                    start = time.perf_counter()
                    scene.load_object(record.resolve(manifest), record.matrix())
                    scene.randomise_lighting(rng)
                    imports.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    scene.render(poses[0], focal)
                    firsts.append(time.perf_counter() - start)
                    for pose in poses[1:]:
                        start = time.perf_counter()
                        scene.render(pose, focal)
                        views.append(time.perf_counter() - start)
        setups = np.asarray(imports) + np.maximum(np.asarray(firsts) - np.median(views), 0.0)

        # End to end, as `ss3d-render views` runs (sample folders written).
        summary = render_views(manifest, folder / "out", preset=str(preset))

    rate = summary.views_per_second
    print(f"machine reference: float32 matmul {reference:.1f} GFLOP/s (1024^3, numpy); load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (the machine may be shared)")
    print(f"settings: preset {args.preset} at {SIZE} px, {base.cycles_samples} Cycles samples, "
          f"{base.max_bounces} bounces, {args.views} views x {len(meshes)} instances "
          f"({'procedural meshes' if args.manifest is None else args.manifest})")
    print(f"scene setup per instance: {np.mean(setups) * 1000:.1f} ms mean, {np.max(setups) * 1000:.1f} ms max "
          f"(import + lighting {np.mean(imports) * 1000:.1f} ms mean, plus the first render's excess over a view)")
    print(f"steady-state render: {np.median(views) * 1000:.1f} ms per view ({1 / np.median(views):.1f} views/s)")
    print(f"end to end: {summary.views} views in {summary.seconds:.2f} s = {rate:.1f} views/s; "
          f"target {TARGET_VIEWS_PER_S:.0f} views/s, ratio {rate / TARGET_VIEWS_PER_S:.2f}; "
          f"{rate / reference:.3f} views/s per matmul GFLOP/s")


if __name__ == "__main__":
    main()
