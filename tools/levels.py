"""Mesh one test image at several density levels and score each mesh against its ground truth.

Tells a fat field from a thin one: IoU without alignment (the checkpoint's canonical frame as is) and after the
evaluation's alignment, F-score@0.05, and the voxel counts of predicted and true solids with their intersection (a
prediction that contains the truth but is several times its volume is fog over the silhouettes' hull).

    .venv/bin/python tools/levels.py --checkpoint runs/abl/overfit/run/pretrain.safetensors \
        --shards "shards/demo/shards/trainset/trainset-sofa-*.tar" --manifest shards/demo/pretrain.jsonl \
        --instance sh3d-BlendSwap-CC-0-sofa --levels 0.5,1,2,4,6,8
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from ss3d_data.errors import Ss3dError
from ss3d_data.inside import grid_around
from ss3d_eval.config import eval_config
from ss3d_eval.evaluate import GroundTruth
from ss3d_eval.metrics import score, voxelize
from ss3d_eval.predict import iter_test_items
from ss3d_eval.shapes import Shape
from ss3d_model.extract import extract_mesh
from ss3d_model.reconstruct import encode_input, inference_settings, input_settings, load_for_inference


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--shards", required=True, help="test shards holding the image (glob)")
    parser.add_argument("--manifest", required=True, help="mesh manifest holding the instance's ground truth")
    parser.add_argument("--instance", required=True, help="instance id of the test image to mesh")
    parser.add_argument("--levels", default="1,2,4,8", help="comma-separated density levels")
    parser.add_argument("--preset", default="cpu", help="preset of the evaluation settings (alignment, IoU grid)")
    args = parser.parse_args()
    try:
        levels = [float(x) for x in args.levels.split(",")]
        cfg = eval_config(args.preset)
        truth = GroundTruth(args.manifest).shape(args.instance)
        network, meta, _ = load_for_inference(args.checkpoint)
        extract, mask_threshold = inference_settings(meta)
        item = next((i for i in iter_test_items(args.shards) if i.info.instance_id == args.instance), None)
        if item is None:
            raise Ss3dError(f"no test image of {args.instance} in {args.shards}")
        with torch.inference_mode():
            z = encode_input(network, item.image, item.mask, mask_threshold, input_settings(meta))[0]
            grid = extract.grid(network.config.pixel_features > 0)
            meshes = [extract_mesh(network, z, *grid[:2], level, grid[2]) for level in levels]
    except (Ss3dError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("| level | IoU, no alignment | IoU, aligned | F@0.05 | predicted voxels | true voxels | both |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for level, mesh in zip(levels, meshes):
        if len(mesh.faces) == 0:
            print(f"| {level:g} | no surface | | | | | |")
            continue
        pred = Shape(np.asarray(mesh.vertices), np.asarray(mesh.faces))
        bounds = np.concatenate([pred.bounds(), truth.bounds()])
        grid = grid_around(np.stack([bounds.min(0), bounds.max(0)]), cfg.iou_resolution)
        a, b = voxelize(pred, grid), voxelize(truth, grid)
        unaligned = (a & b).sum() / max(1, (a | b).sum())
        aligned = score(pred, truth, cfg, args.instance)
        print(f"| {level:g} | {unaligned:.3f} | {aligned['iou']:.3f} | {aligned['fscore']['0.05']:.2f} | "
              f"{a.sum()} | {b.sum()} | {(a & b).sum()} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
