"""A turntable picture of a mesh: a few views side by side, drawn by the project's rasteriser
(:mod:`ss3d_model.raster`) with the mesh's vertex colours. Good enough to look at a reconstruction; no Blender
needed."""

from __future__ import annotations

import math

import numpy as np
import torch
import trimesh

from ss3d_model.cameras import look_at
from ss3d_model.raster import rasterise


def render_mesh_view(mesh: trimesh.Trimesh, cam2world: np.ndarray, focal_px: float, size: int) -> np.ndarray:
    """One view [size, size, 3] uint8 (white background) of a vertex-coloured mesh, OpenCV pinhole camera."""
    colours = np.asarray(mesh.visual.vertex_colors)[:, :3] if mesh.visual.kind == "vertex" else None
    return rasterise(mesh.vertices, mesh.faces, cam2world, focal_px, size, colours=colours)


def turntable(mesh: trimesh.Trimesh, views: int = 4, size: int = 192, elevation_deg: float = 20.0,
              distance: float = 2.2) -> np.ndarray:
    """``views`` views at evenly spaced azimuths, side by side: [size, views * size, 3] uint8."""
    azimuths = torch.arange(views, dtype=torch.float64) * (2 * math.pi / views)
    poses = look_at(torch.full_like(azimuths, math.radians(elevation_deg)), azimuths,
                    torch.full_like(azimuths, distance)).numpy()
    # Focal length = image size: a 53-degree field of view that holds the [-0.55, 0.55]^3 box at distance 2.2.
    return np.concatenate([render_mesh_view(mesh, pose, float(size), size) for pose in poses], axis=1)
