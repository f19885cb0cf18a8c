"""Shapes under evaluation: triangle meshes or point clouds, loaded with trimesh, checked, and sampled.

A :class:`Shape` is what the metrics consume: ``vertices`` [V, 3] float64 plus ``faces`` [F, 3] int64 (a mesh)
or ``faces`` None (a point cloud, e.g. a scanned ground truth). Empty or non-finite shapes are refused with an
:class:`Ss3dError` naming the file, so an evaluation row can report why it failed.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

from ss3d_data.atomic import atomic_write_bytes
from ss3d_data.errors import EmptySurface, Ss3dError

MESH_SUFFIXES = (".ply", ".obj", ".off", ".glb", ".gltf", ".stl")


@dataclass(frozen=True)
class Shape:
    """A mesh (``faces`` [F, 3]) or a point cloud (``faces`` None); ``vertices`` [V, 3] float64."""

    vertices: np.ndarray
    faces: np.ndarray | None
    name: str = ""

    @property
    def is_mesh(self) -> bool:
        return self.faces is not None

    def transformed(self, matrix: np.ndarray) -> "Shape":
        """The shape under the 4x4 affine ``matrix`` (applied to column vectors: x' = M[:3,:3] x + M[:3,3])."""
        v = self.vertices @ matrix[:3, :3].T + matrix[:3, 3]
        faces = self.faces
        if faces is not None and np.linalg.det(matrix[:3, :3]) < 0:
            faces = faces[:, ::-1]  # a reflection flips orientation; keep outward normals outward
        return Shape(v, faces, self.name)

    def bounds(self) -> np.ndarray:
        """[2, 3]: minimum and maximum corner."""
        return np.stack([self.vertices.min(0), self.vertices.max(0)])


def make_shape(vertices: np.ndarray, faces: np.ndarray | None, name: str = "") -> Shape:
    """Validate and wrap arrays; drops degenerate (zero-area) faces; refuses empty or non-finite shapes."""
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    label = name or "shape"
    if len(v) == 0:
        raise EmptySurface(f"{label}: empty (no vertices)")
    if not np.isfinite(v).all():
        raise Ss3dError(f"{label}: has non-finite vertex coordinates")
    if faces is None:
        return Shape(v, None, name)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise Ss3dError(f"{label}: face indices out of range")
    if len(f):
        tri = v[f]
        area2 = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
        f = f[area2 > 1e-14]
    if len(f) == 0:
        raise EmptySurface(f"{label}: empty mesh (no faces with area, no surface)")
    return Shape(v, f, name)


def load_shape(path: str | os.PathLike[str], matrix: np.ndarray | None = None) -> Shape:
    """Read a mesh or point cloud file (PLY, OBJ, OFF, GLB, STL ...), optionally moved by a 4x4 ``matrix``."""
    p = Path(path)
    if not p.is_file():
        raise Ss3dError(f"{p}: no such mesh file")
    try:
        loaded = trimesh.load(p, process=False)
    except Exception as err:  # trimesh raises many types for unreadable files
        raise Ss3dError(f"{p}: not a readable mesh ({type(err).__name__}: {err})") from None
    if isinstance(loaded, trimesh.Scene):
        meshes = [g for g in loaded.dump() if isinstance(g, trimesh.Trimesh)] if loaded.geometry else []
        if not meshes:
            raise EmptySurface(f"{p}: empty mesh (the scene holds no triangles)")
        loaded = trimesh.util.concatenate(meshes)
    if isinstance(loaded, trimesh.Trimesh):
        shape = make_shape(loaded.vertices, loaded.faces, str(p)) if len(loaded.faces) else None
        if shape is None:
            if len(loaded.vertices) == 0:
                raise EmptySurface(f"{p}: empty mesh (no vertices)")
            shape = make_shape(loaded.vertices, None, str(p))
    elif isinstance(loaded, trimesh.PointCloud):
        shape = make_shape(loaded.vertices, None, str(p))
    else:
        raise Ss3dError(f"{p}: holds neither triangles nor points ({type(loaded).__name__})")
    return shape.transformed(matrix) if matrix is not None else shape


def save_mesh(shape: Shape, path: str | os.PathLike[str]) -> None:
    """Write a mesh as binary PLY, atomically."""
    if shape.faces is None:
        raise Ss3dError(f"{path}: only meshes can be saved, not point clouds")
    data = trimesh.Trimesh(shape.vertices, shape.faces, process=False).export(file_type="ply")
    atomic_write_bytes(path, data)


def stable_seed(seed: int, *parts: str) -> int:
    """A seed derived from ``seed`` and text (e.g. a sample key), identical across runs and machines."""
    return (seed * 1_000_003 + zlib.crc32("/".join(parts).encode())) % (2**32)


def sample_surface(shape: Shape, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` points [count, 3] uniform on the surface (area-weighted); for a point cloud, ``count`` of its
    points drawn without replacement (all of them, in a random order, when it has fewer)."""
    return sample_with_normals(shape, count, rng)[0]


def sample_with_normals(shape: Shape, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`sample_surface`, plus unit normals [count, 3]: the face normal for a mesh, for a point cloud
    the direction of least spread of the 12 nearest points (sign arbitrary; only the normal line is used)."""
    if shape.faces is None:
        n = len(shape.vertices)
        idx = rng.permutation(n)[:count] if n > count else rng.permutation(n)
        return shape.vertices[idx], _cloud_normals(shape.vertices, idx)
    tri = shape.vertices[shape.faces]  # [F, 3, 3]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(cross, axis=1)
    face = rng.choice(len(tri), size=count, p=area / area.sum())
    u, v = rng.random(count), rng.random(count)
    flip = u + v > 1  # fold the unit square onto the triangle: uniform barycentric coordinates
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    t = tri[face]
    points = t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])
    return points, cross[face] / area[face, None]


def _cloud_normals(points: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """[len(idx), 3] normals of ``points[idx]`` from the local covariance of their nearest neighbours."""
    from scipy.spatial import cKDTree  # local import: only point clouds need it here

    k = min(12, len(points))
    _, nn = cKDTree(points).query(points[idx], k=k)
    neigh = points[np.asarray(nn).reshape(len(idx), k)]
    centred = neigh - neigh.mean(1, keepdims=True)
    _, vecs = np.linalg.eigh(np.einsum("nki,nkj->nij", centred, centred))
    return vecs[:, :, 0]
