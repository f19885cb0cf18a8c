"""A turntable picture of a mesh: a few views side by side, from a small numpy z-buffer rasteriser.

Faces are drawn as dense barycentric point splats (more points for faces that cover more pixels), depth-tested per
pixel, and shaded with the vertex colours times a headlight Lambert term. Good enough to look at a reconstruction;
no Blender needed.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import trimesh

from ss3d_model.cameras import look_at


def _barycentric_grid(subdivisions: int) -> np.ndarray:
    """Barycentric weights [P, 3] of a regular grid over a triangle with ``subdivisions`` steps per edge."""
    n = subdivisions
    rows = [(i, j, n - i - j) for i in range(n + 1) for j in range(n + 1 - i)]
    return np.asarray(rows, np.float32) / n


def render_mesh_view(mesh: trimesh.Trimesh, cam2world: np.ndarray, focal_px: float, size: int) -> np.ndarray:
    """One view [size, size, 3] uint8 (white background) of a vertex-coloured mesh, OpenCV pinhole camera."""
    image = np.full((size, size, 3), 255, np.uint8)
    if len(mesh.faces) == 0:
        return image
    world2cam = np.linalg.inv(cam2world)
    cam = mesh.vertices @ world2cam[:3, :3].T + world2cam[:3, 3]                 # [V, 3]
    uv = cam[:, :2] / np.maximum(cam[:, 2:], 1e-6) * focal_px + size / 2         # [V, 2]
    colours = np.asarray(mesh.visual.vertex_colors, np.float32)[:, :3] if mesh.visual.kind == "vertex" else \
        np.full((len(mesh.vertices), 3), 200.0, np.float32)
    normals = np.asarray(mesh.face_normals) @ world2cam[:3, :3].T                # camera-frame normals [F, 3]
    shade = 0.25 + 0.75 * np.clip(-normals[:, 2], 0.0, 1.0)                      # headlight along +z
    faces = np.asarray(mesh.faces)
    tri_uv = uv[faces]                                                           # [F, 3, 2]
    extent = np.ptp(tri_uv, axis=1).max(axis=1)                                  # longest side in pixels
    subdivisions = np.clip(np.ceil(extent * 1.5), 1, 64).astype(int)
    indices, depths, rgbs = [], [], []
    for level in np.unique(subdivisions):
        sel = np.nonzero(subdivisions == level)[0]
        weights = _barycentric_grid(int(level))                                  # [P, 3]
        p_uv = np.einsum("pk,fkc->fpc", weights, tri_uv[sel]).reshape(-1, 2)
        p_z = np.einsum("pk,fk->fp", weights, cam[faces[sel], 2]).reshape(-1)
        p_rgb = (np.einsum("pk,fkc->fpc", weights, colours[faces[sel]]) * shade[sel, None, None]).reshape(-1, 3)
        px = np.floor(p_uv).astype(np.int64)
        ok = (px[:, 0] >= 0) & (px[:, 0] < size) & (px[:, 1] >= 0) & (px[:, 1] < size) & (p_z > 0)
        indices.append(px[ok, 1] * size + px[ok, 0])
        depths.append(p_z[ok].astype(np.float32))
        rgbs.append(p_rgb[ok])
    index, p_z, p_rgb = np.concatenate(indices), np.concatenate(depths), np.concatenate(rgbs)
    # z-buffer: the nearest splat per pixel wins.
    depth = np.full(size * size, np.inf, np.float32)
    np.minimum.at(depth, index, p_z)
    nearest = p_z <= depth[index]
    image.reshape(-1, 3)[index[nearest]] = np.clip(p_rgb[nearest], 0, 255).astype(np.uint8)
    return image


def turntable(mesh: trimesh.Trimesh, views: int = 4, size: int = 192, elevation_deg: float = 20.0,
              distance: float = 2.2) -> np.ndarray:
    """``views`` views at evenly spaced azimuths, side by side: [size, views * size, 3] uint8."""
    azimuths = torch.arange(views, dtype=torch.float64) * (2 * math.pi / views)
    poses = look_at(torch.full_like(azimuths, math.radians(elevation_deg)), azimuths,
                    torch.full_like(azimuths, distance)).numpy()
    # Focal length = image size: a 53-degree field of view that holds the [-0.55, 0.55]^3 box at distance 2.2.
    return np.concatenate([render_mesh_view(mesh, pose, float(size), size) for pose in poses], axis=1)
