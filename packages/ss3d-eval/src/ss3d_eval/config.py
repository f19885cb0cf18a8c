"""The evaluation settings, read from a preset's ``[eval]`` section (sizes only; the protocol never changes)."""

from __future__ import annotations

from dataclasses import dataclass

from ss3d_data.errors import Ss3dError
from ss3d_data.presets import load_preset, section_config

ALIGN_MODES = ("similarity", "scale_translation", "none")


@dataclass(frozen=True)
class EvalConfig:
    iou_resolution: int                    # voxels per side of the IoU grid
    chamfer_points: int                    # points sampled on each surface for Chamfer / F-score
    fscore_thresholds: tuple[float, ...]   # distances (canonical units) at which F-score is reported
    rotation_search: int                   # quasi-uniform rotations tried by the coarse alignment search
    seed: int                              # base seed of every random draw (surface samples)
    align: str  # "similarity" (scale + rotation + translation), "scale_translation", "none"
    align_points: int  # surface points per shape used while aligning
    icp_iterations: int  # local refinement steps (ICP with scale)
    refine_candidates: int  # best coarse candidates refined by ICP
    render_size: int  # report thumbnails, pixels per side

    def __post_init__(self) -> None:
        if self.align not in ALIGN_MODES:
            raise Ss3dError(f"[eval] align must be one of {ALIGN_MODES}, got {self.align!r}")
        for name in ("iou_resolution", "chamfer_points", "rotation_search", "align_points", "refine_candidates",
                     "render_size"):
            if getattr(self, name) < 1:
                raise Ss3dError(f"[eval] {name} must be at least 1, got {getattr(self, name)}")
        if self.icp_iterations < 0:
            raise Ss3dError(f"[eval] icp_iterations must be >= 0, got {self.icp_iterations}")
        if not self.fscore_thresholds or any(t <= 0 for t in self.fscore_thresholds):
            raise Ss3dError("[eval] fscore_thresholds must be a non-empty list of positive distances")


def eval_config(preset: str = "paper") -> EvalConfig:
    """The ``[eval]`` section of preset ``preset`` (a name or a path to a TOML file) as an :class:`EvalConfig`."""
    return section_config(EvalConfig, load_preset(preset).section("eval"), "eval")
