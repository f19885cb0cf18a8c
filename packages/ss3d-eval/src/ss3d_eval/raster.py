"""A small numpy z-buffer rasteriser for report thumbnails (no OpenGL, no Blender).

Meshes are drawn with flat two-sided Lambert shading (predicted and scanned meshes often have mixed or inward
normals) from a perspective look-at camera on a sphere around the canonical origin; point clouds are drawn as
small depth-tested dots. Every triangle is expanded into the pixels of its bounding box at once (vectorised
barycentric test), and the nearest fragment per pixel wins.
"""

from __future__ import annotations

import numpy as np

from ss3d_eval.shapes import Shape

_CHUNK = 4_000_000  # fragments tested at once
BACKGROUND = (250, 250, 250)


def look_at(azimuth_deg: float, elevation_deg: float, distance: float) -> tuple[np.ndarray, np.ndarray]:
    """(rotation [3, 3], position [3]) of a camera looking at the origin, Z up; world -> camera is
    ``R @ (x - position)`` with OpenCV axes (x right, y down, z forward)."""
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    position = distance * np.array([np.cos(el) * np.sin(az), -np.cos(el) * np.cos(az), np.sin(el)])
    forward = -position / np.linalg.norm(position)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    if np.linalg.norm(right) < 1e-9:  # looking straight down or up
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return np.stack([right, down, forward]), position


def project(points: np.ndarray, rotation: np.ndarray, position: np.ndarray, focal: float,
            size: int) -> tuple[np.ndarray, np.ndarray]:
    """Points [N, 3] -> pixel coordinates [N, 2] (pixel centres at integer + 0.5) and depths [N]."""
    cam = (points - position) @ rotation.T
    depth = np.maximum(cam[:, 2], 1e-6)
    uv = focal * cam[:, :2] / depth[:, None] + size / 2
    return uv, cam[:, 2]


def render(shape: Shape, size: int = 160, azimuth_deg: float = 30.0, elevation_deg: float = 20.0,
           colour: tuple[int, int, int] = (120, 150, 200), distance: float = 2.4,
           half_extent: float = 0.65) -> np.ndarray:
    """[size, size, 3] uint8 image of ``shape``; the view frames the cube [-half_extent, half_extent]^3."""
    rotation, position = look_at(azimuth_deg, elevation_deg, distance)
    focal = size / 2 * (distance - half_extent) / (half_extent * 1.05)
    image = np.empty((size, size, 3), np.uint8)
    image[:] = BACKGROUND
    base = np.asarray(colour, float)
    if shape.faces is None:
        uv, depth = project(shape.vertices, rotation, position, focal, size)
        pix = np.floor(uv).astype(np.int64)
        offsets = np.array([[0, 0], [1, 0], [0, 1], [1, 1]])
        pix = (pix[:, None] + offsets).reshape(-1, 2)
        depth = np.repeat(depth, 4)
        shade = np.repeat(np.full(len(uv), 0.85), 4)
    else:
        tri = shape.vertices[shape.faces]
        normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        view_dir = tri.mean(1) - position
        view_dir /= np.linalg.norm(view_dir, axis=1, keepdims=True)
        face_shade = 0.3 + 0.7 * np.abs((normals * view_dir).sum(1))
        uv, depth_v = project(tri.reshape(-1, 3), rotation, position, focal, size)
        pix, depth, shade = _fragments(uv.reshape(-1, 3, 2), depth_v.reshape(-1, 3), face_shade, size)
    inside = (pix[:, 0] >= 0) & (pix[:, 0] < size) & (pix[:, 1] >= 0) & (pix[:, 1] < size) & (depth > 0)
    pix, depth, shade = pix[inside], depth[inside], shade[inside]
    if len(pix):
        flat = pix[:, 1] * size + pix[:, 0]
        order = np.lexsort((depth, flat))                 # by pixel, nearest first
        first = np.unique(flat[order], return_index=True)[1]
        chosen = order[first]
        values = np.clip(base[None] * shade[chosen, None], 0, 255).astype(np.uint8)
        image.reshape(-1, 3)[flat[chosen]] = values
    return image


def _fragments(uv: np.ndarray, depth: np.ndarray, shade: np.ndarray,
               size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangles in pixels ``uv`` [F, 3, 2] with vertex depths [F, 3] -> covered pixels [K, 2], their
    interpolated depths [K] and the faces' shades [K]."""
    lo = np.clip(np.ceil(uv.min(1) - 0.5), 0, size).astype(np.int64)
    hi = np.clip(np.floor(uv.max(1) - 0.5), -1, size - 1).astype(np.int64)
    span = np.maximum(hi - lo + 1, 0)
    counts = span[:, 0] * span[:, 1]
    area = ((uv[:, 1, 0] - uv[:, 0, 0]) * (uv[:, 2, 1] - uv[:, 0, 1])
            - (uv[:, 2, 0] - uv[:, 0, 0]) * (uv[:, 1, 1] - uv[:, 0, 1]))
    counts[np.abs(area) < 1e-12] = 0
    starts = np.concatenate([[0], np.cumsum(counts)])
    pix_out, depth_out, shade_out = [], [], []
    first = 0
    while first < len(counts):
        last = max(int(np.searchsorted(starts, starts[first] + _CHUNK, side="right")) - 1, first + 1)
        face = np.repeat(np.arange(first, last), counts[first:last])
        if len(face):
            local = np.arange(len(face)) - (starts[face] - starts[first])
            x = lo[face, 0] + local % np.maximum(span[face, 0], 1)
            y = lo[face, 1] + local // np.maximum(span[face, 0], 1)
            px, py = x + 0.5, y + 0.5
            t = uv[face]
            w1 = ((px - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1]) - (t[:, 2, 0] - t[:, 0, 0]) * (py - t[:, 0, 1]))
            w2 = ((t[:, 1, 0] - t[:, 0, 0]) * (py - t[:, 0, 1]) - (px - t[:, 0, 0]) * (t[:, 1, 1] - t[:, 0, 1]))
            w1, w2 = w1 / area[face], w2 / area[face]
            w0 = 1 - w1 - w2
            hit = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
            d = depth[face]
            # Perspective-correct depth: interpolate 1/z linearly in screen space.
            inv = w0 / d[:, 0] + w1 / d[:, 1] + w2 / d[:, 2]
            pix_out.append(np.stack([x[hit], y[hit]], 1))
            depth_out.append(1 / inv[hit])
            shade_out.append(shade[face[hit]])
        first = last
    if not pix_out:
        return np.zeros((0, 2), np.int64), np.zeros(0), np.zeros(0)
    return np.concatenate(pix_out), np.concatenate(depth_out), np.concatenate(shade_out)
