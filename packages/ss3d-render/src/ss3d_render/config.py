"""The renderer's settings: the preset's ``[render]`` section as a typed dataclass."""

from __future__ import annotations

from dataclasses import dataclass

from ss3d_data.errors import Ss3dError
from ss3d_data.presets import load_preset, section_config


@dataclass(frozen=True)
class RenderConfig:
    views_per_instance: int                          # synthetic views per mesh (paper: 20)
    azimuth_deg: tuple[float, float]                 # azimuth range of synthetic views, degrees
    elevation_deg: tuple[float, float]               # elevation range of synthetic views, degrees
    image_size: int                                  # square render size in pixels
    distance_range: tuple[float, float]              # camera distance from the origin
    focal_px: float                                  # focal length in pixels at image_size
    cycles_samples: int                              # Cycles path samples per pixel, no denoising
    collection_views_per_instance: int               # in-the-wild collections: images per instance
    max_bounces: int                                 # Cycles light bounces (speed; diffuse objects need few)
    collection_elevation_deg: tuple[float, float]    # collections: wider elevation range
    collection_distance_range: tuple[float, float]   # collections: wider distance range
    collection_focal_jitter: float                   # collections: focal scaled by U[1 - j, 1 + j]
    collection_roll_deg: float                       # collections: camera roll U[-r, r] degrees
    collection_degrade_fraction: float               # collections: max erode/dilate radius / image side
    seed: int                                        # base seed; each instance derives its own from it

    def validate(self) -> None:
        if self.views_per_instance < 1 or self.collection_views_per_instance < 1:
            raise Ss3dError("[render] views per instance must be at least 1")
        if not 8 <= self.image_size <= 4096:
            raise Ss3dError(f"[render] image_size must be in [8, 4096], got {self.image_size}")
        if self.cycles_samples < 1 or self.max_bounces < 0:
            raise Ss3dError("[render] cycles_samples must be >= 1 and max_bounces >= 0")
        for name in ("distance_range", "collection_distance_range"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise Ss3dError(f"[render] {name} must satisfy 0 < low <= high, got {[lo, hi]}")
        for name in ("elevation_deg", "collection_elevation_deg"):
            lo, hi = getattr(self, name)
            if not -90 < lo <= hi < 90:
                raise Ss3dError(f"[render] {name} must lie strictly inside (-90, 90), got {[lo, hi]}")
        if not 0 <= self.collection_focal_jitter < 1:
            raise Ss3dError("[render] collection_focal_jitter must be in [0, 1)")


def render_config(preset: str) -> RenderConfig:
    """Load and check the ``[render]`` section of preset ``preset`` (a name or a .toml path)."""
    config = section_config(RenderConfig, load_preset(preset).section("render"), "render")
    config.validate()
    return config
