"""Typed preset sections read by more than one package: ``[data]`` (shard writing, training, meshing) and
``[render]`` (the renderer, and training's random cameras that imitate it). Sections read by one package live there
(``[model]``, ``[volume]``, ``[extract]`` in ss3d-model; the stages' sections in ss3d-train; ``[eval]`` in
ss3d-eval)."""

from __future__ import annotations

from dataclasses import dataclass

from ss3d_data.errors import Ss3dError
from ss3d_data.presets import Preset, check_values, load_preset, section_config


def _loaded(preset: str | Preset) -> Preset:
    return preset if isinstance(preset, Preset) else load_preset(preset)


@dataclass(frozen=True)
class DataConfig:
    """The ``[data]`` preset section (``supervision_size``/``mask_threshold`` are read by training)."""

    supervision_size: int = 128
    mask_threshold: float = 0.5
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, val, test
    split_salt: str = "ss3d"          # changes every split assignment at once, never per run
    max_mesh_faces: int = 2_000_000   # larger meshes are skipped ("absurd size")
    mesh_extent_range: tuple[float, float] = (1e-6, 1e6)  # longest bounding-box side in file units
    per_shard: int = 64               # samples per shard file
    collection_max_side: int = 512    # image collections: longer side downscaled to this on packing (0 = keep)
    occupancy_resolution: int = 0     # views shards: solid occupancy grid of each mesh, voxels per side (0 = none)

    def __post_init__(self) -> None:
        check_values("data", self, positive=("supervision_size", "max_mesh_faces", "per_shard"),
                     non_negative=("collection_max_side", "occupancy_resolution"), fractions=("mask_threshold",))


def data_config(preset: str | Preset = "paper") -> DataConfig:
    """The ``[data]`` section of a preset (a name, a .toml path or a loaded :class:`Preset`)."""
    values = dict(_loaded(preset).section("data"))
    for name in ("split_fractions", "mesh_extent_range"):  # TOML arrays are lists; the config holds tuples
        if name in values:
            values[name] = tuple(values[name])
    return section_config(DataConfig, values, "data")


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

    def __post_init__(self) -> None:
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


def render_config(preset: str | Preset) -> RenderConfig:
    """Load and check the ``[render]`` section of a preset (a name, a .toml path or a loaded :class:`Preset`)."""
    return section_config(RenderConfig, _loaded(preset).section("render"), "render")
