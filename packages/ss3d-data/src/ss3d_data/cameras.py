"""The project's look-at camera, in numpy: camera poses on a sphere around the canonical origin, in the shard
format's convention (``docs/formats.md``): canonical frame X right, Y away from the default viewer, Z up;
``cam2world`` [4, 4] maps OpenCV camera coordinates (x right, y down, z forward) to the canonical frame.

Used by the renderer (synthetic views, collections) and the evaluation's thumbnails. Training's differentiable,
batched twin is ``ss3d_model.cameras.look_at`` (torch), tested to give the same poses.
"""

from __future__ import annotations

import numpy as np

from ss3d_data.errors import Ss3dError


def spherical_to_position(azimuth_deg: float, elevation_deg: float, distance: float) -> np.ndarray:
    """Camera centre [3] on a sphere around the origin. Azimuth 0 puts the camera on -Y (in front of the object,
    looking along +Y, the default viewer's direction); azimuth grows counter-clockwise seen from +Z."""
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    return distance * np.array([np.sin(az) * np.cos(el), -np.cos(az) * np.cos(el), np.sin(el)])


def look_at_cam2world(eye: np.ndarray, target: np.ndarray | None = None, roll_deg: float = 0.0) -> np.ndarray:
    """OpenCV cam2world [4, 4] for a camera at ``eye`` [3] looking at ``target`` [3] (default: the origin) with the
    world +Z as "up" in the image (image y points down), then rolled by ``roll_deg`` about the viewing axis."""
    eye = np.asarray(eye, dtype=np.float64)
    target = np.zeros(3) if target is None else np.asarray(target, dtype=np.float64)
    forward = target - eye
    norm = np.linalg.norm(forward)
    if norm < 1e-9:
        raise Ss3dError("camera eye and target coincide")
    forward /= norm
    world_up = np.array([0.0, 0.0, 1.0])
    right = np.cross(forward, world_up)
    if np.linalg.norm(right) < 1e-6:  # looking straight up or down: any horizontal right axis will do
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    roll = np.radians(roll_deg)
    c, s = np.cos(roll), np.sin(roll)
    right, down = c * right + s * down, -s * right + c * down
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, eye
    return pose
