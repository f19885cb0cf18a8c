"""Edits of a checkpoint's predicted field before marching cubes, to measure them as extraction-time levers.

For each test image: the field on the preset's dense lattice, then one edit, then the mesh (at the checkpoint's
extraction level, grid and box), written as ``<key>.ply`` into ``--out`` for ``ss3d-eval iou --pred-dir``:

- ``none``: no edit (reproduces the checkpoint's own meshes);
- ``carve``: density set below the level wherever a lattice point projects outside the input mask (dilated by
  ``--dilate`` px at 64 px) through the view that best reproduces the mask (``ss3d_model.input_view``);
- ``symmetric``: the mean of the field and its mirror image across the canonical X = 0 plane;
- ``levels``: of the levels 1, 1.5, 2, 3 and 4, the one whose mesh's fitted silhouette overlaps the mask best.

    .venv/bin/python tools/field_edits.py --checkpoint runs/demo/distill/distill.safetensors \
        --shards shards/demo/shards/test --edit carve --out runs/edits/carve
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from ss3d_data import Ss3dError
from ss3d_data.preprocess import crop_to_mask
from ss3d_eval.predict import iter_test_items
from ss3d_model.extract import dense_grid, lattice_points, mesh_from_grid
from ss3d_model.input_view import REFINE_SIZE, fit_input_view
from ss3d_model.reconstruct import encode_input, inference_settings, input_settings, load_for_inference

LEVELS = (1.0, 1.5, 2.0, 3.0, 4.0)


def carve(values: torch.Tensor, level: float, mask: np.ndarray, dilate: int, box: float) -> torch.Tensor:
    mesh = mesh_from_grid(values, level, box)
    if not len(mesh.vertices):
        return values
    view = fit_input_view(mesh.vertices, mask)
    allowed = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=dilate).astype(bool) \
        if dilate else mask
    n = values.shape[0]
    axes = torch.arange(n)
    indices = torch.stack(torch.meshgrid(axes, axes, axes, indexing="ij"), -1).reshape(-1, 3)
    uv, _ = view.project(lattice_points(indices, n - 1, box).numpy(), mask.shape[0])
    ij = np.floor(uv).astype(np.int64)
    inside = (ij >= 0).all(1) & (ij < mask.shape[0]).all(1)
    keep = np.zeros(len(ij), bool)
    keep[inside] = allowed[ij[inside, 1], ij[inside, 0]]
    out = values.clone().reshape(-1)
    drop = torch.from_numpy(~keep)
    out[drop] = torch.minimum(out[drop], torch.tensor(level - 1.0))
    return out.reshape(values.shape)


def best_level(values: torch.Tensor, mask: np.ndarray, box: float) -> float:
    scores = {}
    for level in LEVELS:
        mesh = mesh_from_grid(values, level, box)
        if len(mesh.vertices) >= 3:
            scores[level] = fit_input_view(mesh.vertices, mask).silhouette_iou
    return max(scores, key=scores.get) if scores else LEVELS[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--shards", required=True, help="test shards")
    parser.add_argument("--edit", choices=("none", "carve", "symmetric", "levels"), required=True)
    parser.add_argument("--dilate", type=int, default=2, help="carve: mask dilation in pixels at 64 px")
    parser.add_argument("--out", required=True, help="folder for <key>.ply")
    args = parser.parse_args()

    network, meta, _ = load_for_inference(Path(args.checkpoint))
    extract, mask_threshold = inference_settings(meta)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    box, level = extract.box_half_size, extract.density_threshold
    for item in iter_test_items(args.shards):
        z = encode_input(network, item.image, item.mask, mask_threshold, input_settings(meta))

        def density(points: torch.Tensor) -> torch.Tensor:
            return network.decode(z, points[None])[0][0]

        values = dense_grid(density, extract.resolution, box)
        mask = crop_to_mask(item.image, item.mask, REFINE_SIZE, mask_threshold).mask >= round(mask_threshold * 255)
        mesh_level = level
        if args.edit == "carve":
            values = carve(values, level, mask, args.dilate, box)
        elif args.edit == "symmetric":
            values = (values + values.flip(0)) / 2  # the lattice is symmetric about 0 along X
        elif args.edit == "levels":
            mesh_level = best_level(values, mask, box)
        mesh = mesh_from_grid(values, mesh_level, box)
        print(f"{item.key}: {len(mesh.faces)} faces at level {mesh_level}", flush=True)
        if len(mesh.faces):
            mesh.export(out / f"{item.key}.ply")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    try:
        main()
    except Ss3dError as err:
        raise SystemExit(f"error: {err}") from None
