"""The differentiable pieces the stages share: building the student, sampling supervised rays, and the two
objectives (render rays for pre/self-training, point-wise field outputs for distillation) as modules so that
DistributedDataParallel can wrap them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ss3d_data.clikit import console
from ss3d_data.errors import Ss3dError
from ss3d_data.presets import Preset
from ss3d_model import (
    ModelConfig,
    ReconstructionNetwork,
    VolumeConfig,
    load_imagenet_encoder,
    load_network,
    pixel_rays,
    ray_bounds,
    render_rays,
    sample_pixels,
)


def build_student(preset: Preset, init: str | Path | None, seed: int) -> tuple[ReconstructionNetwork, str, list[str]]:
    """The network a stage trains: loaded from ``init`` (its architecture from the file), or fresh from the preset
    (ImageNet encoder weights when torchvision's cached file exists). -> (network in train mode, encoder_init,
    parent checkpoints)."""
    if init is not None:
        network, meta = load_network(init)
        # Adam would carry a NaN/Inf weight into every later step: refuse it before training, not steps later.
        bad = [name for name, value in network.state_dict().items()
               if value.is_floating_point() and not bool(torch.isfinite(value).all())]
        if bad:
            raise Ss3dError(f"--init {init}: {len(bad)} tensor(s) hold NaN/Inf values (first: {bad[0]})",
                            hint="start from an earlier, finite checkpoint")
        network.train()
        return network, meta.encoder_init, [str(init)]
    torch.manual_seed(seed)
    network = ReconstructionNetwork(ModelConfig.from_preset(preset))
    encoder_init = "imagenet" if load_imagenet_encoder(network) else "random"
    network.train()
    console.print(f"fresh {network.config.encoder_arch} encoder, {encoder_init} weights"
                  + (", batch-norm statistics frozen" if network.config.frozen_batchnorm else ""))
    return network, encoder_init, []


def parameter_groups(network: ReconstructionNetwork, lr: float, trunk_lr_scale: float = 1.0) -> list[dict]:
    """Adam's parameter groups: everything at ``lr``, or (``trunk_lr_scale`` != 1) the encoder's trunk at
    ``lr * trunk_lr_scale`` and the rest at ``lr``, the rest first (metrics read group 0's rate). A pretrained
    trunk fine-tuned at a smaller rate than the freshly initialised layers keeps more of what ImageNet taught it.
    One group at scale 1, in ``parameters()`` order: the optimiser state of runs from before the option resumes."""
    if trunk_lr_scale == 1.0:
        return [{"params": list(network.parameters()), "lr": lr}]
    trunk = list(network.encoder.trunk.parameters())
    in_trunk = {id(p) for p in trunk}
    rest = [p for p in network.parameters() if id(p) not in in_trunk]
    return [{"params": rest, "lr": lr}, {"params": trunk, "lr": lr * trunk_lr_scale}]


def require_canonical_frame(network: ReconstructionNetwork, stage: str, what: str) -> None:
    """Self-training and distillation work in the canonical frame (cameras per image, points shared by teachers and
    student); a pixel-aligned network predicts in each input's view frame, so they refuse it with one line."""
    if network.config.pixel_features:
        raise Ss3dError(f"{stage}: {what} is a pixel-aligned model ([model] pixel_features > 0), which predicts in "
                        f"each input's view frame; {stage} needs the canonical frame",
                        hint="pixel-aligned models are pretrained and evaluated on their own (docs/quality.md)")


def load_teacher(path: str | Path, device: torch.device) -> ReconstructionNetwork:
    """A frozen teacher: eval mode, no gradients."""
    network, _ = load_network(path, map_location=device)
    network.eval()
    for p in network.parameters():
        p.requires_grad_(False)
    return network


def gather_pixels(image: Tensor, pixels: Tensor) -> Tensor:
    """image [N, s, s, C] or [N, s, s], pixels long [N, R, 2] (x, y) -> values [N, R, C] or [N, R]."""
    n, s = image.shape[0], image.shape[1]
    flat = (pixels[..., 1] * s + pixels[..., 0])                       # [N, R]
    values = image.reshape(n, s * s, -1)
    picked = torch.gather(values, 1, flat.unsqueeze(-1).expand(-1, -1, values.shape[-1]))
    return picked if image.ndim == 4 else picked.squeeze(-1)


def supervised_rays(intrinsics: Tensor, cam2world: Tensor, rgb: Tensor, mask: Tensor, rays: int, volume: VolumeConfig,
                    generator: torch.Generator) -> dict[str, Tensor]:
    """Sample ``rays`` pixels per view and shoot rays through their centres.

    intrinsics [N, 3, 3], cam2world [N, 4, 4], rgb [N, s, s, 3], mask [N, s, s] -> origins, directions [N, R, 3],
    near, far [N, R], target_rgb [N, R, 3], target_mask [N, R].
    """
    n, size = rgb.shape[0], rgb.shape[1]
    pixels = sample_pixels(n, rays, size, generator).to(rgb.device)
    origins, directions = pixel_rays(intrinsics, cam2world, pixels.to(rgb.dtype) + 0.5)
    near, far = ray_bounds(origins, volume)
    return {"origins": origins, "directions": directions, "near": near, "far": far,
            "target_rgb": gather_pixels(rgb, pixels), "target_mask": gather_pixels(mask, pixels)}


def depth_jitter(rays_shape: torch.Size, samples: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """Stratified-sample offsets [*rays_shape, S] in [0, 1), drawn from the stage's generator (resumable)."""
    return torch.rand(*rays_shape, samples, generator=generator).to(device)


def in_micro_batches(fn: Callable[..., tuple[Tensor, ...]], micro_batch: int, *tensors: Tensor
                     ) -> tuple[Tensor, ...]:
    """``fn(*tensors)`` computed ``micro_batch`` objects (leading dimension) at a time, each piece under activation
    checkpointing: the forward pass keeps only the pieces' inputs and outputs, and the backward pass recomputes one
    piece at a time, so a step's activation memory is that of one micro-batch while its gradient is the whole
    batch's (the pieces' gradients accumulate into the same weights; nothing else in the step changes: the encoder,
    its BatchNorm statistics, the random draws and the loss see the full batch). ``micro_batch`` 0, or one covering
    the batch, or no autograd: one plain call. The cost is one more forward pass of ``fn``.
    """
    count = tensors[0].shape[0]
    if micro_batch <= 0 or micro_batch >= count or not torch.is_grad_enabled():
        return fn(*tensors)
    pieces = [checkpoint(fn, *(t[start:start + micro_batch] for t in tensors), use_reentrant=False)
              for start in range(0, count, micro_batch)]
    return tuple(torch.cat(parts) for parts in zip(*pieces))


def render_training_rays(network, z: Tensor, samples: int, origins: Tensor, directions: Tensor, near: Tensor,
                         far: Tensor, jitter: Tensor, micro_batch: int = 0, importance: int = 0
                         ) -> tuple[Tensor, Tensor]:
    """``ss3d_model.render_rays`` with stratified samples and ``last_interval=None``, ``micro_batch`` objects at a
    time (:func:`in_micro_batches`; 0 = all at once).

    Stratified samples (``jitter`` from :func:`depth_jitter`, one sample at a random depth in each of S bins): with
    fixed depths the field is only ever supervised at S points per ray, so between them it is free, and the
    marching-cubes surface of short runs came out as crumpled noise; random depths supervise the whole ray.

    ``last_interval=None``: the background is black and empty, so nothing lies beyond ``far``. With a 1e10 last
    interval any positive density at the last sample makes the ray fully opaque with exactly zero gradient, and at
    initialisation about a third of all rays are stuck that way; measured here, pretraining then drifted towards
    all-opaque masks instead of reducing its loss. z [B, Z]; origins, directions [B, R, 3]; near, far [B, R];
    jitter [B, R, S] -> mask [B, R], rgb [B, R, 3]. ``importance``: hierarchical sampling (``render_rays``).
    """
    def render(*parts: Tensor) -> tuple[Tensor, Tensor]:
        return render_rays(network, parts[0], *parts[1:5], samples, last_interval=None, jitter=parts[5],
                           importance=importance)

    return in_micro_batches(render, micro_batch, z, origins, directions, near, far, jitter)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Parameters of ``module`` need no gradient inside (restored after): a fixed network's passes then compute no
    weight gradients (self-training's camera steps differentiate with respect to the cameras only)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in zip(module.parameters(), flags):
            parameter.requires_grad_(flag)


PRECISIONS = ("fp32", "bf16")


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward passes' numeric context: ``fp32`` (none) or ``bf16`` autocast (matrix products and convolutions
    in bfloat16, reductions and the losses in float32) on CPU or CUDA."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise Ss3dError(f"precision must be fp32 or bf16, got {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16)


class RenderObjective(nn.Module):
    """Encode the input images and volume-render rays: the forward pass of pre- and self-training, with the
    volume's samples per ray (and importance samples among them). ``micro_batch`` renders that many objects at a
    time (:func:`in_micro_batches`); ``precision`` as in :func:`autocast`."""

    def __init__(self, network: ReconstructionNetwork, volume: VolumeConfig, micro_batch: int = 0,
                 precision: str = "fp32") -> None:
        super().__init__()
        self.network, self.samples, self.importance = network, volume.samples_per_ray, volume.importance_samples
        self.micro_batch, self.precision = micro_batch, precision

    def render(self, z: Tensor, origins: Tensor, directions: Tensor, near: Tensor, far: Tensor,
               jitter: Tensor) -> tuple[Tensor, Tensor]:
        """Render rays of objects already encoded to z (self-training's camera steps reuse one encoding)."""
        with autocast(self.precision, z.device):
            mask, rgb = render_training_rays(self.network, z, self.samples, origins, directions, near, far, jitter,
                                             self.micro_batch, self.importance)
        return mask.float(), rgb.float()

    def forward(self, images: Tensor, origins: Tensor, directions: Tensor, near: Tensor, far: Tensor,
                jitter: Tensor, projection: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """images [B, 3, S, S]; origins, directions [B, R, 3]; near, far [B, R]; jitter [B, R, samples]
        (projection [B, 3, 4]: pixel-aligned networks) -> mask [B, R], rgb [B, R, 3]."""
        with autocast(self.precision, images.device):
            return self.render(self.network.encode(images, projection), origins, directions, near, far, jitter)


class ShapeObjective(RenderObjective):
    """Pretraining's forward pass with 3D supervision: render rays and also query the field at labelled points."""

    def forward(self, images: Tensor, origins: Tensor, directions: Tensor, near: Tensor, far: Tensor,
                jitter: Tensor, points: Tensor, projection: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """As :class:`RenderObjective`, plus points [B, P, 3] -> mask [B, R], rgb [B, R, 3], sigma_raw [B, P]."""
        with autocast(self.precision, images.device):
            z = self.network.encode(images, projection)
            mask, rgb = self.render(z, origins, directions, near, far, jitter)
            sigma, _ = self.network.decode(z, points)
        return mask, rgb, sigma.float()


class FieldObjective(nn.Module):
    """Encode the input images and query the field at points: the forward pass of distillation (``micro_batch``
    and ``precision`` as in :class:`RenderObjective`)."""

    def __init__(self, network: ReconstructionNetwork, micro_batch: int = 0, precision: str = "fp32") -> None:
        super().__init__()
        self.network, self.micro_batch, self.precision = network, micro_batch, precision

    def forward(self, images: Tensor, points: Tensor, projection: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """images [B, 3, S, S], points [B, N, 3] (projection [B, 3, 4]: pixel-aligned networks) -> sigma_raw [B, N],
        rgb_logits [B, N, 3]."""
        with autocast(self.precision, images.device):
            code = self.network.encode(images, projection)
            sigma, rgb = in_micro_batches(self.network.decode, self.micro_batch, code, points)
        return sigma.float(), rgb.float()


def render_loss(mask: Tensor, rgb: Tensor, target_mask: Tensor, target_rgb: Tensor, mask_weight: float,
                colour_weight: float, reduce_dims: tuple[int, ...] | None = None) -> Tensor:
    """Weighted squared errors of rendered mask [..., R] and colour [..., R, 3]; mean over everything, or over the
    ray dimension only (``reduce_dims`` given: per-hypothesis losses)."""
    mask_err = (mask - target_mask) ** 2
    colour_err = ((rgb - target_rgb) ** 2).mean(-1)
    err = mask_weight * mask_err + colour_weight * colour_err
    return err.mean() if reduce_dims is None else err.mean(dim=reduce_dims)



def occupancy_loss(sigma_raw: Tensor, labels: Tensor, threshold: float) -> Tensor:
    """Binary cross-entropy of inside/outside labels [B, P] (1 inside) with the logit ``sigma_raw - threshold``.

    The extraction threshold is the decision boundary, so the surface the labels teach is the surface marching cubes
    extracts; a density one unit above it is one logit more certain. Outside points are pushed below the threshold
    (and, past it, below 0, which rendering's ReLU reads as empty space). Example: sigma 3 at a threshold of 2 on an
    inside point costs log(1 + e^-1) = 0.313.
    """
    return nn.functional.binary_cross_entropy_with_logits(sigma_raw - threshold, labels)
