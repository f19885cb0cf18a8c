"""One method's IoU margin over another with several seeds of each: per test image, each method's IoU is averaged
over its seeds' result files, then the paired margin and its 95% bootstrap interval are computed exactly as
``ss3d-eval table --margin-over`` does (samples resampled within categories, categories weighed equally).

    .venv/bin/python tools/seed_margin.py --method runs/q-pix/pix-all.iou.jsonl,runs/q-pix/pix-all-seed1.iou.jsonl \
        --reference runs/q-pix/p50.iou.jsonl,runs/q-pix/p50-seed1.iou.jsonl
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from ss3d_data import Ss3dError
from ss3d_eval.evaluate import read_results
from ss3d_eval.table import margins


def seed_mean_rows(files: list[str], label: str) -> list[dict]:
    """IoU rows of ``files`` (one per seed) -> one row per test image with the seeds' mean IoU, labelled ``label``.
    Every file must score the same images."""
    per_key: dict[str, list[float]] = defaultdict(list)
    category: dict[str, str] = {}
    for path in files:
        rows = [r for r in read_results([path]) if r.get("metric") == "iou"]
        if not rows:
            raise Ss3dError(f"{path}: no IoU rows")
        for r in rows:
            per_key[r["key"]].append(float(r.get("iou") or 0.0))  # an empty prediction scores 0, as in the tables
            category[r["key"]] = r["category"]
    uneven = [k for k, v in per_key.items() if len(v) != len(files)]
    if uneven:
        raise Ss3dError(f"the {label} files do not score the same images (first: {uneven[0]})")
    return [{"metric": "iou", "label": label, "key": k, "category": category[k], "iou": float(np.mean(v))}
            for k, v in sorted(per_key.items())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", required=True, help="comma-separated IoU result files, one per seed")
    parser.add_argument("--reference", required=True, help="comma-separated IoU result files, one per seed")
    args = parser.parse_args()
    rows = seed_mean_rows(args.method.split(","), "method") + seed_mean_rows(args.reference.split(","), "reference")
    [margin] = margins(rows, "iou", "reference")
    print(f"IoU margin {margin.mean:+.3f} [{margin.low:+.3f}, {margin.high:+.3f}] over {margin.samples} images "
          "(seeds averaged per image)")


if __name__ == "__main__":
    try:
        main()
    except Ss3dError as err:
        raise SystemExit(f"error: {err}") from None
