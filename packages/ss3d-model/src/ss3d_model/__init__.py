"""ss3d-model: the image-conditioned implicit reconstruction network and everything needed to use it."""

from ss3d_model.cameras import (
    MultiHypothesisCameras,
    intrinsics_matrix,
    look_at,
    pixel_rays,
    sample_pixels,
)
from ss3d_model.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CheckpointError,
    CheckpointMeta,
    load_checkpoint,
    load_state,
    read_checkpoint_meta,
    save_checkpoint,
    save_state,
    state_path,
)
from ss3d_model.config import ExtractConfig, ModelConfig, VolumeConfig
from ss3d_model.io import load_network, save_network
from ss3d_model.network import ReconstructionNetwork, load_imagenet_encoder
from ss3d_model.render import composite, ray_bounds, render_image, render_rays, sample_depths

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "CheckpointMeta",
    "ExtractConfig",
    "ModelConfig",
    "MultiHypothesisCameras",
    "ReconstructionNetwork",
    "VolumeConfig",
    "composite",
    "intrinsics_matrix",
    "load_checkpoint",
    "load_imagenet_encoder",
    "load_network",
    "load_state",
    "look_at",
    "pixel_rays",
    "ray_bounds",
    "read_checkpoint_meta",
    "render_image",
    "render_rays",
    "sample_depths",
    "sample_pixels",
    "save_checkpoint",
    "save_network",
    "save_state",
    "state_path",
]
