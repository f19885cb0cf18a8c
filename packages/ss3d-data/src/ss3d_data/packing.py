"""``ss3d-data shard``: pack sample folders and image collections into shards, and inspect shard sets.

- Sample folders (``write_sample_dir`` output, e.g. from ``ss3d-render``): ``views`` samples go to
  ``<prefix>-views-NNNNNN.tar`` in instance order; ``image`` samples go to one shard set per category,
  ``<prefix>-<category>-NNNNNN.tar``. A camera sidecar ``<folders>/cameras.jsonl`` is split the same way into
  ``<prefix>-<category>.cameras.jsonl`` (only keys that were packed).
- Image collections (:mod:`ss3d_data.layouts`): one shard set per category, ``<prefix>-<category>-NNNNNN.tar``.

A shard set whose index already exists is kept (resume after a kill). Bad samples stop the run with their reason
unless ``max_bad`` allows skipping them (they are then counted and listed in the returned report).
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ss3d_data.atomic import atomic_write
from ss3d_data.errors import Ss3dError
from ss3d_data.layouts import CollectionItem, load_item
from ss3d_data.schema import Sample, make_key, read_sample_dir
from ss3d_data.shards import SkipCounter, iter_samples, write_shards
from ss3d_data.sidecar import read_cameras, write_cameras


@dataclass
class PackReport:
    shard_sets: dict[str, int] = field(default_factory=dict)   # prefix -> samples written (or found complete)
    kept: list[str] = field(default_factory=list)               # prefixes whose index already existed
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)


class _BadInput:
    """Turns a bad sample into an error (``max_bad == 0``) or a counted skip."""

    def __init__(self, max_bad: int) -> None:
        self.counter = SkipCounter(max_bad=max_bad)

    def __call__(self, reason: str) -> None:
        if self.counter.max_bad == 0:
            raise Ss3dError(reason, hint="fix the input, or allow skipping with --max-bad N")
        self.counter.skip(reason)


def _loaded(loaders: Iterable[Callable[[], Sample]], bad: _BadInput) -> Iterator[Sample]:
    for load in loaders:
        try:
            yield load()
        except Ss3dError as err:
            bad(str(err))


def _pack(prefix: str, loaders: list[Callable[[], Sample]], out: Path, per_shard: int, bad: _BadInput,
          report: PackReport) -> None:
    index = out / f"{prefix}.index.json"
    if index.is_file():
        report.kept.append(prefix)
        report.shard_sets[prefix] = json.loads(index.read_text())["samples"]
        return
    write_shards(_loaded(loaders, bad), out, prefix, per_shard)
    report.shard_sets[prefix] = json.loads(index.read_text())["samples"]


def _folder_meta(folder: Path) -> dict:
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}


def occupancy_labeller(manifest: str | os.PathLike[str], resolution: int) -> Callable[[Sample], Sample]:
    """Sample -> the same sample with its instance's solid occupancy (``views`` samples whose instance is in the mesh
    ``manifest``; others unchanged). A views sample whose instance the manifest lacks is an error."""
    from dataclasses import replace

    from ss3d_data.manifest import read_manifest
    from ss3d_data.occupancy import mesh_occupancy

    records = {r.instance_id: r for r in read_manifest(manifest)}

    def label(sample: Sample) -> Sample:
        if sample.info.kind != "views" or sample.occupancy is not None:
            return sample
        record = records.get(sample.info.instance_id)
        if record is None:
            raise Ss3dError(f"sample {sample.info.key}: instance {sample.info.instance_id} is not in {manifest}, "
                            "so it has no occupancy labels")
        try:
            occupancy = mesh_occupancy(record.resolve(manifest), record.matrix(), resolution)
        except Ss3dError as err:
            raise Ss3dError(f"sample {sample.info.key}: {err}") from None
        return replace(sample, occupancy=occupancy)

    return label


def pack_sample_folders(root: str | os.PathLike[str], out: str | os.PathLike[str], prefix: str, per_shard: int = 64,
                        max_bad: int = 0, label: Callable[[Sample], Sample] | None = None) -> PackReport:
    """Pack every sample folder under ``root`` (see module docs); returns what was written. ``label`` adds to each
    sample what its folder lacks (e.g. :func:`occupancy_labeller`)."""
    root_path, out_path = Path(root), Path(out)
    folders = sorted(p for p in root_path.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if root_path.is_dir() else []
    if not folders:
        raise Ss3dError(f"{root_path}: no sample folders", hint="render some with ss3d-render views|collection")
    bad, report = _BadInput(max_bad), PackReport()
    groups: dict[str, list[Path]] = defaultdict(list)
    for folder in folders:
        meta = _folder_meta(folder)
        if meta.get("kind") == "views":
            groups[make_key(prefix, "views")].append(folder)
        elif meta.get("kind") == "image" and isinstance(meta.get("category"), str) and meta["category"]:
            groups[make_key(prefix, meta["category"])].append(folder)
        else:
            bad(f"{folder}: not a readable sample folder (meta.json missing, malformed or of unknown kind)")
    for group_prefix, members in sorted(groups.items()):
        members.sort(key=lambda f: (_folder_meta(f).get("instance_id", ""), f.name))
        add = label or (lambda sample: sample)
        _pack(group_prefix, [lambda f=f: add(read_sample_dir(f)) for f in members], out_path, per_shard, bad, report)
    sidecar = root_path / "cameras.jsonl"
    if sidecar.is_file():
        cameras = read_cameras(sidecar)
        for group_prefix, members in groups.items():
            rows = {f.name: cameras[f.name] for f in members if f.name in cameras}
            if rows:
                write_cameras(out_path / f"{group_prefix}.cameras.jsonl", rows)
    report.skipped, report.reasons = bad.counter.skipped, bad.counter.reasons
    return report


def pack_collection(items: Sequence[CollectionItem], out: str | os.PathLike[str], prefix: str, per_shard: int = 64,
                    max_bad: int = 0, max_side: int = 0) -> PackReport:
    """Pack an image collection (from :func:`ss3d_data.layouts.read_layout`) into one shard set per category."""
    keys = Counter(i.key for i in items)
    dupes = [k for k, n in keys.items() if n > 1]
    if dupes:
        raise Ss3dError(f"duplicate sample keys in the collection: {', '.join(sorted(dupes)[:5])}")
    by_category: dict[str, list[CollectionItem]] = defaultdict(list)
    for item in items:
        by_category[item.category].append(item)
    bad, report = _BadInput(max_bad), PackReport()
    for category, members in sorted(by_category.items()):
        loaders = [lambda i=i: load_item(i, max_side) for i in members]
        _pack(make_key(prefix, category), loaders, Path(out), per_shard, bad, report)
    report.skipped, report.reasons = bad.counter.skipped, bad.counter.reasons
    return report


@dataclass
class Inspection:
    counts: dict[tuple[str, str, str], int]        # (kind, category, split) -> samples
    views: int
    skips: SkipCounter
    sheet: Path | None = None


def _thumbnail(sample: Sample, size: int) -> Image.Image:
    """First view with its mask as a red tint (foreground) and a darkened background."""
    rgb = sample.images[0].astype(np.float32)
    fg = (sample.masks[0] >= 128)[..., None]
    tinted = np.where(fg, 0.6 * rgb + 0.4 * np.array([255.0, 40, 40]), 0.35 * rgb)
    img = Image.fromarray(tinted.clip(0, 255).astype(np.uint8))
    scale = size / max(img.width, img.height)  # small renders are enlarged too, so every cell is readable
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                     Image.NEAREST if scale > 1 else Image.BILINEAR)
    canvas = Image.new("RGB", (size, size), (24, 24, 24))
    canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return canvas


def inspect_shards(shards: Sequence[str], sheet: str | os.PathLike[str] | None = None, max_bad: int = 0,
                   per_category: int = 6, thumb: int = 128) -> Inspection:
    """Count samples per (kind, category, split); optionally write a contact sheet PNG: one row per category with
    up to ``per_category`` samples, masks overlaid in red."""
    skips = SkipCounter(max_bad=max_bad)
    counts: Counter[tuple[str, str, str]] = Counter()
    views = 0
    rows: dict[str, list[tuple[str, Image.Image]]] = defaultdict(list)
    for sample in iter_samples(shards, skips):
        info = sample.info
        counts[(info.kind, info.category, info.split)] += 1
        views += sample.num_views
        if sheet is not None and len(rows[info.category]) < per_category:
            rows[info.category].append((info.key, _thumbnail(sample, thumb)))
    result = Inspection(dict(sorted(counts.items())), views, skips)
    if sheet is not None:
        if not rows:
            raise Ss3dError("no valid samples to draw a contact sheet from")
        label_w, pad = 120, 4
        width = label_w + max(len(r) for r in rows.values()) * (thumb + pad)
        canvas = Image.new("RGB", (width, len(rows) * (thumb + pad) + pad), (255, 255, 255))
        draw = ImageDraw.Draw(canvas)
        for r, (category, thumbs) in enumerate(sorted(rows.items())):
            y = pad + r * (thumb + pad)
            draw.text((pad, y + thumb // 2 - 6), category[:18], fill=(0, 0, 0))
            for c, (key, image) in enumerate(thumbs):
                x = label_w + c * (thumb + pad)
                canvas.paste(image, (x, y))
                draw.text((x + 2, y + 2), key[-16:], fill=(255, 255, 255))
        with atomic_write(sheet) as handle:
            canvas.save(handle, format="PNG")
        result.sheet = Path(sheet)
    return result
