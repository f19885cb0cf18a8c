"""The metrics: volumetric IoU, Chamfer distance and F-score, each after the alignment of :mod:`ss3d_eval.align`.

Definitions (normative text with examples: ``docs/evaluation.md``); distances are in canonical units (the ground
truth's longest bounding-box side is 1):

- IoU = |P & G| / |P | G| over the voxel centres of one cubic ``iou_resolution``^3 grid that holds both shapes
  (5% margin), inside/outside from :func:`voxelize` (the multi-direction ray vote of
  :mod:`ss3d_data.inside`).
- Chamfer-L1 = (mean_p min_g |p - g| + mean_g min_p |g - p|) / 2, plain (unsquared) Euclidean distances between
  ``chamfer_points`` points sampled uniformly on each surface (all ground-truth points, in a random subset of
  ``chamfer_points``, when it is a point cloud). ``chamfer_l2`` is the same with squared distances.
- F-score(t) = 2 P R / (P + R) with precision P = share of predicted points within t of the ground truth and
  recall R = share of ground-truth points within t of the prediction (0 when both are 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from ss3d_data.errors import Ss3dError
from ss3d_data.inside import Grid, grid_around, solid_voxels
from ss3d_eval.align import Similarity, align
from ss3d_eval.config import EvalConfig
from ss3d_eval.shapes import Shape, sample_surface, sample_with_normals, stable_seed

METRICS = ("iou", "chamfer")


def voxelize(shape: Shape, grid: Grid) -> np.ndarray:
    """Occupancy [R, R, R] bool (indexed x, y, z) of the solid bounded by mesh ``shape`` on ``grid``."""
    if shape.faces is None:
        raise Ss3dError(f"{shape.name or 'shape'}: a point cloud has no inside; IoU needs a mesh")
    return solid_voxels(shape.vertices[shape.faces], grid)


def volume_iou(pred: Shape, gt: Shape, resolution: int) -> float:
    """IoU of the solids of two meshes on one shared ``resolution``^3 grid (see the module docstring)."""
    bounds = np.concatenate([pred.bounds(), gt.bounds()])
    grid = grid_around(np.stack([bounds.min(0), bounds.max(0)]), resolution)
    a, b = voxelize(pred, grid), voxelize(gt, grid)
    union = int(np.logical_or(a, b).sum())
    return float(np.logical_and(a, b).sum()) / union if union else 0.0


@dataclass(frozen=True)
class PointScores:
    chamfer_l1: float                         # mean of the two directions' mean distances
    chamfer_l2: float                         # the same with squared distances
    fscore: dict[str, float]                  # threshold (as text, e.g. "0.01") -> F-score
    precision: dict[str, float] = field(default_factory=dict)
    recall: dict[str, float] = field(default_factory=dict)


def point_scores(pred_points: np.ndarray, gt_points: np.ndarray, thresholds: tuple[float, ...]) -> PointScores:
    """Chamfer and F-scores between point sets [N, 3] and [M, 3]."""
    d_pred, _ = cKDTree(gt_points).query(pred_points)   # [N] prediction -> ground truth
    d_gt, _ = cKDTree(pred_points).query(gt_points)     # [M] ground truth -> prediction
    fscore, precision, recall = {}, {}, {}
    for t in thresholds:
        p, r = float((d_pred < t).mean()), float((d_gt < t).mean())
        name = f"{t:g}"
        precision[name], recall[name] = p, r
        fscore[name] = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return PointScores(
        chamfer_l1=0.5 * float(d_pred.mean() + d_gt.mean()),
        chamfer_l2=0.5 * float((d_pred**2).mean() + (d_gt**2).mean()),
        fscore=fscore, precision=precision, recall=recall,
    )


def alignment_for(pred: Shape, gt: Shape, cfg: EvalConfig, key: str) -> tuple[Similarity, float]:
    """The similarity aligning ``pred`` to ``gt`` under ``cfg`` (deterministic given ``cfg.seed`` and ``key``)."""
    pred_pts, pred_normals = sample_with_normals(
        pred, cfg.align_points, np.random.default_rng(stable_seed(cfg.seed, key, "align-pred")))
    gt_pts, gt_normals = sample_with_normals(
        gt, cfg.align_points, np.random.default_rng(stable_seed(cfg.seed, key, "align-gt")))
    return align(pred_pts, gt_pts, cfg.align, cfg.rotation_search, cfg.icp_iterations, cfg.refine_candidates,
                 pred_normals, gt_normals)


def score(pred: Shape, gt: Shape, cfg: EvalConfig, key: str, metrics: tuple[str, ...] = METRICS,
          aligned: bool = True) -> dict:
    """Align ``pred`` to ``gt`` (unless ``aligned`` is False or ``cfg.align`` is "none"), then compute
    ``metrics``. Returns a JSON-ready dict: ``iou``, ``chamfer_l1``, ``chamfer_l2``, ``fscore``, ``precision``,
    ``recall`` (those asked for) and ``align`` (scale, 4x4 matrix, the alignment's own distance)."""
    if aligned and cfg.align != "none":
        transform, residual = alignment_for(pred, gt, cfg, key)
    else:
        transform, residual = Similarity.identity(), float("nan")
    moved = pred.transformed(transform.matrix())
    out: dict = {"align": {"mode": cfg.align if aligned else "none", "scale": transform.scale,
                           "matrix": transform.matrix().round(9).tolist(),
                           "residual": None if np.isnan(residual) else residual}}
    if "iou" in metrics:
        out["iou"] = volume_iou(moved, gt, cfg.iou_resolution)
    if "chamfer" in metrics:
        rng_p = np.random.default_rng(stable_seed(cfg.seed, key, "chamfer-pred"))
        rng_g = np.random.default_rng(stable_seed(cfg.seed, key, "chamfer-gt"))
        scores = point_scores(sample_surface(moved, cfg.chamfer_points, rng_p),
                              sample_surface(gt, cfg.chamfer_points, rng_g), cfg.fscore_thresholds)
        out.update(chamfer_l1=scores.chamfer_l1, chamfer_l2=scores.chamfer_l2, fscore=scores.fscore,
                   precision=scores.precision, recall=scores.recall)
    return out
