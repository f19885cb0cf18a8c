"""Camera maths for the renderer, in numpy only (no Blender): sampling, intrinsics, the conversion to Blender's
camera convention, and the analytic silhouette of a sphere used to check that convention. Look-at poses are the
project's one numpy look-at, :mod:`ss3d_data.cameras` (re-exported here).

Conventions (``docs/formats.md``): canonical frame X right, Y away from the default viewer, Z up; ``cam2world``
[4, 4] maps OpenCV camera coordinates (x right, y down, z forward) to the canonical frame; pixel (u, v) centres sit
at integer + 0.5 from the top-left corner and ``[u, v, 1]^T ~ K @ X_cam``.

Blender's camera looks down its local -z with +y up, so its ``matrix_world`` is ``cam2world @ diag(1, -1, -1, 1)``.
"""

from __future__ import annotations

import numpy as np

from ss3d_data.cameras import spherical_to_position
from ss3d_data.errors import Ss3dError

# OpenCV camera axes -> Blender camera axes (and back: the matrix is its own inverse).
OPENCV_TO_BLENDER = np.diag([1.0, -1.0, -1.0, 1.0])


def intrinsics_matrix(focal_px: float, width: int, height: int) -> np.ndarray:
    """K [3, 3] of a pinhole camera with square pixels and the principal point at the image centre."""
    if focal_px <= 0 or width < 1 or height < 1:
        raise Ss3dError(f"bad camera: focal {focal_px} px for a {width}x{height} image")
    return np.array([[focal_px, 0.0, width / 2.0], [0.0, focal_px, height / 2.0], [0.0, 0.0, 1.0]])


def blender_matrix_world(cam2world: np.ndarray) -> np.ndarray:
    """Blender camera ``matrix_world`` [4, 4] (looks down -z, +y up) for an OpenCV ``cam2world`` [4, 4]."""
    return np.asarray(cam2world, dtype=np.float64) @ OPENCV_TO_BLENDER


def opencv_cam2world(blender_matrix: np.ndarray) -> np.ndarray:
    """Inverse of :func:`blender_matrix_world`."""
    return np.asarray(blender_matrix, dtype=np.float64) @ OPENCV_TO_BLENDER


def sample_orbit(
    rng: np.random.Generator,
    count: int,
    azimuth_deg: tuple[float, float],
    elevation_deg: tuple[float, float],
    distance_range: tuple[float, float],
) -> np.ndarray:
    """``count`` camera centres [count, 3]: azimuth, elevation (degrees) and distance each uniform in their range.
    Elevation is uniform in angle, as the paper states (U[-75, 75] degrees), not uniform on the sphere."""
    az = rng.uniform(azimuth_deg[0], azimuth_deg[1], count)
    el = rng.uniform(elevation_deg[0], elevation_deg[1], count)
    dist = rng.uniform(distance_range[0], distance_range[1], count)
    return np.stack([spherical_to_position(a, e, d) for a, e, d in zip(az, el, dist)])


def pixel_rays(intrinsics: np.ndarray, cam2world: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """World-space ray origin [3] and unit directions [H, W, 3] through every pixel centre."""
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    pix = np.stack([cols, rows, np.ones_like(cols)], axis=-1)  # [H, W, 3]
    dirs_cam = pix @ np.linalg.inv(intrinsics).T
    dirs = dirs_cam @ np.asarray(cam2world)[:3, :3].T
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    return np.asarray(cam2world)[:3, 3].copy(), dirs


def sphere_silhouette(
    center: np.ndarray, radius: float, intrinsics: np.ndarray, cam2world: np.ndarray, height: int, width: int
) -> np.ndarray:
    """Exact silhouette [H, W] bool of a sphere: pixels whose centre ray passes within ``radius`` of ``center`` in
    front of the camera (the projected ellipse, computed independently of any renderer)."""
    origin, dirs = pixel_rays(intrinsics, cam2world, height, width)
    to_center = np.asarray(center, dtype=np.float64) - origin
    along = dirs @ to_center  # [H, W] distance along each ray to the closest approach
    closest_sq = float(to_center @ to_center) - along**2
    return (closest_sq <= radius**2) & (along > 0)
