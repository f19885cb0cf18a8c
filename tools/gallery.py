"""A PNG gallery of held-out reconstructions: look at the meshes, not only at the tables.

One row per test image (the first ``--per-category`` of each category): the input as the model sees it, turntable
views of the ground truth (grey), then of each checkpoint's coloured mesh, all in the canonical frame from the same
viewpoints (no alignment: what a user gets). Meshes are extracted with the settings each checkpoint records.

    .venv/bin/python tools/gallery.py --shards shards/demo/shards/test --manifest shards/demo/test.jsonl \
        --method distilled=runs/demo/distill/distill.safetensors --out docs/quality/gallery.png
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import trimesh
from PIL import Image, ImageDraw

from ss3d_data import Ss3dError
from ss3d_data.atomic import atomic_write
from ss3d_eval.evaluate import GroundTruth
from ss3d_eval.predict import iter_test_items
from ss3d_model.reconstruct import (
    image_tensor,
    inference_settings,
    input_settings,
    load_for_inference,
    reconstruct_mesh,
)
from ss3d_model.turntable import turntable

GREY = np.array([170, 170, 170, 255], np.uint8)


def _views(mesh: trimesh.Trimesh | None, views: int, size: int) -> np.ndarray:
    if mesh is None:  # no surface: an empty (dark) strip
        return np.full((size, views * size, 3), 40, np.uint8)
    return turntable(mesh, views=views, size=size, elevation_deg=25.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", required=True, help="test shards (folder, glob or .tar)")
    parser.add_argument("--manifest", required=True, help="mesh manifest with the ground truth")
    parser.add_argument("--method", action="append", required=True, help="LABEL=CHECKPOINT (repeatable)")
    parser.add_argument("--colours", action="append", default=[], metavar="LABEL=SOURCE",
                        help="vertex colours of method LABEL: network or input (default: what its checkpoint "
                        "records; repeatable)")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--per-category", type=int, default=1, help="test images per category")
    parser.add_argument("--categories", default="", help="comma-separated categories (default: all)")
    parser.add_argument("--views", type=int, default=3, help="turntable views per mesh")
    parser.add_argument("--size", type=int, default=112, help="pixels per view")
    args = parser.parse_args()

    colours = dict(spec.rpartition("=")[::2] for spec in args.colours)
    methods = []
    for spec in args.method:
        label, _, path = spec.rpartition("=")  # labels may hold "=", paths rarely do
        network, meta, _ = load_for_inference(Path(path))
        extract, mask_threshold = inference_settings(meta)
        if label in colours:
            extract = replace(extract, colours=colours.pop(label))
        methods.append((label, network, extract, mask_threshold, input_settings(meta)))
    if colours:
        raise SystemExit(f"error: --colours names no --method label: {', '.join(colours)}")
    wanted = {c for c in args.categories.split(",") if c}
    taken: dict[str, int] = defaultdict(int)
    truth = GroundTruth(args.manifest)
    rows, size, views = [], args.size, args.views
    items = sorted(iter_test_items(args.shards), key=lambda i: (i.info.category, i.key))
    for item in items:
        category = item.info.category
        if (wanted and category not in wanted) or taken[category] >= args.per_category:
            continue
        taken[category] += 1
        crop = image_tensor(item.image, item.mask, size, 0.5)[0].permute(1, 2, 0).numpy()
        strips = [(crop * 255).astype(np.uint8)]
        shape = truth.shape(item.info.instance_id)
        gt = trimesh.Trimesh(shape.vertices, shape.faces, process=False)
        gt.visual.vertex_colors = np.tile(GREY, (len(gt.vertices), 1))
        strips.append(_views(gt, views, size))
        for _, network, extract, mask_threshold, input_crop in methods:
            try:
                mesh = reconstruct_mesh(network, item.image, item.mask, extract, mask_threshold, crop=input_crop)
            except Ss3dError:
                mesh = None
            strips.append(_views(mesh, views, size))
        row = np.concatenate(strips, axis=1)
        rows.append((category, row))
        print(f"{category}: {item.key}")
    if not rows:
        raise SystemExit("error: no test images of the requested categories")
    header = 18
    width = rows[0][1].shape[1]
    canvas = Image.new("RGB", (width, header + len(rows) * size), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    titles = ["input", "ground truth", *(label for label, *_ in methods)]
    x = 0
    for title, w in zip(titles, [size] + [views * size] * (len(titles) - 1)):
        draw.text((x + 4, 3), title, fill=(0, 0, 0))
        x += w
    for r, (category, row) in enumerate(rows):
        canvas.paste(Image.fromarray(row), (0, header + r * size))
        draw.text((3, header + r * size + 3), category, fill=(255, 255, 0))
    with atomic_write(args.out) as handle:
        canvas.save(handle, format="PNG")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    try:
        main()
    except Ss3dError as err:
        raise SystemExit(f"error: {err}") from None
