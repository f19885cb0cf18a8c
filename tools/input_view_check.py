"""How well the input-view search (``ss3d_model.input_view``) recovers the camera of a test image, given the true
shape: each test image's ground-truth mesh (20,000 surface samples) is fitted to the image's mask, and the fitted
viewing direction compared with the true camera's (the ``<prefix>.cameras.jsonl`` files beside the test shards).

For a shape with a mirror plane (most furniture: X = 0 in the canonical frame) an orthographic silhouette cannot
tell the true camera from its twin on the other side of the object at the opposite elevation (camera position
(x, y, z) -> (x, -y, -z)): both see the same outline, and only perspective (the near side larger) separates them.
The twin is reported separately.

    .venv/bin/python tools/input_view_check.py --shards shards/demo/shards/test --manifest shards/demo/test.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import trimesh

from ss3d_data import Ss3dError
from ss3d_data.preprocess import crop_to_mask
from ss3d_eval.evaluate import GroundTruth
from ss3d_eval.predict import iter_test_items
from ss3d_model.input_view import fit_input_view

TWIN = np.array([1.0, -1.0, -1.0])  # a camera direction's twin through the X = 0 mirror plane, seen from behind


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1.0, 1.0))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", required=True, help="test shard folder (with its .cameras.jsonl files)")
    parser.add_argument("--manifest", required=True, help="mesh manifest with the ground truth")
    parser.add_argument("--within", type=float, default=20.0, help="degrees counted as recovered")
    args = parser.parse_args()

    cameras = {}
    for path in Path(args.shards).glob("*.cameras.jsonl"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            cameras[row["key"]] = np.asarray(row["cam2world"], np.float64)
    truth = GroundTruth(args.manifest)
    rows = []
    for item in iter_test_items(args.shards):
        if item.key not in cameras:
            continue
        shape = truth.shape(item.info.instance_id)
        points = trimesh.Trimesh(shape.vertices, shape.faces, process=False).sample(20_000, seed=0)
        mask = crop_to_mask(item.image, item.mask, 128).mask >= 128
        view = fit_input_view(points, mask)
        forward = cameras[item.key][:3, 2]
        rows.append((angle_deg(view.rotation[2], forward), angle_deg(view.rotation[2], forward * TWIN),
                     view.silhouette_iou))
        print(f"{item.info.category:10s} {item.key:45s} true {rows[-1][0]:6.1f} deg, twin {rows[-1][1]:6.1f} deg, "
              f"silhouette IoU {rows[-1][2]:.3f}", flush=True)
    if not rows:
        raise SystemExit("error: no test image with a known camera")
    true, twin, iou = map(np.asarray, zip(*rows))
    print(f"{len(rows)} images: silhouette IoU {iou.mean():.3f}; within {args.within:g} degrees of the true camera "
          f"{(true < args.within).mean():.0%}, of its twin {(twin < args.within).mean():.0%}, of either "
          f"{((true < args.within) | (twin < args.within)).mean():.0%}; median error {np.median(true):.0f} degrees")


if __name__ == "__main__":
    try:
        main()
    except Ss3dError as err:
        raise SystemExit(f"error: {err}") from None
