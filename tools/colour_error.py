"""How well predicted vertex colours match an object's real colours in views the model did not see.

For each instance: reconstruct from its input image (view ``--input-view`` of ``--inputs``), render the mesh from
every camera of its sample in ``--targets`` (a ``views`` shard of the same instances, cameras known; the input view
itself is skipped when both are the same shards) and compare colours where the rendered mesh and the view's mask
overlap: mean absolute error per channel, 0-255. The mesh is rendered in the canonical frame as predicted (a
prediction placed wrongly there is compared at the wrong place, as a user would see it), or with ``--alignment``
moved by the evaluation's alignment to its ground truth (geometry placed as well as it can be). Shading is divided out
(the mesh is rendered a second time in plain white), so the comparison is of vertex colours against the render's
lit pixels. Three colourings of the same geometry are compared: the network's colours, the input image's
(``[extract] colours = "input"``), and the floor: every vertex in the input's mean object colour.

    .venv/bin/python tools/colour_error.py --checkpoint runs/demo/distill/distill.safetensors \
        --inputs shards/demo/shards/test --targets shards/demo/shards/testviews
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ss3d_data import Ss3dError
from ss3d_data.shards import SkipCounter, iter_samples, resolve_shards
from ss3d_eval.predict import iter_test_items
from ss3d_model.raster import rasterise
from ss3d_model.reconstruct import (
    colour_from_input,
    inference_settings,
    input_settings,
    load_for_inference,
    reconstruct_mesh,
)

WHITE = (255, 255, 255)


def view_errors(vertices: np.ndarray, faces: np.ndarray, colourings: dict[str, np.ndarray], image: np.ndarray,
                mask: np.ndarray, cam2world: np.ndarray, focal: float) -> tuple[dict[str, float], int]:
    """({colouring: mean absolute colour error over the overlap}, overlap pixels) of one mesh, coloured each way,
    against one view. The shading (a plain white render) is the same for every colouring, so it is drawn once."""
    size = image.shape[0]
    black = (0, 0, 0)
    shade = rasterise(vertices, faces, cam2world, focal, size, colour=WHITE, background=black)[..., 0]
    overlap = (shade > 0) & (mask >= 128)
    if not overlap.any():
        return {}, 0
    errors = {}
    for name, colours in colourings.items():
        shaded = rasterise(vertices, faces, cam2world, focal, size, colours=colours, background=black)
        unshaded = shaded[overlap].astype(np.float64) * (255.0 / shade[overlap, None])
        errors[name] = float(np.abs(np.clip(unshaded, 0, 255) - image[overlap]).mean())
    return errors, int(overlap.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--inputs", required=True, help="shards with each instance's input image")
    parser.add_argument("--input-view", type=int, default=0)
    parser.add_argument("--targets", required=True, help="views shards (known cameras) of the same instances")
    parser.add_argument("--alignment", help="an ss3d-eval result file (.jsonl) of the same checkpoint: each mesh is "
                        "first moved by its row's alignment (the evaluation's similarity to the ground truth)")
    args = parser.parse_args()

    network, meta, _ = load_for_inference(Path(args.checkpoint))
    extract, mask_threshold = inference_settings(meta)
    same = sorted(resolve_shards(args.inputs)) == sorted(resolve_shards(args.targets))
    targets = {s.info.instance_id: s for s in iter_samples(resolve_shards(args.targets), SkipCounter(10))}
    totals: dict[str, list[float]] = defaultdict(list)
    per_category: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    moves = {}
    if args.alignment:
        for line in Path(args.alignment).read_text().splitlines():
            row = json.loads(line)
            if row.get("status") == "ok" and row.get("align"):
                moves[row["key"]] = np.asarray(row["align"]["matrix"], np.float64)
    for item in iter_test_items(args.inputs, view=args.input_view):
        target = targets.get(item.info.instance_id)
        if target is None or target.cam2world is None:
            continue
        try:
            mesh = reconstruct_mesh(network, item.image, item.mask, replace(extract, colours="network"),
                                    mask_threshold, crop=input_settings(meta))
        except Ss3dError:
            continue
        vertices, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
        if args.alignment:
            if item.key not in moves:
                continue
            vertices = vertices @ moves[item.key][:3, :3].T + moves[item.key][:3, 3]
        network_colours = np.asarray(mesh.visual.vertex_colors)[:, :3].copy()
        colour_from_input(mesh, item.image, item.mask, mask_threshold)
        inside = item.mask >= round(mask_threshold * 255)
        colourings = {
            "network": network_colours,
            "input": np.asarray(mesh.visual.vertex_colors)[:, :3],
            "input mean colour": np.tile(item.image[inside].mean(0), (len(vertices), 1)),
        }
        views = [view_errors(vertices, faces, colourings, target.images[v], target.masks[v], target.cam2world[v],
                             float(target.intrinsics[v][0, 0]))
                 for v in range(target.num_views) if not (same and v == args.input_view)]
        pixels = sum(n for _, n in views)
        if pixels:
            for name in colourings:
                error = sum(errors[name] * n for errors, n in views if n) / pixels
                totals[name].append(error)
                per_category[item.info.category][name].append(error)
        print(item.key, {k: round(v[-1], 1) for k, v in totals.items()}, flush=True)
    names = list(totals)
    print("| category | " + " | ".join(names) + " |")
    print("| --- | " + " | ".join("---:" for _ in names) + " |")
    for category in sorted(per_category):
        row = per_category[category]
        print(f"| {category} | " + " | ".join(f"{np.mean(row[n]):.1f}" for n in names) + " |")
    means = [np.mean([np.mean(per_category[c][n]) for c in per_category]) for n in names]
    print("| **mean (categories equally)** | " + " | ".join(f"**{m:.1f}**" for m in means) + " |")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    try:
        main()
    except Ss3dError as err:
        raise SystemExit(f"error: {err}") from None
