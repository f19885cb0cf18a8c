"""Aligning a prediction to its ground truth before scoring: a coarse rotation search, then ICP with scale.

The paper scores Pascal3D+ IoU "after a search over scale, rotation and translation" (the CMR protocol) and aligns
CO3D predictions "in a similar way". ss3d does the same for every method, deterministically:

1. both point sets are centred on their centroids and the prediction is scaled to the ground truth's RMS radius;
2. coarse search: candidate rotations are the identity, ``rotation_search`` quasi-uniform rotations of SO(3)
   (a super-Fibonacci spiral) and the 4 proper rotations that map the prediction's principal axes onto the
   ground truth's; each is scored by the symmetric mean nearest-neighbour distance;
3. local refinement: the ``refine_candidates`` best start ICP with scale (symmetric nearest-neighbour
   correspondences, the closed-form similarity of Umeyama 1991 each step); the lowest final distance wins;
4. when surface normals are given, a few point-to-plane steps with scale finish the winner: random samples of
   two surfaces never coincide point for point, and measuring only the offset along the normal removes the
   sliding that keeps point-to-point ICP a fraction of the sample spacing away from the true pose.

``scale_translation`` (U-CMR's fit) keeps the rotation at identity; ``none`` returns the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ss3d_data.errors import Ss3dError

_PHI = np.sqrt(2.0)
_PSI = 1.533751168755204288118041  # root of x^4 = x + 4, the super-Fibonacci constant


@dataclass(frozen=True)
class Similarity:
    """x -> scale * rotation @ x + translation; ``rotation`` [3, 3] proper orthogonal, ``translation`` [3]."""

    scale: float
    rotation: np.ndarray
    translation: np.ndarray

    @classmethod
    def identity(cls) -> "Similarity":
        return cls(1.0, np.eye(3), np.zeros(3))

    def apply(self, points: np.ndarray) -> np.ndarray:
        """[N, 3] -> [N, 3]."""
        return self.scale * points @ self.rotation.T + self.translation

    def matrix(self) -> np.ndarray:
        """The 4x4 homogeneous matrix."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m


def quasi_uniform_rotations(count: int) -> np.ndarray:
    """[count, 3, 3] rotations spread evenly over SO(3) (super-Fibonacci spiral, Alexa 2022); deterministic."""
    s = np.arange(count) + 0.5
    r, big_r = np.sqrt(s / count), np.sqrt(1 - s / count)
    alpha, beta = 2 * np.pi * s / _PHI, 2 * np.pi * s / _PSI
    q = np.stack([r * np.sin(alpha), r * np.cos(alpha), big_r * np.sin(beta), big_r * np.cos(beta)], axis=1)
    return quaternion_to_matrix(q)


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternions [N, 4] (x, y, z, w) -> rotation matrices [N, 3, 3]."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    x, y, z, w = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], axis=1)


def _principal_axes(points: np.ndarray) -> np.ndarray:
    """[3, 3] eigenvectors (columns, largest variance first) of the centred points' covariance."""
    centred = points - points.mean(0)
    _, vecs = np.linalg.eigh(centred.T @ centred)
    return vecs[:, ::-1]


def pca_rotations(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[4, 3, 3]: the proper rotations mapping ``source``'s principal axes onto ``target``'s (the sign ambiguity
    of each axis leaves four)."""
    es, et = _principal_axes(source), _principal_axes(target)
    out = []
    for signs in ((1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1)):
        r = et @ np.diag(signs) @ es.T
        if np.linalg.det(r) < 0:
            r = et @ np.diag([signs[0], signs[1], -signs[2]]) @ es.T
        out.append(r)
    return np.stack(out)


def fit_similarity(source: np.ndarray, target: np.ndarray, rotate: bool = True) -> Similarity:
    """Least-squares similarity taking paired points ``source`` [N, 3] onto ``target`` [N, 3] (Umeyama).
    With ``rotate`` False the rotation stays the identity (scale and translation only)."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    s, t = source - mu_s, target - mu_t
    var_s = float((s * s).sum())
    if var_s <= 0:
        raise Ss3dError("cannot align: the points all coincide")
    if rotate:
        u, d, vt = np.linalg.svd(t.T @ s)
        flip = np.diag([1.0, 1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
        rotation = u @ flip @ vt
        scale = float((d * np.diag(flip)).sum()) / var_s
    else:
        rotation = np.eye(3)
        scale = float((s * t).sum()) / var_s
    scale = max(scale, 1e-9)
    return Similarity(scale, rotation, mu_t - scale * rotation @ mu_s)


def symmetric_distance(points: np.ndarray, target: np.ndarray, target_tree: cKDTree) -> float:
    """Mean of the two mean nearest-neighbour distances between ``points`` and ``target``."""
    d1, _ = target_tree.query(points)
    d2, _ = cKDTree(points).query(target)
    return 0.5 * float(d1.mean() + d2.mean())


def icp(source: np.ndarray, target: np.ndarray, target_tree: cKDTree, start: Similarity, iterations: int,
        rotate: bool = True) -> tuple[Similarity, float]:
    """ICP with scale from ``start``: each step pairs every point with its nearest neighbour on the other set
    (both directions, so scale cannot collapse) and fits the similarity of all pairs. Returns (transform,
    final symmetric distance)."""
    current = start
    best: tuple[Similarity, float] | None = None
    for _ in range(iterations + 1):
        moved = current.apply(source)
        d_target, to_target = target_tree.query(moved)
        d_source, to_source = cKDTree(moved).query(target)
        distance = 0.5 * float(d_target.mean() + d_source.mean())  # the current pose's score, for free
        if best is not None and distance > best[1] - 1e-7 * best[1] - 1e-12:
            break  # converged (or a step made it worse: keep the previous pose)
        best = (current, distance)
        src = np.concatenate([source, source[to_source]])
        dst = np.concatenate([target[to_target], target])
        current = fit_similarity(src, dst, rotate)
    assert best is not None
    return best


def _rotvec_matrix(omega: np.ndarray) -> np.ndarray:
    """Rodrigues: rotation vector [3] -> [3, 3]."""
    angle = float(np.linalg.norm(omega))
    if angle < 1e-15:
        return np.eye(3)
    k = omega / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def point_to_plane(source: np.ndarray, source_normals: np.ndarray, target: np.ndarray, target_normals: np.ndarray,
                   target_tree: cKDTree, start: Similarity, iterations: int, rotate: bool = True) -> Similarity:
    """Symmetric point-to-plane ICP with scale from ``start``. Each step linearises x -> (1 + sigma)(x + omega x x)
    + tau around the current pose and solves the least squares of the offsets along the normals of both
    directions' nearest-neighbour pairs for (sigma, omega, tau)."""
    current = start
    for _ in range(iterations):
        moved = current.apply(source)
        moved_normals = source_normals @ current.rotation.T
        _, to_target = target_tree.query(moved)
        _, to_source = cKDTree(moved).query(target)
        x = np.concatenate([moved, moved[to_source]])                   # points that move
        y = np.concatenate([target[to_target], target])                 # points they should lie on
        n = np.concatenate([target_normals[to_target], moved_normals[to_source]])
        columns = [(n * x).sum(1)[:, None]]                              # d/dsigma
        if rotate:
            columns.append(np.cross(x, n))                                # d/domega
        columns.append(n)                                                 # d/dtau
        jac = np.concatenate(columns, axis=1)
        residual = (n * (x - y)).sum(1)
        step, *_ = np.linalg.lstsq(jac, -residual, rcond=None)
        sigma = float(step[0])
        omega = step[1:4] if rotate else np.zeros(3)
        tau = step[-3:]
        rot = _rotvec_matrix(omega)
        current = Similarity(current.scale * (1 + sigma), rot @ current.rotation,
                             (1 + sigma) * rot @ current.translation + tau)
        if np.abs(step).max() < 1e-9:
            break
    return current


def align(source: np.ndarray, target: np.ndarray, mode: str = "similarity", rotation_search: int = 24,
          icp_iterations: int = 30, refine_candidates: int = 3, source_normals: np.ndarray | None = None,
          target_normals: np.ndarray | None = None) -> tuple[Similarity, float]:
    """The similarity that best aligns point set ``source`` [N, 3] (the prediction) to ``target`` [M, 3]
    (the ground truth), and the symmetric mean nearest-neighbour distance it reaches. Unit normals [N, 3] and
    [M, 3], when given, enable the final point-to-plane refinement."""
    if len(source) < 3 or len(target) < 3:
        raise Ss3dError("cannot align: fewer than 3 points")
    tree = cKDTree(target)
    if mode == "none":
        ident = Similarity.identity()
        return ident, symmetric_distance(source, target, tree)
    if mode not in ("similarity", "scale_translation"):
        raise Ss3dError(f"unknown alignment mode {mode!r}")
    c_s, c_t = source.mean(0), target.mean(0)
    rms_s = np.sqrt(((source - c_s) ** 2).sum(1).mean())
    rms_t = np.sqrt(((target - c_t) ** 2).sum(1).mean())
    if rms_s <= 0 or rms_t <= 0:
        raise Ss3dError("cannot align: a shape has no extent")
    scale0 = float(rms_t / rms_s)
    rotate = mode == "similarity"
    rotations = [np.eye(3)[None]]
    if rotate:
        rotations += [quasi_uniform_rotations(rotation_search), pca_rotations(source, target)]
    candidates = []
    for r in np.concatenate(rotations):
        start = Similarity(scale0, r, c_t - scale0 * r @ c_s)
        candidates.append((symmetric_distance(start.apply(source), target, tree), len(candidates), start))
    candidates.sort(key=lambda item: (item[0], item[1]))
    results = [icp(source, target, tree, start, icp_iterations, rotate)
               for _, _, start in candidates[:refine_candidates]]
    best, distance = min(results, key=lambda item: item[1])
    if source_normals is not None and target_normals is not None and icp_iterations > 0:
        refined = point_to_plane(source, source_normals, target, target_normals, tree, best,
                                 max(icp_iterations // 3, 1), rotate)
        refined_distance = symmetric_distance(refined.apply(source), target, tree)
        # Point-to-point distances are dominated by sampling noise near the optimum, so they cannot rank the two
        # poses finely; they only guard against a refinement that went astray.
        if refined_distance <= 1.02 * distance:
            best, distance = refined, refined_distance
    return best, distance
