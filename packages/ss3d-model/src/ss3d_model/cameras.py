"""Pinhole cameras, pixel rays, and the learnable multi-hypothesis cameras of self-training.

Conventions (docs/formats.md): canonical frame X left-to-right, Y away from the default viewer, Z up; cameras in
OpenCV axes (x right, y down, z forward); ``cam2world`` maps camera to canonical coordinates; a pixel (column, row)
has its centre at (column + 0.5, row + 0.5).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ss3d_data.errors import Ss3dError


def look_at(elevation: Tensor, azimuth: Tensor, distance: Tensor) -> Tensor:
    """Cameras on a sphere looking at the origin, Z up. Angles in radians; [...] each -> cam2world [..., 4, 4].

    Azimuth 0 puts the camera on the -Y axis looking towards +Y (the default viewer); azimuth grows
    counter-clockwise seen from above; elevation > 0 is above the XY plane. Example: (0, 0, 2) -> camera at
    (0, -2, 0) with x = +X, y = -Z, z = +Y.
    """
    elevation, azimuth, distance = torch.broadcast_tensors(elevation, azimuth, distance)
    ce, se = torch.cos(elevation), torch.sin(elevation)
    ca, sa = torch.cos(azimuth), torch.sin(azimuth)
    zeros = torch.zeros_like(ce)
    position = torch.stack([ce * sa, -ce * ca, se], -1) * distance.unsqueeze(-1)
    forward = torch.stack([-ce * sa, ce * ca, -se], -1)
    # The camera's x axis stays horizontal: written in closed form so it is defined (and smooth) even at the poles.
    right = torch.stack([ca, sa, zeros], -1)
    down = torch.linalg.cross(forward, right)
    rotation = torch.stack([right, down, forward], -1)  # columns = camera axes in world coordinates
    top = torch.cat([rotation, position.unsqueeze(-1)], -1)
    bottom = torch.zeros(*top.shape[:-2], 1, 4, dtype=top.dtype, device=top.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], -2)


def intrinsics_matrix(focal_px: float | Tensor, size: int) -> Tensor:
    """K [3, 3] (or [..., 3, 3] for a batched focal) of a square ``size`` image, principal point at size / 2."""
    focal = torch.as_tensor(focal_px, dtype=torch.float32)
    k = torch.zeros(*focal.shape, 3, 3, dtype=focal.dtype, device=focal.device)
    k[..., 0, 0] = focal
    k[..., 1, 1] = focal
    k[..., 0, 2] = size / 2
    k[..., 1, 2] = size / 2
    k[..., 2, 2] = 1.0
    return k


def pixel_rays(intrinsics: Tensor, cam2world: Tensor, pixels: Tensor) -> tuple[Tensor, Tensor]:
    """Rays through pixel positions.

    intrinsics [..., 3, 3], cam2world [..., 4, 4], pixels [..., R, 2] as (x, y) in pixel units (a pixel's centre is
    column + 0.5, row + 0.5) -> origins [..., R, 3], unit directions [..., R, 3] in the canonical frame.
    """
    fx, fy = intrinsics[..., 0, 0, None], intrinsics[..., 1, 1, None]
    cx, cy = intrinsics[..., 0, 2, None], intrinsics[..., 1, 2, None]
    x = (pixels[..., 0] - cx) / fx
    y = (pixels[..., 1] - cy) / fy
    camera_dirs = torch.stack([x, y, torch.ones_like(x)], -1)                 # [..., R, 3]
    rotation = cam2world[..., :3, :3]
    directions = torch.matmul(camera_dirs, rotation.transpose(-1, -2))       # R @ d for each ray
    directions = directions / directions.norm(dim=-1, keepdim=True)
    origins = cam2world[..., None, :3, 3].expand_as(directions)
    return origins, directions


# Pixel-aligned models predict in the input camera's view frame: the scene turned (and scaled) so the input camera
# is ``look_at(0, 0, VIEW_DISTANCE)`` (on -Y, level, looking at the origin), whatever its true pose.
# VIEW_DISTANCE is the renders' mean camera distance; PHOTO_FOCAL_PER_SIDE is the focal length assumed for an input
# of unknown camera, per pixel of its longer side: the renders' (240 px at 128 px, 420 at 224), a 30-degree view.
VIEW_DISTANCE = 3.0
PHOTO_FOCAL_PER_SIDE = 1.875
# The view frame's object box: an object of the canonical box [-0.5, 0.5]^3, turned, and scaled by up to 1.5 when its
# camera stood nearer than VIEW_DISTANCE (self-trained experts' cameras stand at 1-2), lies within [-1, 1]^3. A
# pixel-aligned model's extraction grid and distillation points span at least this box.
VIEW_BOX_HALF_SIZE = 1.0


def crop_projection(intrinsics: Tensor, cam2world: Tensor, crop: Tensor, size: int) -> Tensor:
    """The projection of a pixel-aligned network's input view.

    intrinsics [B, 3, 3] and cam2world [B, 4, 4] of the original image; crop [B, 3] = (scale, offset x, offset y) of
    :class:`ss3d_data.preprocess.Cropped` (original pixel p -> p * scale + offset in the ``size`` px crop)
    -> P [B, 3, 4]: a point X maps to P [X; 1] = (u w, v w, w), (u, v) in the crop's [-1, 1] coordinates
    (``grid_sample`` with ``align_corners=False``: -1 is the crop's left or top edge).
    """
    scale, offset = crop[:, 0], crop[:, 1:]
    normalise = torch.zeros(crop.shape[0], 3, 3, dtype=intrinsics.dtype, device=intrinsics.device)
    normalise[:, 0, 0] = normalise[:, 1, 1] = 2 * scale / size
    normalise[:, :2, 2] = 2 * offset / size - 1
    normalise[:, 2, 2] = 1
    rotation, position = cam2world[:, :3, :3], cam2world[:, :3, 3:]
    world2cam = torch.cat([rotation.transpose(1, 2), -rotation.transpose(1, 2) @ position], 2)
    return normalise @ intrinsics @ world2cam


def photo_camera(width: int, height: int) -> tuple[Tensor, Tensor]:
    """The camera assumed for an input of unknown camera, in its view frame: K [3, 3] (focal
    ``PHOTO_FOCAL_PER_SIDE`` x the image's longer side, principal point at the image centre) and cam2world [4, 4]
    (``look_at(0, 0, VIEW_DISTANCE)``)."""
    focal = PHOTO_FOCAL_PER_SIDE * max(width, height)
    k = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])
    return k, look_at(torch.zeros(()), torch.zeros(()), torch.tensor(VIEW_DISTANCE))


def photo_projection(crop: Tensor, width: int, height: int, size: int) -> Tensor:
    """:func:`crop_projection` of an input of unknown camera (every input at inference, and collection images in
    distillation): :func:`photo_camera`. crop [B, 3] of a ``width`` x ``height`` image -> P [B, 3, 4]."""
    b = crop.shape[0]
    k, pose = photo_camera(width, height)
    return crop_projection(k.to(crop.dtype).expand(b, 3, 3), pose.to(crop.dtype).expand(b, 4, 4), crop, size)


def sample_pixels(batch: int, count: int, size: int, generator: torch.Generator | None = None) -> Tensor:
    """Random pixel indices (x, y) as long [batch, count, 2], without repeats within an image when possible.

    Add 0.5 before :func:`pixel_rays` to shoot through the pixel centres.
    """
    total = size * size
    if count <= total:
        flat = torch.stack([torch.randperm(total, generator=generator)[:count] for _ in range(batch)])
    else:
        flat = torch.randint(0, total, (batch, count), generator=generator)
    return torch.stack([flat % size, flat // size], -1)


def _soft_clamp(raw: Tensor, centre: float, half_range: float) -> Tensor:
    """centre + h * tanh(raw / h): identity near the centre, never leaves (centre - h, centre + h)."""
    return centre + half_range * torch.tanh(raw / half_range)


def _soft_clamp_inverse(value: Tensor, centre: float, half_range: float) -> Tensor:
    ratio = ((value - centre) / half_range).clamp(-0.999, 0.999)
    return half_range * torch.atanh(ratio)


class MultiHypothesisCameras(nn.Module):
    """K learnable look-at cameras per image plus learnable probability logits (self-training, paper Sec. 3.2).

    Parameters: ``raw`` [num_images, K, 3] = (elevation, azimuth, distance) before soft clamps; ``logits``
    [num_images, K]. Elevation is soft-clamped to +-``elevation_limit_deg``, azimuth to +-2 pi (so it can move a
    full turn either way), distance to ``distance_range``. Azimuths start evenly spaced over 360 degrees (with a
    random offset per image), elevations uniform in +-``elevation_init_deg``, distances uniform in the range.
    """

    def __init__(self, num_images: int, hypotheses: int, distance_range: tuple[float, float], focal_px: float,
                 size: int, generator: torch.Generator | None = None, elevation_limit_deg: float = 85.0,
                 elevation_init_deg: float = 45.0) -> None:
        super().__init__()
        lo, hi = float(distance_range[0]), float(distance_range[1])
        if not 0 < lo < hi:
            raise Ss3dError(f"camera distance range must satisfy 0 < low < high, got {distance_range}")
        if num_images < 1 or hypotheses < 1:
            raise Ss3dError("MultiHypothesisCameras needs at least one image and one hypothesis")
        self.elevation_limit = math.radians(elevation_limit_deg)
        self.distance_centre, self.distance_half = (lo + hi) / 2, (hi - lo) / 2
        offset = torch.rand(num_images, 1, generator=generator) * (2 * math.pi / hypotheses)
        azimuth = -math.pi + offset + torch.arange(hypotheses) * (2 * math.pi / hypotheses)
        elevation = (torch.rand(num_images, hypotheses, generator=generator) * 2 - 1) * math.radians(
            elevation_init_deg)
        distance = lo + torch.rand(num_images, hypotheses, generator=generator) * (hi - lo)
        raw = torch.stack([
            _soft_clamp_inverse(elevation, 0.0, self.elevation_limit),
            _soft_clamp_inverse(azimuth, 0.0, 2 * math.pi),
            _soft_clamp_inverse(distance, self.distance_centre, self.distance_half),
        ], -1)
        self.raw = nn.Parameter(raw)
        self.logits = nn.Parameter(torch.zeros(num_images, hypotheses))
        self.register_buffer("intrinsics", intrinsics_matrix(focal_px, size))

    @property
    def hypotheses(self) -> int:
        return self.raw.shape[1]

    def angles(self, indices: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """indices [n] -> elevation, azimuth (radians), distance, each [n, K]."""
        raw = self.raw[indices]
        return (_soft_clamp(raw[..., 0], 0.0, self.elevation_limit),
                _soft_clamp(raw[..., 1], 0.0, 2 * math.pi),
                _soft_clamp(raw[..., 2], self.distance_centre, self.distance_half))

    def poses(self, indices: Tensor) -> Tensor:
        """indices [n] -> cam2world [n, K, 4, 4]."""
        return look_at(*self.angles(indices))

    def probabilities(self, indices: Tensor) -> Tensor:
        """indices [n] -> softmax(logits) [n, K]."""
        return torch.softmax(self.logits[indices], dim=-1)

    def settings(self) -> dict[str, Any]:
        """What, with the saved ``raw`` and ``logits``, rebuilds these cameras (:meth:`from_saved`)."""
        return {"distance_range": [self.distance_centre - self.distance_half,
                                   self.distance_centre + self.distance_half],
                "focal_px": float(self.intrinsics[0, 0]), "size": round(2 * float(self.intrinsics[0, 2])),
                "elevation_limit_deg": math.degrees(self.elevation_limit)}

    @classmethod
    def from_saved(cls, settings: dict[str, Any], raw: Tensor, logits: Tensor) -> MultiHypothesisCameras:
        """The cameras of :meth:`settings` with saved ``raw`` [N, K, 3] and ``logits`` [N, K]."""
        cameras = cls(raw.shape[0], raw.shape[1], tuple(settings["distance_range"]), settings["focal_px"],
                      settings["size"], elevation_limit_deg=settings["elevation_limit_deg"])
        with torch.no_grad():
            cameras.raw.copy_(raw)
            cameras.logits.copy_(logits)
        return cameras

    def most_probable(self) -> Tensor:
        """Every image's most probable hypothesis -> cam2world [num_images, 4, 4]."""
        indices = torch.arange(self.raw.shape[0], device=self.raw.device)
        best = self.logits.argmax(1)
        return self.poses(indices)[indices, best]
