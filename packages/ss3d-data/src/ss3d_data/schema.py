"""The shard sample contract (format ``ss3d-shard``, version 1). Normative text: ``docs/formats.md``.

A shard is a POSIX tar file named ``<prefix>-NNNNNN.tar`` (webdataset layout): files sharing a key (the name up to
its first dot) form one sample. Keys match ``[A-Za-z0-9_-]+``: no dots, since webdataset splits at the first dot.

Per sample:

- ``<key>.meta.json``  (required) ``{"format": "ss3d-shard", "version": 1, "kind": "views"|"image", "key", "category",
  "instance_id", "source", "licence", "attribution", "split", "num_views"}``;
- ``<key>.rgbNNN.png`` or ``.rgbNNN.jpg`` for view NNN = 000 .. num_views-1: 8-bit RGB;
- ``<key>.maskNNN.png``: 8-bit grayscale, same size as its image, 255 = foreground (soft values allowed);
- ``<key>.occupancy.json`` (optional, ``kind == "views"`` only, since version 2): the instance's solid occupancy
  grid in the canonical frame (:mod:`ss3d_data.occupancy`), labels for pretraining's 3D supervision;
- ``<key>.cameras.json`` (``kind == "views"`` only; forbidden for ``"image"``): ``{"intrinsics": [V][3][3],
  "cam2world": [V][4][4]}`` in the canonical frame (X right, Y away from the default viewer, Z up; objects in
  [-0.5, 0.5]^3), camera axes in the OpenCV convention (x right, y down, z forward), pixel (u, v) centres at
  integer + 0.5 from the top-left image corner: ``[u, v, 1]^T ~ K @ X_cam``.

Synthetic multi-view renders are ``kind = "views"`` grouped by instance (one sample holds all views of one
instance); image collections are ``kind = "image"`` with one view and no cameras (an evaluation-only camera may live
in a sidecar file, never in the training sample).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from ss3d_data.errors import Ss3dError
from ss3d_data.occupancy import Occupancy

SHARD_FORMAT = "ss3d-shard"
SHARD_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 2 added the optional occupancy member; a version-1 sample reads as one without it
KINDS = ("views", "image")
SPLITS = ("train", "val", "test")
_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_MAX_SIDE = 4096


class ShardFormatError(Ss3dError):
    """A shard sample does not follow the contract."""


def make_key(*parts: str) -> str:
    """A valid sample key from free-form parts (characters outside ``[A-Za-z0-9_-]`` become ``_``)."""
    key = "-".join(re.sub(r"[^A-Za-z0-9_-]+", "_", str(p)).strip("_") for p in parts if str(p))
    if not key:
        raise ShardFormatError(f"cannot make a sample key from {parts!r}")
    return key


@dataclass(frozen=True)
class SampleInfo:
    kind: Literal["views", "image"]
    key: str
    category: str
    instance_id: str
    source: str
    licence: str
    split: str = "train"
    attribution: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # free-form, e.g. the renderer's settings

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ShardFormatError(f"sample kind must be one of {KINDS}, got {self.kind!r}")
        if not _KEY.match(self.key):
            raise ShardFormatError(f"sample key {self.key!r} must match [A-Za-z0-9_-]+ (no dots)")
        if self.split not in SPLITS:
            raise ShardFormatError(f"sample {self.key}: split must be one of {SPLITS}, got {self.split!r}")
        for name in ("category", "instance_id", "source", "licence"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ShardFormatError(f"sample {self.key}: {name} must be a non-empty string")


@dataclass
class Sample:
    """One decoded sample. ``images`` [V, H, W, 3] uint8, ``masks`` [V, H, W] uint8 (255 = foreground),
    ``intrinsics`` [V, 3, 3] and ``cam2world`` [V, 4, 4] float32 or None when cameras are unknown; ``occupancy``
    the instance's solid (``views`` samples written from a mesh manifest) or None."""

    info: SampleInfo
    images: np.ndarray
    masks: np.ndarray
    intrinsics: np.ndarray | None = None
    cam2world: np.ndarray | None = None
    occupancy: Occupancy | None = None

    @property
    def num_views(self) -> int:
        return int(self.images.shape[0])

    def validate(self) -> None:
        info, key = self.info, self.info.key
        info.validate()
        imgs, masks = self.images, self.masks
        if imgs.dtype != np.uint8 or imgs.ndim != 4 or imgs.shape[-1] != 3 or imgs.shape[0] < 1:
            raise ShardFormatError(f"sample {key}: images must be uint8 [V, H, W, 3], got {imgs.dtype} {imgs.shape}")
        if masks.dtype != np.uint8 or masks.shape != imgs.shape[:3]:
            raise ShardFormatError(
                f"sample {key}: masks must be uint8 {imgs.shape[:3]} to match the images, got {masks.dtype} "
                f"{masks.shape}"
            )
        if info.kind == "image":
            if imgs.shape[0] != 1:
                raise ShardFormatError(f"sample {key}: an 'image' sample holds exactly one view")
            if self.intrinsics is not None or self.cam2world is not None:
                raise ShardFormatError(f"sample {key}: an 'image' sample must not carry cameras")
            if self.occupancy is not None:
                raise ShardFormatError(f"sample {key}: an 'image' sample must not carry occupancy")
        else:
            v = imgs.shape[0]
            if self.intrinsics is None or self.cam2world is None:
                raise ShardFormatError(f"sample {key}: a 'views' sample needs intrinsics and cam2world")
            if self.intrinsics.shape != (v, 3, 3) or self.cam2world.shape != (v, 4, 4):
                raise ShardFormatError(
                    f"sample {key}: cameras must be [{v}, 3, 3] and [{v}, 4, 4], got {self.intrinsics.shape} and "
                    f"{self.cam2world.shape}"
                )
            if not (np.isfinite(self.intrinsics).all() and np.isfinite(self.cam2world).all()):
                raise ShardFormatError(f"sample {key}: cameras contain non-finite values")
            if not np.allclose(self.cam2world[:, 3], [0, 0, 0, 1], atol=1e-5):
                raise ShardFormatError(f"sample {key}: cam2world last row must be [0, 0, 0, 1]")
        for i in range(imgs.shape[0]):
            if not (masks[i] >= 128).any():
                raise ShardFormatError(f"sample {key}: mask of view {i} is empty")


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def encode_sample(sample: Sample) -> dict[str, Any]:
    """Sample -> webdataset dict (``__key__`` plus one bytes value per file extension). Validates first."""
    sample.validate()
    info = sample.info
    meta = {"format": SHARD_FORMAT, "version": SHARD_VERSION, **asdict(info), "num_views": sample.num_views}
    out: dict[str, Any] = {"__key__": info.key, "meta.json": json.dumps(meta, sort_keys=True).encode()}
    for i in range(sample.num_views):
        out[f"rgb{i:03d}.png"] = _png(sample.images[i])
        out[f"mask{i:03d}.png"] = _png(sample.masks[i])
    if info.kind == "views":
        cams = {"intrinsics": sample.intrinsics.tolist(), "cam2world": sample.cam2world.tolist()}  # type: ignore[union-attr]
        out["cameras.json"] = json.dumps(cams).encode()
    if sample.occupancy is not None:
        out["occupancy.json"] = sample.occupancy.to_json()
    return out


def _decode_image(data: bytes, mode: str, what: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width > _MAX_SIDE or img.height > _MAX_SIDE:
                raise ShardFormatError(f"{what} is {img.width}x{img.height}, larger than {_MAX_SIDE} px")
            expected = {"RGB": ("RGB",), "L": ("L",)}[mode]
            if img.mode not in expected:
                raise ShardFormatError(f"{what} must be 8-bit {mode}, got PIL mode {img.mode}")
            return np.asarray(img, dtype=np.uint8).copy()
    except ShardFormatError:
        raise
    except Exception as err:  # PIL raises many types for corrupt data
        raise ShardFormatError(f"{what} is not a readable image ({type(err).__name__}: {err})") from None


def decode_sample(raw: dict[str, Any]) -> Sample:
    """webdataset dict of raw bytes -> validated :class:`Sample`; :class:`ShardFormatError` if malformed."""
    key = raw.get("__key__", "?")
    if "meta.json" not in raw:
        raise ShardFormatError(f"sample {key}: missing meta.json")
    try:
        meta = json.loads(raw["meta.json"])
    except (ValueError, UnicodeDecodeError) as err:
        raise ShardFormatError(f"sample {key}: meta.json is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != SHARD_FORMAT:
        raise ShardFormatError(f"sample {key}: meta.json is not an {SHARD_FORMAT} record")
    if meta.get("version") not in READABLE_VERSIONS:
        raise ShardFormatError(
            f"sample {key}: shard format version {meta.get('version')!r}, this reader understands "
            f"{', '.join(map(str, READABLE_VERSIONS))}",
            hint="re-create the shards with this version of ss3d-data",
        )
    num_views = meta.get("num_views")
    if not isinstance(num_views, int) or num_views < 1:
        raise ShardFormatError(f"sample {key}: num_views must be a positive integer")
    try:
        info = SampleInfo(**{k: meta[k] for k in SampleInfo.__dataclass_fields__ if k in meta})
    except TypeError as err:
        raise ShardFormatError(f"sample {key}: meta.json is missing fields ({err})") from None
    if info.key != key:
        raise ShardFormatError(f"sample {key}: meta.json names key {info.key!r}")
    images, masks = [], []
    for i in range(num_views):
        rgb = raw.get(f"rgb{i:03d}.png", raw.get(f"rgb{i:03d}.jpg"))
        if rgb is None:
            raise ShardFormatError(f"sample {key}: missing image of view {i}")
        if f"mask{i:03d}.png" not in raw:
            raise ShardFormatError(f"sample {key}: missing mask of view {i}")
        images.append(_decode_image(rgb, "RGB", f"sample {key} image {i}"))
        masks.append(_decode_image(raw[f"mask{i:03d}.png"], "L", f"sample {key} mask {i}"))
        if masks[-1].shape != images[-1].shape[:2]:
            raise ShardFormatError(
                f"sample {key}: mask {i} is {masks[-1].shape[::-1]} but its image is {images[-1].shape[1::-1]}"
            )
    if len({im.shape for im in images}) != 1:
        raise ShardFormatError(f"sample {key}: all views of a sample must have the same size")
    intrinsics = cam2world = None
    if "cameras.json" in raw:
        try:
            cams = json.loads(raw["cameras.json"])
            intrinsics = np.asarray(cams["intrinsics"], dtype=np.float32)
            cam2world = np.asarray(cams["cam2world"], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as err:
            raise ShardFormatError(f"sample {key}: cameras.json is malformed ({err})") from None
    occupancy = None
    if "occupancy.json" in raw:
        try:
            occupancy = Occupancy.from_json(raw["occupancy.json"], f"sample {key}: occupancy.json")
        except Ss3dError as err:
            raise ShardFormatError(str(err)) from None
    sample = Sample(info, np.stack(images), np.stack(masks), intrinsics, cam2world, occupancy)
    sample.validate()
    return sample


def write_sample_dir(sample: Sample, root: str | os.PathLike[str]) -> Path:
    """Write ``sample`` as a folder ``root/<key>/`` holding the same files a shard holds for it (``meta.json``,
    ``rgb000.png``, ``mask000.png``, ..., ``cameras.json``). Renderers write these; ``ss3d-data shard`` packs them.

    Atomic per sample: files go to a temporary sibling folder that is renamed into place once complete, so a
    folder that exists is always whole (a killed renderer resumes by skipping existing folders).
    """
    encoded = encode_sample(sample)
    root_path = Path(root)
    root_path.mkdir(parents=True, exist_ok=True)
    final = root_path / sample.info.key
    tmp = Path(tempfile.mkdtemp(prefix=f".{sample.info.key}.tmp-", dir=root_path))
    try:
        for ext, data in encoded.items():
            if ext == "__key__":
                continue
            with open(tmp / ext, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_sample_dir(folder: str | os.PathLike[str]) -> Sample:
    """Read and validate a sample folder written by :func:`write_sample_dir`."""
    path = Path(folder)
    if not (path / "meta.json").is_file():
        raise ShardFormatError(f"{path}: not a sample folder (no meta.json)")
    raw: dict[str, Any] = {"__key__": path.name}
    for file in path.iterdir():
        if file.is_file():
            raw[file.name] = file.read_bytes()
    return decode_sample(raw)
