"""Readers for image collections with masks (``kind = "image"`` samples, no cameras).

Each reader lists a collection's images as :class:`CollectionItem` s (cheap: paths and labels only); the images are
loaded one at a time by :func:`load_item`, which checks them (missing mask, mask/image size mismatch, empty mask
-> :class:`Ss3dError` with a one-line reason). Layouts:

- ``folder``    : ``ROOT/<category>/<name>.jpg|jpeg|png`` with its mask ``<name>.mask.png`` beside it or
  ``ROOT/<category>/masks/<name>.png``. Splits from a hash of the key.
- ``cub``       : CUB-200-2011: ``images.txt`` (id, path), ``train_test_split.txt`` (id, 1 = train),
  ``images/<class>/<name>.jpg``, ``segmentations/<class>/<name>.png``; category ``bird``.
- ``pascal3d``  : Pascal3D+: ``Images/<cls>_imagenet|_pascal/<name>.JPEG|jpg``, ``Annotations/<same>/<name>.mat``
  (``record.objects`` with ``class`` and ``bbox``); masks from ``--masks DIR/<same>/<name>.png``. An image whose
  annotation has no object of its class is skipped; the boxes go to ``extra``.
- ``co3d``      : CO3D: ``ROOT/<category>/<sequence>/images/frameNNNNNN.jpg`` + ``masks/frameNNNNNN.png``; the
  sequence is the instance (splits per sequence).
- ``openimages``: OpenImages segmentations: a masks CSV (``MaskPath, ImageID, LabelName, BoxID, ...``), its masks
  folder, an images folder (``<ImageID>.jpg``) and the class descriptions CSV (``LabelName, DisplayName``). Masks
  come at another resolution than their images, so they are resized to the image (nearest) for this layout only.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ss3d_data.errors import Ss3dError
from ss3d_data.meshes import assign_split, normalise_category
from ss3d_data.schema import Sample, SampleInfo, make_key

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LAYOUTS = ("folder", "cub", "pascal3d", "co3d", "openimages")


@dataclass(frozen=True)
class CollectionItem:
    key: str
    category: str
    instance_id: str
    image: Path
    mask: Path | None
    source: str
    licence: str = "unknown"
    split: str = "train"
    attribution: str = ""
    resize_mask: bool = False                    # OpenImages masks come at another resolution
    extra: dict[str, Any] = field(default_factory=dict)


def _open(path: Path, mode: str, what: str) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            if mode == "L" and img.mode in ("1", "P", "I", "I;16", "RGB", "RGBA", "LA"):
                img = img.convert("L")
            elif mode == "RGB" and img.mode != "RGB":
                img = img.convert("RGB")
            return np.asarray(img, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise Ss3dError(f"{what} {path} does not exist") from None
    except Exception as err:  # PIL raises many types for corrupt files
        raise Ss3dError(f"{what} {path} is not a readable image ({type(err).__name__})") from None


def _downscale(array: np.ndarray, max_side: int, resample: int) -> np.ndarray:
    h, w = array.shape[:2]
    if max(h, w) <= max_side:
        return array
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(array).resize(size, resample))


def load_item(item: CollectionItem, max_side: int = 0) -> Sample:
    """Load and check one image with its mask as an ``image`` sample; images larger than ``max_side`` (if > 0)
    are downscaled (mask bilinear, so its edges stay soft)."""
    if item.mask is None or not item.mask.is_file():
        raise Ss3dError(f"{item.image}: missing mask" + (f" {item.mask}" if item.mask else ""))
    rgb = _open(item.image, "RGB", "image")
    mask = _open(item.mask, "L", "mask")
    if mask.shape != rgb.shape[:2]:
        if not item.resize_mask:
            raise Ss3dError(f"{item.image}: mask {item.mask.name} is {mask.shape[1]}x{mask.shape[0]} but the image is "
                            f"{rgb.shape[1]}x{rgb.shape[0]}")
        mask = np.asarray(Image.fromarray(mask).resize((rgb.shape[1], rgb.shape[0]), Image.NEAREST))
    if mask.max() <= 1 and mask.any():  # 0/1 masks (CO3D, some tools) -> 0/255
        mask = mask * 255
    if not (mask >= 128).any():
        raise Ss3dError(f"{item.image}: mask {item.mask.name} is empty (no pixel >= 128)")
    if max_side > 0:
        rgb, mask = _downscale(rgb, max_side, Image.BILINEAR), _downscale(mask, max_side, Image.BILINEAR)
    info = SampleInfo("image", item.key, item.category, item.instance_id, item.source, item.licence, item.split,
                      item.attribution, {"file": item.image.name, **item.extra})
    sample = Sample(info, rgb[None], mask[None])
    sample.validate()
    return sample


def _split(item: CollectionItem, fractions: Sequence[float], salt: str) -> CollectionItem:
    return replace(item, split=assign_split(item.instance_id, fractions, salt))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.lower().endswith(".mask.png"))


def read_folder(root: Path, fractions: Sequence[float], salt: str = "ss3d", source: str = "folder",
                licence: str = "unknown") -> Iterator[CollectionItem]:
    """``root/<category>/<name>.<ext>`` + ``<name>.mask.png`` or ``masks/<name>.png``."""
    for category_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        category = normalise_category(category_dir.name)
        for image in _images_in(category_dir):
            beside, sub = image.with_name(image.stem + ".mask.png"), category_dir / "masks" / (image.stem + ".png")
            mask = beside if beside.is_file() else sub if sub.is_file() else beside
            key = make_key(source, category, image.stem)
            yield _split(CollectionItem(key, category, key, image, mask, source, licence), fractions, salt)


def _table(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise Ss3dError(f"{path}: missing (is this the right layout?)")
    return [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_cub(root: Path, fractions: Sequence[float]) -> Iterator[CollectionItem]:
    """CUB-200-2011; its own train/test split is kept (no val)."""
    train = {row[0]: row[1] == "1" for row in _table(root / "train_test_split.txt")}
    for image_id, rel in _table(root / "images.txt"):
        rel_path = Path(rel)
        key = make_key("cub", rel_path.stem)
        yield CollectionItem(key, "bird", key, root / "images" / rel_path,
                             root / "segmentations" / rel_path.with_suffix(".png"), "cub-200-2011",
                             "CUB-200-2011-research", "train" if train.get(image_id, True) else "test",
                             "Caltech-UCSD Birds-200-2011", extra={"class": rel_path.parent.name})


def pascal3d_objects(mat_path: Path) -> list[tuple[str, list[float]]]:
    """(class, bbox [x1, y1, x2, y2]) of every object in a Pascal3D+ annotation file."""
    from scipy.io import loadmat  # only this layout needs scipy

    try:
        record = loadmat(mat_path, squeeze_me=True, struct_as_record=False)["record"]
    except (KeyError, ValueError, OSError, TypeError) as err:
        raise Ss3dError(f"{mat_path}: not a Pascal3D+ annotation ({type(err).__name__}: {err})") from None
    objects = np.atleast_1d(getattr(record, "objects", []))
    return [(str(o.__dict__["class"]), [float(x) for x in np.atleast_1d(o.bbox)]) for o in objects]


def read_pascal3d(root: Path, fractions: Sequence[float], masks: Path | None,
                  salt: str = "ss3d") -> Iterator[CollectionItem]:
    """Pascal3D+ ``Images`` + ``Annotations``; masks from ``masks`` (same sub-folders, ``<name>.png``)."""
    images_root = root / "Images"
    if not images_root.is_dir():
        raise Ss3dError(f"{root}: no Images/ folder (is this Pascal3D+?)")
    mask_root = masks if masks is not None else root / "Masks"
    for sub in sorted(p for p in images_root.iterdir() if p.is_dir()):
        cls = sub.name.rsplit("_", 1)[0]
        for image in _images_in(sub):
            mat = root / "Annotations" / sub.name / (image.stem + ".mat")
            boxes = [box for name, box in pascal3d_objects(mat) if name == cls] if mat.is_file() else []
            if mat.is_file() and not boxes:
                continue  # annotated, but not with an object of this class
            key = make_key("pascal3d", sub.name, image.stem)
            item = CollectionItem(key, normalise_category(cls), key, image,
                                  mask_root / sub.name / (image.stem + ".png"),
                                  "pascal3d", "Pascal3D-research", extra={"boxes": boxes, "subset": sub.name})
            yield _split(item, fractions, salt)


def read_co3d(root: Path, fractions: Sequence[float], every: int = 1, salt: str = "ss3d") -> Iterator[CollectionItem]:
    """CO3D ``<category>/<sequence>/images/frame*.jpg`` + ``masks/frame*.png``; every ``every``-th frame."""
    for category_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
        category = normalise_category(category_dir.name)
        for sequence in sorted(p for p in category_dir.iterdir() if (p / "images").is_dir()):
            instance = make_key("co3d", category, sequence.name)
            split = assign_split(instance, fractions, salt)
            for image in _images_in(sequence / "images")[::every]:
                yield CollectionItem(make_key(instance, image.stem), category, instance, image,
                                     sequence / "masks" / (image.stem + ".png"), "co3d", "CC-BY-NC-4.0", split,
                                     "Common Objects in 3D", extra={"sequence": sequence.name})


def _csv_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise Ss3dError(f"{path}: no such CSV file")
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def read_openimages(masks_csv: Path, masks_dir: Path, images_dir: Path, classes_csv: Path,
                    fractions: Sequence[float], categories: Sequence[str] = (),
                    salt: str = "ss3d") -> Iterator[CollectionItem]:
    """OpenImages instance segmentations; one sample per mask; ``categories`` (normalised names) filters."""
    names = {}
    for row in _csv_rows(classes_csv):
        if "LabelName" not in row or "DisplayName" not in row:
            raise Ss3dError(f"{classes_csv}: needs LabelName and DisplayName columns")
        names[row["LabelName"]] = normalise_category(row["DisplayName"])
    wanted = {normalise_category(c) for c in categories}
    for row in _csv_rows(masks_csv):
        missing = {"MaskPath", "ImageID", "LabelName"} - set(row)
        if missing:
            raise Ss3dError(f"{masks_csv}: missing columns {', '.join(sorted(missing))}")
        category = names.get(row["LabelName"], normalise_category(row["LabelName"]))
        if wanted and category not in wanted:
            continue
        key = make_key("oi", Path(row["MaskPath"]).stem)
        item = CollectionItem(key, category, key, images_dir / f"{row['ImageID']}.jpg", masks_dir / row["MaskPath"],
                              "openimages", "CC-BY-4.0", attribution="Open Images Dataset", resize_mask=True,
                              extra={"image_id": row["ImageID"], "box_id": row.get("BoxID", "")})
        yield _split(item, fractions, salt)


def read_layout(layout: str, root: str | os.PathLike[str], fractions: Sequence[float] = (0.8, 0.1, 0.1),
                masks: str | os.PathLike[str] | None = None, every: int = 1,
                categories: Sequence[str] = (), salt: str = "ss3d") -> list[CollectionItem]:
    """List a collection in ``layout`` (see module docs). For ``openimages`` ``root`` holds ``masks.csv``,
    ``masks/``, ``images/`` and ``classes.csv`` (official file names may be linked to these)."""
    path = Path(root)
    if not path.is_dir():
        raise Ss3dError(f"{path}: no such collection folder")
    if layout == "folder":
        items = list(read_folder(path, fractions, salt))
    elif layout == "cub":
        items = list(read_cub(path, fractions))
    elif layout == "pascal3d":
        items = list(read_pascal3d(path, fractions, Path(masks) if masks else None, salt))
    elif layout == "co3d":
        items = list(read_co3d(path, fractions, every, salt))
    elif layout == "openimages":
        items = list(read_openimages(path / "masks.csv", path / "masks", path / "images", path / "classes.csv",
                                     fractions, categories, salt))
    else:
        raise Ss3dError(f"unknown collection layout {layout!r}", hint=f"choose one of {', '.join(LAYOUTS)}")
    if categories and layout != "openimages":
        wanted = {normalise_category(c) for c in categories}
        items = [i for i in items if i.category in wanted]
    if not items:
        raise Ss3dError(f"{path}: no images found in the {layout} layout")
    return items
