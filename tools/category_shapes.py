"""Write the "category prior" reference: for every test instance, a random *training* mesh of the same category.

A method that recognised the category perfectly and then output a real shape of it, but not the pictured one, would
score like these folders. Score them with ``ss3d-eval iou --pred-dir`` like any method: the gap between this and
the ellipsoid floor says how much a category-level prior alone can buy on this test set and metric.

    .venv/bin/python tools/category_shapes.py --meshes shards/demo/meshes.jsonl --test shards/demo/test.jsonl \
        --out runs/abl/retrieval --draws 10
    ss3d-eval iou --shards shards/demo/shards/test --manifest shards/demo/test.jsonl --preset cpu \
        --out runs/abl/retrieval/q --pred-dir runs/abl/retrieval/draw0 --label draw0   # ... one per draw

Draw ``d`` uses seed ``d``; each mesh is written as ``<out>/draw<d>/<test instance id>.ply`` in the canonical frame.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ss3d_data.errors import Ss3dError
from ss3d_data.manifest import read_manifest
from ss3d_data.meshes import load_geometry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meshes", required=True, help="the full mesh manifest (train-split rows are the pool)")
    parser.add_argument("--test", required=True, help="the test manifest (one mesh is drawn per row)")
    parser.add_argument("--out", required=True, help="folder for the draw<d>/ prediction folders")
    parser.add_argument("--draws", type=int, default=3, help="independent draws (seeds 0..draws-1)")
    args = parser.parse_args()
    try:
        if args.draws < 1:
            raise Ss3dError(f"--draws must be >= 1 (got {args.draws})")
        pool: dict[str, list] = {}
        for row in read_manifest(Path(args.meshes)):
            if row.split == "train":
                pool.setdefault(row.category, []).append(row)
        tests = read_manifest(Path(args.test))
        missing = sorted({t.category for t in tests} - set(pool))
        if missing:
            raise Ss3dError(f"no training mesh of {', '.join(missing)} in {args.meshes}")
        for draw in range(args.draws):
            rng = np.random.default_rng(draw)
            folder = Path(args.out) / f"draw{draw}"
            folder.mkdir(parents=True, exist_ok=True)
            for test in tests:
                candidates = pool[test.category]
                pick = candidates[rng.integers(len(candidates))]
                mesh, _ = load_geometry(pick.resolve(args.meshes))
                matrix = pick.matrix()
                mesh.vertices = np.asarray(mesh.vertices) @ matrix[:3, :3].T + matrix[:3, 3]
                mesh.export(folder / f"{test.instance_id}.ply")
            print(f"{folder}: {len(tests)} meshes")
    except Ss3dError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
