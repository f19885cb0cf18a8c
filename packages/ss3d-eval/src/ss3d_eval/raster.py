"""Report thumbnails: a :class:`Shape` seen from a look-at camera on a sphere around the canonical origin, drawn by
the project's rasteriser (``ss3d_model.raster``) in one flat colour."""

from __future__ import annotations

import numpy as np

from ss3d_data.cameras import look_at_cam2world, spherical_to_position
from ss3d_eval.shapes import Shape

BACKGROUND = (250, 250, 250)


def view_camera(azimuth_deg: float, elevation_deg: float, distance: float) -> np.ndarray:
    """cam2world [4, 4] of a camera at (azimuth, elevation, distance) looking at the origin, Z up on screen."""
    return look_at_cam2world(spherical_to_position(azimuth_deg, elevation_deg, distance))


def render(shape: Shape, size: int = 160, azimuth_deg: float = 30.0, elevation_deg: float = 20.0,
           colour: tuple[int, int, int] = (120, 150, 200), distance: float = 2.4,
           half_extent: float = 0.65) -> np.ndarray:
    """[size, size, 3] uint8 image of ``shape``; the view frames the cube [-half_extent, half_extent]^3."""
    from ss3d_model.raster import rasterise  # torch-free module, but its package imports torch: only when drawing

    focal = size / 2 * (distance - half_extent) / (half_extent * 1.05)
    return rasterise(shape.vertices, shape.faces, view_camera(azimuth_deg, elevation_deg, distance), focal, size,
                     colour=colour, background=BACKGROUND)
