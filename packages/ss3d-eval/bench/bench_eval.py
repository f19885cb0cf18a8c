"""Benchmark: seconds per shape of IoU and of Chamfer/F-score, each with the full alignment, at a preset's settings.

Shapes are blobby implicit solids (unions of random ellipsoids) meshed with marching cubes: the prediction at the
extraction resolution of the preset (as ss3d-model produces them), the ground truth at another resolution, moved
by a random similarity and slightly deformed, so alignment has real work to do. The machine's own float64 matmul
rate, measured in the same run, is printed as the reference (the machine may be shared; compare ratios).

    .venv/bin/python packages/ss3d-eval/bench/bench_eval.py [--preset paper] [--shapes 6]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from skimage.measure import marching_cubes

from ss3d_data.presets import load_preset
from ss3d_eval.align import quaternion_to_matrix
from ss3d_eval.config import eval_config
from ss3d_eval.metrics import score
from ss3d_eval.shapes import Shape, make_shape
from ss3d_model.config import ExtractConfig


def blob_mesh(centres: np.ndarray, radii: np.ndarray, resolution: int, wobble: float = 0.0) -> Shape:
    """Marching-cubes mesh of a union of ellipsoids over [-0.55, 0.55]^3 at ``resolution``^3."""
    axis = np.linspace(-0.55, 0.55, resolution)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    pts = np.stack([x, y, z], -1)
    field = np.full(x.shape, np.inf)
    for c, r in zip(centres, radii):
        field = np.minimum(field, np.linalg.norm((pts - c) / r, axis=-1) - 1)
    field += wobble * np.sin(9 * x) * np.sin(7 * y) * np.sin(8 * z)
    verts, faces, _, _ = marching_cubes(field, 0.0, spacing=(axis[1] - axis[0],) * 3)
    return make_shape(verts - 0.55, faces)


def matmul_gflops(n: int = 1024, repeats: int = 3) -> float:
    a = np.random.default_rng(0).random((n, n))
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper", help="preset whose [eval] and [extract] settings are used")
    parser.add_argument("--shapes", type=int, default=6, help="number of shape pairs")
    args = parser.parse_args()
    cfg = eval_config(args.preset)
    resolution = ExtractConfig.from_preset(load_preset(args.preset)).resolution
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(args.shapes):
        k = rng.integers(2, 5)
        centres, radii = rng.uniform(-0.2, 0.2, (k, 3)), rng.uniform(0.1, 0.3, (k, 3))
        pred = blob_mesh(centres, radii, resolution)
        gt = blob_mesh(centres, radii * rng.uniform(0.9, 1.1, (k, 3)), 64, wobble=0.02)
        m = np.eye(4)
        m[:3, :3] = rng.uniform(0.7, 1.4) * quaternion_to_matrix(rng.normal(size=(1, 4)))[0]
        m[:3, 3] = rng.normal(scale=0.2, size=3)
        pairs.append((pred.transformed(m), gt))
    gflops = matmul_gflops()
    faces = np.mean([len(p.faces) for p, _ in pairs]), np.mean([len(g.faces) for _, g in pairs])
    print(f"preset {args.preset}: iou_resolution {cfg.iou_resolution}, chamfer_points {cfg.chamfer_points}, "
          f"align {cfg.align} ({cfg.rotation_search} rotations, {cfg.align_points} points, "
          f"{cfg.icp_iterations} ICP steps, {cfg.refine_candidates} refined)")
    print(f"{args.shapes} pairs; mean faces: prediction {faces[0]:.0f} (marching cubes {resolution}^3), "
          f"ground truth {faces[1]:.0f}")
    print(f"reference: float64 matmul 1024^3 {gflops:.1f} GFLOP/s")
    for metric in ("iou", "chamfer"):
        times, values = [], []
        for i, (pred, gt) in enumerate(pairs):
            start = time.perf_counter()
            result = score(pred, gt, cfg, f"bench{i}", (metric,))
            times.append(time.perf_counter() - start)
            values.append(result["iou"] if metric == "iou" else result["chamfer_l1"])
        per_shape = float(np.mean(times))
        print(f"{metric:8s} with alignment: {per_shape:.3f} s/shape (max {max(times):.3f}), "
              f"= {per_shape * gflops:.1f} GFLOP-equivalents of matmul; mean score {np.mean(values):.4f}")


if __name__ == "__main__":
    main()
