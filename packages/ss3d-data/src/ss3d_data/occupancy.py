"""Occupancy labels: the solid of each synthetic mesh, for pretraining's optional 3D supervision.

The paper supervises pretraining through rendered rays only. Its synthetic meshes are known, though, and points
labelled inside/outside teach the field's 3D shape directly, at a small fraction of the cost of rendering rays
(``pretrain.occupancy_weight`` in a preset; 0 in ``paper``). The labels are computed once, when ``views`` shards
are written from a mesh manifest, with the same ``to_canonical`` matrix the renderer used and the ray-vote inside
test of :mod:`ss3d_data.inside` that evaluation uses (robust to open and self-intersecting meshes).

A sample stores them as ``<key>.occupancy.json`` (``docs/formats.md``): ``{"resolution": R, "half_size": h,
"bits": base64(numpy.packbits(grid))}`` where ``grid`` is bool [R, R, R] indexed (x, y, z) in C order and voxel
(i, j, k) has its centre at ``-h + (i + 0.5) * 2h / R`` (likewise j, k). Points outside the box are outside.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass

import numpy as np

from ss3d_data.errors import Ss3dError
from ss3d_data.inside import Grid, solid_voxels

HALF_SIZE = 0.55  # the canonical object box is [-0.5, 0.5]^3; a margin keeps surfaces on it inside the grid


@dataclass(frozen=True)
class Occupancy:
    """A solid occupancy grid ``grid`` bool [R, R, R] (x, y, z) over the box [-half_size, half_size]^3."""

    grid: np.ndarray
    half_size: float = HALF_SIZE

    @property
    def resolution(self) -> int:
        return int(self.grid.shape[0])

    @property
    def voxel(self) -> float:
        return 2.0 * self.half_size / self.resolution

    def to_json(self) -> bytes:
        bits = base64.b64encode(np.packbits(self.grid.astype(bool).reshape(-1))).decode("ascii")
        return json.dumps({"resolution": self.resolution, "half_size": self.half_size, "bits": bits}).encode()

    @classmethod
    def from_json(cls, data: bytes, what: str = "occupancy") -> "Occupancy":
        """Decode and validate; :class:`Ss3dError` naming ``what`` when malformed."""
        try:
            record = json.loads(data)
            resolution, half = int(record["resolution"]), float(record["half_size"])
            packed = np.frombuffer(base64.b64decode(record["bits"], validate=True), dtype=np.uint8)
        except (ValueError, KeyError, TypeError) as err:
            raise Ss3dError(f"{what} is malformed ({type(err).__name__}: {err})") from None
        if not (2 <= resolution <= 512 and np.isfinite(half) and half > 0):
            raise Ss3dError(f"{what}: resolution {resolution} or half_size {half} out of range")
        count = resolution ** 3
        if len(packed) != (count + 7) // 8:
            raise Ss3dError(f"{what}: {len(packed)} bytes of bits for a {resolution}^3 grid")
        grid = np.unpackbits(packed, count=count).astype(bool).reshape((resolution,) * 3)
        return cls(grid, half)

    def lookup(self, points: np.ndarray) -> np.ndarray:
        """points [N, 3] -> inside [N] bool (the voxel each point falls in; outside the box is outside)."""
        index = np.floor((points + self.half_size) / self.voxel).astype(np.int64)
        valid = np.all((index >= 0) & (index < self.resolution), axis=1)
        inside = np.zeros(len(points), dtype=bool)
        i = index[valid]
        inside[valid] = self.grid[i[:, 0], i[:, 1], i[:, 2]]
        return inside

    def boundary(self) -> np.ndarray:
        """[M, 3] indices of voxels next to a voxel of the other label (6-neighbourhood): where the surface is."""
        g = np.pad(self.grid, 1, mode="constant")
        core = g[1:-1, 1:-1, 1:-1]
        edge = np.zeros_like(core)
        for axis in range(3):
            for step in (-1, 1):
                edge |= np.roll(g, step, axis=axis)[1:-1, 1:-1, 1:-1] != core
        return np.argwhere(edge)

    def sample(self, count: int, near_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``count`` labelled points: a ``near_fraction`` share spread around the surface (uniform in a boundary voxel
        and its neighbours), the rest uniform in the box. -> points float32 [count, 3], labels float32 [count]
        (1 inside, 0 outside)."""
        near = int(round(count * near_fraction))
        cells = self.boundary()
        if len(cells) == 0:
            near = 0
        uniform = rng.uniform(-self.half_size, self.half_size, size=(count - near, 3))
        picked = cells[rng.integers(len(cells), size=near)] if near else np.zeros((0, 3))
        around = -self.half_size + (picked + 0.5 + rng.uniform(-1.5, 1.5, size=(near, 3))) * self.voxel
        points = np.concatenate([around, uniform]).astype(np.float32)
        return points, self.lookup(points).astype(np.float32)


def mesh_occupancy(path: str | os.PathLike[str], to_canonical: np.ndarray, resolution: int,
                   half_size: float = HALF_SIZE) -> Occupancy:
    """The solid of the mesh file ``path`` moved into the canonical frame by ``to_canonical`` [4, 4]."""
    from ss3d_data.meshes import load_geometry

    mesh, _ = load_geometry(path)
    if len(mesh.faces) == 0:
        raise Ss3dError(f"{path}: empty mesh, no occupancy")
    matrix = np.asarray(to_canonical, dtype=np.float64)
    vertices = np.asarray(mesh.vertices, dtype=np.float64) @ matrix[:3, :3].T + matrix[:3, 3]
    grid = Grid(np.full(3, -half_size), 2.0 * half_size / resolution, resolution)
    return Occupancy(solid_voxels(vertices[np.asarray(mesh.faces)], grid), half_size)
