"""Image -> coloured mesh, and freshly initialised checkpoints: the functions behind ``ss3d-model`` commands."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import trimesh
from PIL import Image, ImageOps

from ss3d_data.atomic import atomic_write, atomic_write_bytes
from ss3d_data.config import data_config
from ss3d_data.errors import EmptySurface, Ss3dError
from ss3d_data.preprocess import Cropped, crop_to_mask
from ss3d_data.presets import load_preset, section_config
from ss3d_model.cameras import photo_projection
from ss3d_model.checkpoint import CheckpointMeta
from ss3d_model.config import ExtractConfig, ModelConfig
from ss3d_model.extract import extract_mesh
from ss3d_model.input_view import InputView, fit_input_view, input_colours
from ss3d_model.io import load_network, save_network
from ss3d_model.network import ReconstructionNetwork, load_imagenet_encoder
from ss3d_model.segment import auto_mask

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
MESH_SUFFIXES = (".glb", ".obj", ".ply")
MAX_PIXELS = 64_000_000  # larger inputs are refused: the model sees 224 px, and decoding them costs gigabytes
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
# The model sees a 224 px crop: below 16 px (image side, or the object's box in the mask) the crop is an upscaled
# blur, and beyond 20:1 the image is a strip; both gave junk meshes, so they are refused.
MIN_SIDE = 16
MAX_ASPECT = 20


def _open(path: Path, what: str) -> Image.Image:
    if not path.is_file():
        raise Ss3dError(f"{path}: no such {what} file")
    try:
        image = Image.open(path)
        if image.width * image.height > MAX_PIXELS:
            raise Ss3dError(f"{path}: {image.width}x{image.height} {what} is too large "
                            f"(over {MAX_PIXELS // 1_000_000} megapixels); downscale it first")
        image.load()
        # Phone photos are stored sideways with an EXIF orientation tag; masks are drawn on the displayed picture,
        # so both are turned upright before anything compares or crops them.
        image = ImageOps.exif_transpose(image)
    except Ss3dError:
        raise
    except Image.DecompressionBombError:
        raise Ss3dError(f"{path}: {what} is too large to decode safely; downscale it first") from None
    except Exception as err:  # noqa: BLE001 - PIL raises many types for broken files
        raise Ss3dError(f"{path}: unreadable {what} ({err.__class__.__name__}: {err})") from None
    if image.mode in _SIXTEEN_BIT or image.info.get("bits", 8) > 8:
        raise Ss3dError(f"{path}: {image.mode} {what} is not 8-bit; convert it to 8 bits per channel")
    return image


@dataclass(frozen=True)
class LoadedInput:
    """An input image and the mask the model will use."""

    rgb: np.ndarray  # [H, W, 3] uint8
    mask: np.ndarray  # [H, W] uint8, 255 = object
    mask_source: str  # where the mask came from: "mask file", "alpha" or "automatic"


def load_input(image_path: Path, mask_path: Path | None = None) -> LoadedInput:
    """Read an 8-bit RGB(A) image and its mask: the file at ``mask_path`` when given, else the image's alpha
    channel, else a mask segmented automatically (``ss3d_model.segment.auto_mask``; the user should check it)."""
    image = _open(Path(image_path), "image")
    if image.mode in ("L", "LA", "1"):
        raise Ss3dError(f"{image_path}: the image is grayscale; ss3d reconstructs colour (RGB) images")
    short, long = sorted(image.size)
    if short < MIN_SIDE or long > MAX_ASPECT * short:
        raise Ss3dError(f"{image_path}: a {image.width}x{image.height} image is too small or too elongated to "
                        f"reconstruct (at least {MIN_SIDE} px a side, at most {MAX_ASPECT}:1)")
    has_alpha = image.mode in ("RGBA", "PA") or (image.mode == "P" and "transparency" in image.info)
    rgba = np.asarray(image.convert("RGBA" if has_alpha else "RGB"))
    rgb = np.ascontiguousarray(rgba[..., :3])
    if mask_path is not None:
        mask_image = _open(Path(mask_path), "mask")
        if mask_image.mode not in ("L", "1", "P"):
            raise Ss3dError(f"{mask_path}: the mask must be single-channel 8-bit grayscale, not {mask_image.mode}")
        mask = np.asarray(mask_image.convert("L"))
        if mask.shape != rgb.shape[:2]:
            raise Ss3dError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                            f"{rgb.shape[1]}x{rgb.shape[0]}")
        return LoadedInput(rgb, mask, "mask file")
    if has_alpha:
        return LoadedInput(rgb, np.ascontiguousarray(rgba[..., 3]), "alpha")
    try:
        return LoadedInput(rgb, auto_mask(rgb), "automatic")
    except Ss3dError as err:
        raise Ss3dError(f"{image_path}: {err}", hint=err.hint) from None


@dataclass(frozen=True)
class InputCrop:
    """How a checkpoint's encoder inputs are cut beyond the mask box (``ss3d_data.preprocess.crop_to_mask``): the
    defaults are the crop every ss3d-trained checkpoint was trained with; a checkpoint that needs another records
    it in ``extra["input"]`` (:func:`input_settings`)."""

    margin_px: int = 0       # zero border on every side of the square-padded box, in the photo's own pixels
    soft_mask: bool = False  # photo times mask / 255 instead of zero below the mask threshold


PLAIN_CROP = InputCrop()
_INPUT_KEYS = {"mask_threshold": (int, float), "crop_margin_px": (int,), "soft_mask": (bool,)}


def input_record(meta: CheckpointMeta) -> dict[str, object]:
    """The checkpoint's ``extra["input"]`` record, checked: {} when absent; a malformed one is refused (guessing
    would feed the weights inputs unlike those they were trained on)."""
    record = meta.extra.get("input")
    if record is None:
        return {}
    if not isinstance(record, dict):
        raise Ss3dError(f"the checkpoint's input record must be an object, got {type(record).__name__}")
    for key, value in record.items():
        kinds = _INPUT_KEYS.get(key)
        if kinds is None:
            raise Ss3dError(f"the checkpoint's input record has an unknown key {key!r} (this ss3d knows "
                            f"{', '.join(_INPUT_KEYS)})", hint="a newer ss3d wrote it; use that release")
        if isinstance(value, bool) != (kinds == (bool,)) or not isinstance(value, kinds):
            raise Ss3dError(f"the checkpoint's input record {key} = {value!r} has the wrong type")
    threshold, margin = record.get("mask_threshold", 0.5), record.get("crop_margin_px", 0)
    if not 0 <= threshold <= 1 or margin < 0:
        raise Ss3dError(f"the checkpoint's input record is out of range ({record})")
    return dict(record)


def input_settings(meta: CheckpointMeta) -> InputCrop:
    """The crop a checkpoint's encoder expects (``extra["input"]``; absent: :data:`PLAIN_CROP`). Presets never
    change it: it belongs to the weights, not to a meshing choice."""
    record = input_record(meta)
    return InputCrop(int(record.get("crop_margin_px", 0)), bool(record.get("soft_mask", False)))


def input_crop(rgb: np.ndarray, mask: np.ndarray, input_size: int, mask_threshold: float,
               crop: InputCrop = PLAIN_CROP) -> Cropped:
    """The paper's preprocessing (crop to the mask box, resize, zero-pad), or the one ``crop`` names. An object
    whose mask box is under ``MIN_SIDE`` px on its longer side is refused: scaled up to the input size it is only a
    blur."""
    rows, cols = np.nonzero(np.asarray(mask) >= round(mask_threshold * 255))
    if len(rows) and max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 < MIN_SIDE:
        raise Ss3dError(f"the object is only {cols.max() - cols.min() + 1}x{rows.max() - rows.min() + 1} px in the "
                        f"mask; at least {MIN_SIDE} px are needed", hint="use a larger photo of the object")
    return crop_to_mask(rgb, mask, input_size, mask_threshold, crop.margin_px, crop.soft_mask)


def image_tensor(rgb: np.ndarray, mask: np.ndarray, input_size: int, mask_threshold: float,
                 crop: InputCrop = PLAIN_CROP) -> torch.Tensor:
    """:func:`input_crop` -> [1, 3, S, S] float in [0, 1]."""
    return _crop_tensor(input_crop(rgb, mask, input_size, mask_threshold, crop))


def _crop_tensor(cropped: Cropped) -> torch.Tensor:
    return torch.from_numpy(cropped.image).permute(2, 0, 1)[None].float() / 255.0


def encode_input(network: ReconstructionNetwork, rgb: np.ndarray, mask: np.ndarray, mask_threshold: float = 0.5,
                 crop: InputCrop = PLAIN_CROP) -> torch.Tensor:
    """One segmented image -> its code [1, code_dim] (a pixel-aligned network's input view is the view frame's
    camera: ``ss3d_model.cameras.photo_projection``). ``crop``: the checkpoint's :func:`input_settings`."""
    size = network.config.input_size
    cropped = input_crop(rgb, mask, size, mask_threshold, crop)
    images = _crop_tensor(cropped)
    projection = None
    if network.config.pixel_features:
        crop = torch.tensor([[cropped.scale, *cropped.offset]], dtype=torch.float32)
        projection = photo_projection(crop, rgb.shape[1], rgb.shape[0], size)
    device = next(network.parameters()).device
    return network.encode(images.to(device), None if projection is None else projection.to(device))


def reconstruct_mesh(network: ReconstructionNetwork, rgb: np.ndarray, mask: np.ndarray, extract: ExtractConfig,
                     mask_threshold: float = 0.5, threshold: float | None = None, crop: InputCrop = PLAIN_CROP
                     ) -> trimesh.Trimesh:
    """One segmented image -> coloured mesh in canonical units (a pixel-aligned model's: in the input camera's view
    frame, posed as the image shows the object) (``threshold`` overrides the preset's level; ``crop`` is the
    checkpoint's :func:`input_settings`).
    :class:`~ss3d_data.errors.EmptySurface` when the density never reaches the level. With ``extract.colours ==
    "input"`` the vertex colours come from the image (:func:`colour_from_input`)."""
    level = extract.density_threshold if threshold is None else threshold
    with torch.inference_mode():
        z = encode_input(network, rgb, mask, mask_threshold, crop)
        resolution, coarse, box = extract.grid(network.config.pixel_features > 0)
        mesh = extract_mesh(network, z[0], resolution, coarse, level, box)
    if len(mesh.faces) == 0:
        raise EmptySurface(f"no surface: the predicted density never reaches {level}",
                        hint="an untrained checkpoint predicts almost no density; try a lower --threshold")
    if extract.colours == "input":
        colour_from_input(mesh, rgb, mask, mask_threshold)
    return mesh


COLOUR_CROP = 128  # colours are sampled from a 128 px crop: finer than a 64^3 mesh's vertex spacing


def colour_from_input(mesh: trimesh.Trimesh, rgb: np.ndarray, mask: np.ndarray, mask_threshold: float = 0.5
                      ) -> InputView:
    """Replace ``mesh``'s vertex colours by the input image's, seen through the view that best reproduces the mask
    (``ss3d_model.input_view``); returns that view (its ``silhouette_iou`` says how well the mesh fits the mask)."""
    crop = crop_to_mask(rgb, mask, COLOUR_CROP, mask_threshold)
    inside = crop.mask >= round(mask_threshold * 255)
    view = fit_input_view(mesh.vertices, inside)
    colours = input_colours(mesh.vertices, view, crop.image, inside)
    mesh.visual.vertex_colors = np.concatenate([colours, np.full((len(colours), 1), 255, np.uint8)], 1)
    return view


def check_mesh_path(path: Path) -> str:
    """The mesh format of an output path (its lower-case suffix); refuses other suffixes."""
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise Ss3dError(f"{path}: mesh output must end in {', '.join(MESH_SUFFIXES)}")
    return suffix


def write_mesh(mesh: trimesh.Trimesh, path: Path) -> None:
    """Write GLB, OBJ or PLY (by suffix) atomically."""
    suffix = check_mesh_path(path)
    data = mesh.export(file_type=suffix[1:])
    atomic_write_bytes(path, data if isinstance(data, bytes) else data.encode("utf-8"))


def write_png(image: np.ndarray, path: Path) -> None:
    with atomic_write(path) as handle:
        Image.fromarray(image).save(handle, format="PNG")


@dataclass(frozen=True)
class Job:
    image: Path
    mask: Path | None
    out: Path
    turntable: Path | None
    auto_mask: Path | None = None  # where an automatic mask is written (no mask file given): <mesh stem>.mask.png


def plan_jobs(images: list[Path], mask: Path | None, out: Path, turntable: Path | None, mesh_format: str,
              checkpoint: Path | None = None) -> list[Job]:
    """Single mode (one image file): ``out`` is the mesh file. Batch mode (a folder or several images): ``out`` is
    a folder receiving ``<stem>.<format>`` (and ``<stem>.turntable.png`` when ``turntable`` is a folder); ``mask``,
    if given, is a folder of ``<stem>.png`` masks. Every output path is checked before any work is done: right
    suffix, no input (images, masks, ``checkpoint``) overwritten, no two outputs the same file. Existing files that
    are not inputs are overwritten, so re-running a command replaces its results."""
    jobs = [replace(job, auto_mask=job.out.with_name(f"{job.out.stem}.mask.png") if job.mask is None else None)
            for job in _plan(images, mask, out, turntable, mesh_format)]
    _check_outputs(jobs, checkpoint)
    return jobs


def _check_outputs(jobs: list[Job], checkpoint: Path | None) -> None:
    inputs = {p.resolve() for job in jobs for p in (job.image, job.mask) if p is not None}
    if checkpoint is not None:
        inputs.add(checkpoint.resolve())
    written: dict[Path, str] = {}
    for job in jobs:
        check_mesh_path(job.out)
        if job.turntable is not None and job.turntable.suffix.lower() != ".png":
            raise Ss3dError(f"{job.turntable}: --turntable writes a PNG; its name must end in .png")
        # The automatic mask is checked even for images with alpha (which need none): refusing early beats
        # finding out after the network ran.
        for path, what in ((job.out, "mesh"), (job.turntable, "turntable"), (job.auto_mask, "automatic mask")):
            if path is None:
                continue
            key = path.resolve()
            if key in inputs:
                raise Ss3dError(f"{path}: the {what} would overwrite an input file",
                                hint="write the outputs elsewhere (--out, --turntable), pass --mask, or rename the "
                                "input")
            if key in written:
                raise Ss3dError(f"{path}: the {what} and the {written[key]} would be the same file")
            written[key] = what


def _plan(images: list[Path], mask: Path | None, out: Path, turntable: Path | None, mesh_format: str
          ) -> list[Job]:
    if not images:
        raise Ss3dError("no input image given")
    files: list[Path] = []
    for item in images:
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise Ss3dError(f"{item}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files.extend(found)
        else:
            files.append(item)
    if len(images) == 1 and not images[0].is_dir():
        if mask is not None and mask.is_dir():
            raise Ss3dError(f"{mask}: for a single image, --mask is the mask file, not a folder")
        return [Job(files[0], mask, out, turntable)]
    if out.suffix.lower() in MESH_SUFFIXES:
        raise Ss3dError(f"{out}: with several images, --out is a folder, not a mesh file")
    if mask is not None and not mask.is_dir():
        raise Ss3dError(f"{mask}: with several images, --mask is a folder of <image stem>.png masks")
    if turntable is not None and turntable.suffix.lower() == ".png":
        raise Ss3dError(f"{turntable}: with several images, --turntable is a folder")
    suffix = "." + mesh_format.lower().lstrip(".")
    if suffix not in MESH_SUFFIXES:
        raise Ss3dError(f"mesh format {mesh_format!r} is not one of glb, obj, ply")
    stems = [f.stem for f in files]
    if len(set(stems)) != len(stems):
        raise Ss3dError("two input images share a file name stem; their meshes would overwrite each other")
    return [Job(f, mask / f"{f.stem}.png" if mask is not None else None, out / f"{f.stem}{suffix}",
                turntable / f"{f.stem}.turntable.png" if turntable is not None else None) for f in files]


def init_checkpoint(preset: str, out: str | os.PathLike[str], imagenet: str | os.PathLike[str] | None = None,
                    seed: int = 0) -> CheckpointMeta:
    """Write a freshly initialised network (stage ``init``): ImageNet encoder weights from ``imagenet`` or
    torchvision's cache when present, random otherwise (recorded in ``encoder_init``)."""
    loaded = load_preset(preset)
    config = ModelConfig.from_preset(loaded)
    torch.manual_seed(seed)
    network = ReconstructionNetwork(config)
    used = load_imagenet_encoder(network, imagenet)
    meta = CheckpointMeta(model_config=config.to_dict(), stage="init", preset=loaded.name,
                          encoder_init="imagenet" if used else "random", extra={"seed": seed})
    save_network(out, network, meta)
    return meta


def inference_settings(meta: CheckpointMeta, preset: str | None = None) -> tuple[ExtractConfig, float]:
    """(extraction settings, mask threshold) to mesh a checkpoint with: those of ``preset`` when given, else those the
    checkpoint records (training stages store their preset's ``[extract]`` section and mask threshold in
    ``extra``), else those of the preset it names. A checkpoint trained with the ``cpu`` preset thus meshes at the
    cpu threshold without the user repeating ``--preset cpu``. A mask threshold in the checkpoint's input record
    (``extra["input"]``, :func:`input_settings`) wins over every preset: it decides the crop the weights see."""
    extract, mask_threshold = _preset_or_recorded(meta, preset)
    recorded = input_record(meta).get("mask_threshold")
    return extract, mask_threshold if recorded is None else float(recorded)


def override_grid(extract: ExtractConfig, resolution: int | None = None, coarse_resolution: int | None = None
                  ) -> ExtractConfig:
    """``extract`` with another extraction grid (``--resolution``, ``--coarse-resolution``; equal values: dense
    extraction, every lattice point evaluated). A resolution alone keeps the recorded coarse grid where that still
    divides it by a power of two, else it is extracted densely."""
    if resolution is None and coarse_resolution is None:
        return extract
    fine = extract.resolution if resolution is None else resolution
    if coarse_resolution is not None:
        coarse = coarse_resolution
    else:
        coarse = extract.coarse_resolution if _power_of_two_ratio(fine, extract.coarse_resolution) else fine
    for option, value in (("--resolution", fine), ("--coarse-resolution", coarse)):
        if value < 2:
            raise Ss3dError(f"{option} must be >= 2, got {value}")
    if not _power_of_two_ratio(fine, coarse):
        raise Ss3dError(f"--resolution {fine} must be --coarse-resolution {coarse} times a power of two",
                        hint="equal values extract densely (the authors' demo: --resolution 99 --coarse-resolution "
                        "99, 100 lattice points per axis)")
    return replace(extract, resolution=fine, coarse_resolution=coarse)


def _power_of_two_ratio(fine: int, coarse: int) -> bool:
    ratio = fine // coarse if coarse > 0 else 0
    return ratio >= 1 and ratio * coarse == fine and not ratio & (ratio - 1)


def _preset_or_recorded(meta: CheckpointMeta, preset: str | None) -> tuple[ExtractConfig, float]:
    if preset is None and isinstance(meta.extra.get("extract"), dict):
        try:
            extract = section_config(ExtractConfig, dict(meta.extra["extract"]), "extract")
            return extract, float(meta.extra.get("mask_threshold", 0.5))
        except (Ss3dError, TypeError, ValueError):
            pass  # a malformed record: fall back to the named preset
    name = preset if preset is not None else (meta.preset or "paper")
    try:
        loaded = load_preset(name)
    except Ss3dError:
        raise Ss3dError(f"the checkpoint's preset {name!r} is not available here",
                        hint="name the extraction settings with --preset (e.g. cpu, paper or a .toml path)") from None
    return ExtractConfig.from_preset(loaded), data_config(loaded).mask_threshold


def load_for_inference(checkpoint: Path, compile: bool = False
                       ) -> tuple[ReconstructionNetwork, CheckpointMeta, bool]:
    """Load a network in eval mode; with ``compile``, try ``torch.compile`` on the decoder.
    -> (network, its metadata, compiled)"""
    network, meta = load_network(checkpoint)
    network.eval()
    return network, meta, (network.enable_compile() if compile else False)
