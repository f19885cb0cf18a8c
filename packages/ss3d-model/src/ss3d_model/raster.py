"""The project's one mesh rasteriser: a small numpy z-buffer (no OpenGL, no Blender) for turntables of
reconstructions and the evaluation report's thumbnails.

Triangles are drawn with two-sided Lambert shading against the viewing direction (predicted and scanned meshes
often have mixed or inward normals), coloured by their interpolated vertex colours or one colour; point clouds are
drawn as small depth-tested dots. Every triangle is expanded into the pixels of its bounding box at once
(vectorised barycentric test), depth is interpolated perspective-correctly, and the nearest fragment per pixel wins.
Cameras are ``cam2world`` poses in the shard format's OpenCV convention (``ss3d_data.cameras``).
"""

from __future__ import annotations

import numpy as np

_CHUNK = 4_000_000  # fragments tested at once


def project(points: np.ndarray, cam2world: np.ndarray, focal_px: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Points [N, 3] -> pixel coordinates [N, 2] (pixel centres at integer + 0.5; principal point at the image
    centre) and depths [N] along the camera's z."""
    pose = np.asarray(cam2world, np.float64)
    cam = (np.asarray(points, np.float64) - pose[:3, 3]) @ pose[:3, :3]
    depth = np.maximum(cam[:, 2], 1e-6)
    return focal_px * cam[:, :2] / depth[:, None] + size / 2, cam[:, 2]


def rasterise(vertices: np.ndarray, faces: np.ndarray | None, cam2world: np.ndarray, focal_px: float, size: int,
              colours: np.ndarray | None = None, colour: tuple[int, int, int] = (200, 200, 200),
              background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """[size, size, 3] uint8 image of a mesh (``faces`` [F, 3]) or a point cloud (``faces`` None) seen by a pinhole
    camera. ``colours`` [V, 3] (0-255) are per-vertex colours, interpolated across each triangle; without them
    everything has ``colour``."""
    vertices = np.asarray(vertices, np.float64).reshape(-1, 3)
    image = np.empty((size, size, 3), np.uint8)
    image[:] = background
    base = np.broadcast_to(np.asarray(colour, np.float64), (len(vertices), 3)) if colours is None else \
        np.asarray(colours, np.float64)[:, :3]
    if len(vertices) == 0:
        return image
    if faces is None:
        uv, depth = project(vertices, cam2world, focal_px, size)
        pix = np.floor(uv).astype(np.int64)
        offsets = np.array([[0, 0], [1, 0], [0, 1], [1, 1]])
        pix = (pix[:, None] + offsets).reshape(-1, 2)
        depth = np.repeat(depth, 4)
        rgb = np.repeat(base * 0.85, 4, axis=0)
    else:
        faces = np.asarray(faces, np.int64).reshape(-1, 3)
        if len(faces) == 0:
            return image
        tri = vertices[faces]
        normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        view_dir = tri.mean(1) - np.asarray(cam2world, np.float64)[:3, 3]
        view_dir /= np.maximum(np.linalg.norm(view_dir, axis=1, keepdims=True), 1e-12)
        face_shade = 0.3 + 0.7 * np.abs((normals * view_dir).sum(1))
        uv, depth_v = project(tri.reshape(-1, 3), cam2world, focal_px, size)
        pix, depth, face, weights = _fragments(uv.reshape(-1, 3, 2), depth_v.reshape(-1, 3), size)
        rgb = np.einsum("kc,kcd->kd", weights, base[faces[face]]) * face_shade[face, None]
    inside = (pix[:, 0] >= 0) & (pix[:, 0] < size) & (pix[:, 1] >= 0) & (pix[:, 1] < size) & (depth > 0)
    pix, depth, rgb = pix[inside], depth[inside], rgb[inside]
    if len(pix):
        flat = pix[:, 1] * size + pix[:, 0]
        order = np.lexsort((depth, flat))                 # by pixel, nearest first
        chosen = order[np.unique(flat[order], return_index=True)[1]]
        image.reshape(-1, 3)[flat[chosen]] = np.clip(rgb[chosen], 0, 255).astype(np.uint8)
    return image


def _fragments(uv: np.ndarray, depth: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Triangles in pixels ``uv`` [F, 3, 2] with vertex depths [F, 3] -> covered pixels [K, 2], their
    interpolated depths [K], face indices [K] and screen-space barycentric weights [K, 3]."""
    lo = np.clip(np.ceil(uv.min(1) - 0.5), 0, size).astype(np.int64)
    hi = np.clip(np.floor(uv.max(1) - 0.5), -1, size - 1).astype(np.int64)
    span = np.maximum(hi - lo + 1, 0)
    counts = span[:, 0] * span[:, 1]
    area = ((uv[:, 1, 0] - uv[:, 0, 0]) * (uv[:, 2, 1] - uv[:, 0, 1])
            - (uv[:, 2, 0] - uv[:, 0, 0]) * (uv[:, 1, 1] - uv[:, 0, 1]))
    counts[np.abs(area) < 1e-12] = 0
    starts = np.concatenate([[0], np.cumsum(counts)])
    pix_out, depth_out, face_out, weight_out = [], [], [], []
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
            face_out.append(face[hit])
            weight_out.append(np.stack([w0[hit], w1[hit], w2[hit]], 1))
        first = last
    if not pix_out:
        return np.zeros((0, 2), np.int64), np.zeros(0), np.zeros(0, np.int64), np.zeros((0, 3))
    return np.concatenate(pix_out), np.concatenate(depth_out), np.concatenate(face_out), np.concatenate(weight_out)
