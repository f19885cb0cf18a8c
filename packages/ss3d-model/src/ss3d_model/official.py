"""The authors' released model as an ss3d checkpoint: the function behind ``ss3d-model import-official``.

The authors of "Pre-train, Self-train, Distill" (CVPR 2022; project page https://shubhtuls.github.io/ss3d/) released
their final distilled model as one file, ``distilled_model.torch``, under CC-BY-NC 4.0 (research only). It is a
plain PyTorch state dict of the ``paper`` preset's architecture under the authors' module names. ss3d never
downloads it and never ships it; :func:`import_official` converts a copy the user fetched:

- **Reading**: ``torch.load(weights_only=True)``, which refuses any pickle that would import or run code; the result
  must be a flat mapping of names to tensors.
- **Names**: an explicit table (:data:`NAME_TABLE`, the ResNet trunk by prefix); a missing, unexpected or
  mis-shaped tensor is refused by name before anything is written.
- **Frame**: the authors' code places every camera with pytorch3d's look-at (up = +Y, the azimuth-0 camera on +Z),
  so their network reads points with X to the right, Y up and Z towards that camera. ss3d's canonical frame has
  X to the right, Y away from the default viewer and Z up (docs/formats.md). The first sine layer is the only one
  that sees points, so the importer folds the turn ``p_authors = (x, z, -y)`` into its weight (columns permuted and
  one negated: exact in floating point); the imported network then reads and meshes in ss3d's frame.
- **Inputs and meshes**: the checkpoint records the authors' input crop (box of mask > 0.3, photo times its soft
  mask, square padding, 30 px margin at the photo's scale, resize to 224) in ``extra["input"]`` and their density
  level 3.0 and box [-0.5, 0.5]^3 in ``extra["extract"]``, so ``reconstruct``, ``serve`` and ``ss3d-eval`` feed and
  mesh it as their demo does (coarse-to-fine at 128^3 by default; ``--resolution 99 --coarse-resolution 99`` is
  their dense grid of 100 lattice points per axis).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ss3d_data.errors import Ss3dError
from ss3d_data.presets import load_preset
from ss3d_model.checkpoint import CheckpointMeta
from ss3d_model.config import ExtractConfig, ModelConfig
from ss3d_model.io import save_network
from ss3d_model.network import ReconstructionNetwork

RELEASE_FILE = "distilled_model.torch"
PAPER = "Pre-train, Self-train, Distill: A simple recipe for Supersizing 3D Reconstruction (CVPR 2022)"
AUTHORS = "Kalyan Vasudev Alwala, Abhinav Gupta, Shubham Tulsiani"
PROJECT_PAGE = "https://shubhtuls.github.io/ss3d/"
LICENCE = "CC-BY-NC 4.0: research only, non-commercial"

# The architecture of the release (the authors' model definition), which the paper preset's [model] must equal.
RELEASE_ARCHITECTURE = {"encoder_arch": "resnet34", "input_size": 224, "hidden": 256, "modulated_layers": 5,
                        "omega0": 30.0, "density_scale": 1.0, "pixel_features": 0}
# The authors' demo and image-collection loader: box of mask / 255 > 0.3, which on 8-bit masks keeps values from 77
# up; ss3d keeps mask >= round(t * 255), so t = 77 / 255 selects exactly those pixels (0.3 itself would keep 76).
RELEASE_MASK_THRESHOLD = 77 / 255
RELEASE_CROP_MARGIN_PX = 30
RELEASE_DENSITY_THRESHOLD = 3.0  # marching cubes on the raw density at this level, as their demo
RELEASE_BOX_HALF_SIZE = 0.5      # their demo's grid spans [-0.5, 0.5]^3

# ss3d module -> the authors' module, for every parameterised module of the paper network outside the trunk.
_MODULES = {
    "encoder.project": "encoder.fc.0",
    "encoder.residual_in": "encoder.fc.3.linear1",
    "encoder.residual_out": "encoder.fc.3.linear2",
    "decoder.first": "decoder.net.0.linear",
    **{f"decoder.layers.{i}": f"decoder.net.{i + 1}.linear" for i in range(5)},
    "decoder.head": "decoder.net.6",
}
_TRUNK = ("encoder.trunk.", "encoder.features.")  # the torchvision ResNet-34, same names under another prefix
FIRST_WEIGHT = "decoder.first.weight"


def _authors_name(ss3d_name: str) -> str:
    if ss3d_name.startswith(_TRUNK[0]):
        return _TRUNK[1] + ss3d_name.removeprefix(_TRUNK[0])
    module, _, tensor = ss3d_name.rpartition(".")
    if module not in _MODULES:
        raise Ss3dError(f"the paper network's tensor {ss3d_name!r} has no counterpart in the authors' release",
                        hint="the paper preset's architecture changed; the importer's name table must follow it")
    return f"{_MODULES[module]}.{tensor}"


def release_config() -> ModelConfig:
    """The paper preset's model config, checked against the release's architecture."""
    config = ModelConfig.from_preset(load_preset("paper"))
    differ = [f"{k} {getattr(config, k)!r} (release: {v!r})" for k, v in RELEASE_ARCHITECTURE.items()
              if getattr(config, k) != v]
    if differ:
        raise Ss3dError(f"the paper preset's [model] no longer matches the authors' release: {', '.join(differ)}")
    return config


def _paper_tensors(config: ModelConfig) -> dict[str, torch.Tensor]:
    """The paper network's state dict as shapes and dtypes only (meta tensors: nothing allocated or initialised)."""
    with torch.device("meta"):
        return ReconstructionNetwork(config).state_dict()


def name_table(config: ModelConfig | None = None) -> dict[str, str]:
    """The authors' tensor name -> ss3d's, for every tensor of the release."""
    return {_authors_name(name): name for name in _paper_tensors(config or release_config())}


def release_layout(config: ModelConfig | None = None) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """The authors' tensor name -> (shape, dtype) of every tensor the release holds (``num_batches_tracked``:
    int64, everything else float32)."""
    return {_authors_name(name): (tuple(t.shape), t.dtype)
            for name, t in _paper_tensors(config or release_config()).items()}


def _turn_first_layer(weight: torch.Tensor) -> torch.Tensor:
    """W [H, 3] reading the authors' axes -> W' reading ss3d's: W' p = W (x, z, -y) for p = (x, y, z)."""
    return weight[:, [0, 2, 1]] * torch.tensor([1.0, -1.0, 1.0], dtype=weight.dtype)


def read_release(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The release's tensors by the authors' names. Refuses, in one line, a file that is missing, unreadable,
    truncated, a pickle of anything but tensors in (ordered) dicts, or not a flat mapping of names to tensors."""
    p = Path(path)
    if not p.is_file():
        raise Ss3dError(f"{p}: no such file")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))  # the first class or function the file would import
        if found:
            raise Ss3dError(f"{p}: the file holds Python objects, not only tensors ({found.group(1)}); refused "
                            "without running it", hint="the authors' release is a plain state dict of tensors; "
                            "fetch it again from the authors") from None
        raise Ss3dError(f"{p}: not a readable PyTorch file (damaged, truncated or another format)") from None
    except (EOFError, RuntimeError, ValueError, OSError) as err:
        reason = str(err).splitlines()[0][:120] if str(err) else err.__class__.__name__
        raise Ss3dError(f"{p}: not a readable PyTorch file, or truncated ({reason})",
                        hint="the download may be incomplete; compare its size and sha256 with the authors'") from None
    if not isinstance(state, Mapping):
        raise Ss3dError(f"{p}: holds a {type(state).__name__}, not a state dict (a mapping of names to tensors)")
    tensors: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if not isinstance(name, str):
            raise Ss3dError(f"{p}: a state dict name is a {type(name).__name__} ({name!r}), not a string")
        if isinstance(value, Mapping):
            raise Ss3dError(f"{p}: entry {name!r} is a nested mapping, not a tensor; the release is a flat state "
                            "dict", hint="a training checkpoint (e.g. Lightning's) is not the released model")
        if not isinstance(value, torch.Tensor):
            raise Ss3dError(f"{p}: entry {name!r} is a {type(value).__name__}, not a tensor")
        if value.layout != torch.strided or value.is_quantized:
            raise Ss3dError(f"{p}: tensor {name!r} is not a dense tensor")
        tensors[name] = value.detach()
    return tensors


def convert_release(tensors: Mapping[str, torch.Tensor], where: str = "release") -> ReconstructionNetwork:
    """The authors' tensors -> the paper network in ss3d's frame (eval mode). Every name, shape and dtype kind is
    checked first; the first problem is refused by name."""
    config = release_config()
    expected = _paper_tensors(config)
    table = {_authors_name(name): name for name in expected}
    missing = [name for name in table if name not in tensors]
    unexpected = sorted(name for name in tensors if name not in table)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} ({', '.join(unexpected[:3])}"
                         f"{', ...' if len(unexpected) > 3 else ''})")
        raise Ss3dError(f"{where}: not the authors' distilled model: tensors {'; '.join(parts)}",
                        hint=f"ss3d imports {RELEASE_FILE}, the authors' final distilled model, only")
    mapped: dict[str, torch.Tensor] = {}
    for authors, ours in table.items():
        value, want = tensors[authors], expected[ours]
        if tuple(value.shape) != tuple(want.shape):
            raise Ss3dError(f"{where}: tensor {authors!r} is {list(value.shape)}, the release's is "
                            f"{list(want.shape)}")
        integer = not want.dtype.is_floating_point
        # Floating tensors of any width are taken (a half-precision copy converts exactly); a counter stays integer.
        fits = value.dtype.is_floating_point if not integer else \
            not (value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool)
        if not fits:
            kind = "an integer" if integer else "a floating-point"
            raise Ss3dError(f"{where}: tensor {authors!r} is {value.dtype}, the release's is {kind} tensor")
        value = value.to(want.dtype)
        # Extremes instead of an elementwise test: NaN propagates into max and min, and no mask is allocated.
        if not integer and value.numel() and not (torch.isfinite(value.amax()) and torch.isfinite(value.amin())):
            raise Ss3dError(f"{where}: tensor {authors!r} holds NaN or infinite values")
        mapped[ours] = value
    mapped[FIRST_WEIGHT] = _turn_first_layer(mapped[FIRST_WEIGHT])
    network = ReconstructionNetwork(config)
    network.load_state_dict(mapped, strict=True)
    return network.eval()


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def release_meta(source: Path, sha256: str, config: ModelConfig) -> CheckpointMeta:
    """The checkpoint metadata of an imported release: where it came from, and how to feed and mesh it."""
    extract = ExtractConfig.from_preset(load_preset("paper"))
    extract_record = {"resolution": extract.resolution, "coarse_resolution": extract.coarse_resolution,
                      "density_threshold": RELEASE_DENSITY_THRESHOLD, "box_half_size": RELEASE_BOX_HALF_SIZE,
                      "colours": extract.colours}
    origin = {
        "kind": "authors-release",
        "file": source.name,
        "sha256": sha256,
        "paper": PAPER,
        "authors": AUTHORS,
        "project_page": PROJECT_PAGE,
        "licence": LICENCE,
        "frame": "ss3d canonical (X right, Y away from the default viewer, Z up); turned from the authors' axes "
                 "(X right, Y up, Z towards their azimuth-0 camera): p_authors = (x, z, -y)",
    }
    return CheckpointMeta(
        model_config=config.to_dict(), stage="distill", preset="paper",
        # The authors' encoder started from torchvision's ImageNet ResNet-34 (the paper: ImageNet initialisation).
        encoder_init="imagenet",
        extra={"origin": origin, "extract": extract_record, "mask_threshold": RELEASE_MASK_THRESHOLD,
               "input": {"mask_threshold": RELEASE_MASK_THRESHOLD, "crop_margin_px": RELEASE_CROP_MARGIN_PX,
                         "soft_mask": True}},
    )


def import_official(source: str | os.PathLike[str], out: str | os.PathLike[str]) -> CheckpointMeta:
    """Convert the authors' ``distilled_model.torch`` at ``source`` into the ss3d checkpoint ``out`` (written
    atomically, only after every tensor was checked). -> the written metadata."""
    source, out = Path(source), Path(out)
    if out.suffix != ".safetensors":
        raise Ss3dError(f"{out}: the checkpoint's name must end in .safetensors")
    if out.exists() and source.exists() and out.resolve() == source.resolve():
        raise Ss3dError(f"{out}: the checkpoint would overwrite the release it is converted from")
    network = convert_release(read_release(source), str(source))
    meta = release_meta(source, file_sha256(source), network.config)
    save_network(out, network, meta)
    return meta
