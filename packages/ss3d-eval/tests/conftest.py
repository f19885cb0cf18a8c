"""Shared small shapes for the ss3d-eval tests."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from ss3d_eval.config import eval_config
from ss3d_eval.shapes import Shape, make_shape


def shape_of(mesh: trimesh.Trimesh) -> Shape:
    return make_shape(mesh.vertices, mesh.faces, "test")


def asymmetric_mesh() -> trimesh.Trimesh:
    """An object with no symmetry: a sphere, an off-centre box and a slanted rod (overlapping closed parts)."""
    body = trimesh.creation.icosphere(3, 0.3)
    box = trimesh.creation.box((0.5, 0.3, 0.7))
    box.apply_translation([0.2, 0.1, 0.0])
    rod = trimesh.creation.cylinder(0.05, 0.6)
    rod.apply_transform(trimesh.transformations.rotation_matrix(0.5, [1, 0, 0]))
    rod.apply_translation([-0.3, 0.0, 0.1])
    return trimesh.util.concatenate([body, box, rod])


def winding_numbers(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Brute-force generalized winding numbers (Jacobson et al. 2013): solid angles summed over every triangle.
    ``points`` [P, 3], ``triangles`` [F, 3, 3] -> [P]. Independent of the ray voting under test."""
    if len(points) > 256:  # bound the [P, F, 3] temporaries
        return np.concatenate([winding_numbers(points[i : i + 256], triangles) for i in range(0, len(points), 256)])
    a, b, c = (triangles[None, :, i] - points[:, None] for i in range(3))
    la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (a, b, c))
    det = np.einsum("pfi,pfi->pf", a, np.cross(b, c))
    dot = lambda u, v: np.einsum("pfi,pfi->pf", u, v)  # noqa: E731
    den = la * lb * lc + dot(a, b) * lc + dot(b, c) * la + dot(c, a) * lb
    return np.arctan2(det, den).sum(1) / (2 * np.pi)


@pytest.fixture
def asymmetric():
    return asymmetric_mesh()


@pytest.fixture
def gwn():
    return winding_numbers


@pytest.fixture
def cfg():
    return eval_config("paper")


@pytest.fixture
def tiny_cfg():
    return eval_config("tiny")
