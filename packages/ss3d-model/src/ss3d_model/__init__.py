"""ss3d-model: the image-conditioned implicit reconstruction network and everything needed to use it."""

import os as _os
import tempfile as _tempfile

import torch as _torch

# torch.compile's on-disk cache (inductor) does not tell CPU kernel capabilities apart. Measured on an AVX-512
# machine: a decoder compiled under the default kernels and reloaded under ATEN_CPU_CAPABILITY=avx2 gave outputs off
# by up to 1.09 (on values of about 1); after an avx2 compile, the default kernels' compile failed on the cached
# precompiled header. So each capability gets a cache folder of its own, unless the user chose one. This runs before
# anything imports torchvision, which makes torch fix the folder for the rest of the process.
if "TORCHINDUCTOR_CACHE_DIR" not in _os.environ:
    _os.environ["TORCHINDUCTOR_CACHE_DIR"] = _os.path.join(
        _tempfile.gettempdir(),
        f"torchinductor_{_os.getuid()}_{_torch.backends.cpu.get_cpu_capability().lower()}",
    )

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
from ss3d_model.official import import_official
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
    "import_official",
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
