"""Solid voxelisation of triangle meshes that need not be watertight: multi-direction ray voting.

For every voxel centre, six axis-aligned rays (+-X, +-Y, +-Z) each cast one vote. A ray votes "inside" when the
*signed* number of surface crossings along it is non-zero (a crossing counts +1 or -1 by the sign of the face
normal along the ray): this is the winding number measured along that ray. Compared with plain crossing parity it
stays right where closed parts overlap (a chair leg pushed into its seat: winding 2, parity would say outside) and
for meshes whose faces all point inwards; a hole or a few flipped faces only corrupt the rays that meet them, and
the majority vote (at least 4 of 6) outvotes those.

All rays of one axis run along the columns of the grid, so the work is one 2-D rasterisation of the triangles per
axis (which columns a triangle covers, and at which depth) plus a cumulative sum along each column:
O(faces x covered columns + voxels), no per-voxel triangle loop. The columns are shifted by a tiny irrational
fraction of a voxel so rays do not pass exactly through the edges of axis-aligned geometry.

Owned by ss3d-data because two packages need one inside test: ss3d-data labels training points with it when it
writes shards, and ss3d-eval voxelises meshes for IoU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ss3d_data.errors import Ss3dError

# Tiny ray offsets (fractions of a voxel) that keep rays off edges and vertices lying on grid lines.
_JITTER = (1.7320508e-5, 2.2360679e-5)
_CHUNK = 2_000_000  # candidate (triangle, column) pairs processed at once, bounds memory


@dataclass(frozen=True)
class Grid:
    """A cubic grid of ``resolution``^3 voxels of side ``voxel``; voxel (i, j, k) has its centre at
    ``origin + (i + 0.5, j + 0.5, k + 0.5) * voxel``."""

    origin: np.ndarray  # [3]
    voxel: float
    resolution: int

    def centres(self) -> np.ndarray:
        """[R, R, R, 3] voxel centres."""
        axis = (np.arange(self.resolution) + 0.5) * self.voxel
        gx, gy, gz = np.meshgrid(axis, axis, axis, indexing="ij")
        return np.stack([gx, gy, gz], axis=-1) + self.origin


def grid_around(bounds: np.ndarray, resolution: int, padding: float = 0.05) -> Grid:
    """The cubic grid that holds the box ``bounds`` [2, 3] (min, max), centred on it, with a relative margin."""
    lo, hi = np.asarray(bounds[0], float), np.asarray(bounds[1], float)
    side = float((hi - lo).max()) * (1 + 2 * padding)
    if not np.isfinite(side) or side <= 0:
        raise Ss3dError("cannot voxelise a shape with an empty bounding box")
    centre = (lo + hi) / 2
    return Grid(centre - side / 2, side / resolution, resolution)


def _axis_votes(tri: np.ndarray, grid: Grid, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Signed crossing counts below and above every voxel along ``axis``: two [R, R, R] int arrays in the order
    (axis, b, c) where (b, c) are the two other axes in cyclic order."""
    n = grid.resolution
    b, c = (axis + 1) % 3, (axis + 2) % 3
    # Triangle corners in column units: column (j, k) is at (j, k) + jitter.
    pb = (tri[:, :, b] - grid.origin[b]) / grid.voxel - 0.5 - _JITTER[0]
    pc = (tri[:, :, c] - grid.origin[c]) / grid.voxel - 0.5 - _JITTER[1]
    pa = (tri[:, :, axis] - grid.origin[axis]) / grid.voxel - 0.5
    area = (pb[:, 1] - pb[:, 0]) * (pc[:, 2] - pc[:, 0]) - (pb[:, 2] - pb[:, 0]) * (pc[:, 1] - pc[:, 0])
    keep = np.abs(area) > 1e-12  # faces seen edge-on along this axis are never crossed
    pb, pc, pa, area = pb[keep], pc[keep], pa[keep], area[keep]
    j0 = np.clip(np.ceil(pb.min(1)), 0, n).astype(np.int64)
    j1 = np.clip(np.floor(pb.max(1)), -1, n - 1).astype(np.int64)
    k0 = np.clip(np.ceil(pc.min(1)), 0, n).astype(np.int64)
    k1 = np.clip(np.floor(pc.max(1)), -1, n - 1).astype(np.int64)
    nj, nk = np.maximum(j1 - j0 + 1, 0), np.maximum(k1 - k0 + 1, 0)
    counts = nj * nk
    hist = np.zeros(n * n * (n + 1), dtype=np.int64)
    sign = np.sign(area).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    # Process the (triangle, column) candidates in chunks of whole triangles.
    first = 0
    while first < len(counts):
        last = int(np.searchsorted(starts, starts[first] + _CHUNK, side="right"))
        last = max(last - 1, first + 1)
        tri_idx = np.repeat(np.arange(first, last), counts[first:last])
        if len(tri_idx):
            local = np.arange(len(tri_idx)) - (starts[tri_idx] - starts[first])
            j = j0[tri_idx] + local // np.maximum(nk[tri_idx], 1)
            k = k0[tri_idx] + local % np.maximum(nk[tri_idx], 1)
            tb, tc = pb[tri_idx], pc[tri_idx]
            # Barycentric coordinates of the column in the projected triangle (signed-area ratios).
            w1 = ((j - tb[:, 0]) * (tc[:, 2] - tc[:, 0]) - (tb[:, 2] - tb[:, 0]) * (k - tc[:, 0])) / area[tri_idx]
            w2 = ((tb[:, 1] - tb[:, 0]) * (k - tc[:, 0]) - (j - tb[:, 0]) * (tc[:, 1] - tc[:, 0])) / area[tri_idx]
            w0 = 1 - w1 - w2
            hit = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
            ta = pa[tri_idx[hit]]
            depth = w0[hit] * ta[:, 0] + w1[hit] * ta[:, 1] + w2[hit] * ta[:, 2]
            # A crossing at depth d lies below voxel i when d < i: it goes to bin floor(d) + 1.
            bins = np.clip(np.floor(depth).astype(np.int64) + 1, 0, n)
            cell = (j[hit] * n + k[hit]) * (n + 1) + bins
            np.add.at(hist, cell, sign[tri_idx[hit]])
        first = last
    cum = np.cumsum(hist.reshape(n, n, n + 1), axis=2)  # [j, k, bin]
    below = cum[:, :, :n]                                # crossings with depth < i
    above = cum[:, :, n:] - below                        # crossings with depth > i
    return np.moveaxis(below, 2, 0), np.moveaxis(above, 2, 0)  # [i(axis), j(b), k(c)]


def _to_xyz(values: np.ndarray, axis: int) -> np.ndarray:
    """Reorder an array indexed (axis, axis+1, axis+2) (cyclic) into (x, y, z) order."""
    order = [axis, (axis + 1) % 3, (axis + 2) % 3]
    return np.transpose(values, np.argsort(order))


def solid_voxels(tri: np.ndarray, grid: Grid) -> np.ndarray:
    """Occupancy [R, R, R] bool (indexed x, y, z) of the solid bounded by the triangles ``tri`` [F, 3, 3] on
    ``grid``. Evaluation (IoU) and pretraining's occupancy labels both use it."""
    votes = np.zeros((grid.resolution,) * 3, dtype=np.int8)
    for axis in range(3):
        below, above = _axis_votes(tri, grid, axis)
        votes += _to_xyz((below != 0).astype(np.int8) + (above != 0).astype(np.int8), axis)
    return votes >= 4
