"""One method's margin over another with several seeds of each: per test image, each method's score is averaged
over its seeds' result files, then the paired margin and its 95% bootstrap interval are computed exactly as
``ss3d-eval table --margin-over`` does (samples resampled within categories, categories weighed equally). The
score is IoU (``ss3d-eval iou`` files) or, with ``--score``, a point metric of ``ss3d-eval chamfer`` files:
``chamfer_l1``, ``chamfer_l2`` or ``fscore@T`` (positive margins are better for every score).

    .venv/bin/python tools/seed_margin.py --method runs/q-pix/pix-all.iou.jsonl,runs/q-pix/pix-all-seed1.iou.jsonl \
        --reference runs/q-pix/p50.iou.jsonl,runs/q-pix/p50-seed1.iou.jsonl
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from ss3d_data import Ss3dError
from ss3d_eval.evaluate import read_results
from ss3d_eval.table import margins, row_value


def score_of(row: dict, score: str) -> float:
    """A result row's ``score``; an empty or failed prediction scores 0 on IoU, as in the tables."""
    if score == "iou":
        return float(row.get("iou") or 0.0)
    value = row_value(row, score)
    if value is None:
        raise Ss3dError(f"image {row.get('key')!r} has no {score} (a failed prediction, or not a chamfer file)")
    return float(value)


def seed_mean_rows(files: list[str], label: str, score: str = "iou") -> list[dict]:
    """``score`` rows of ``files`` (one per seed) -> one row per test image with the seeds' mean, labelled
    ``label``, in the result format ``margins`` reads. Every file must score the same images."""
    metric = "iou" if score == "iou" else "chamfer"
    per_key: dict[str, list[float]] = defaultdict(list)
    category: dict[str, str] = {}
    for path in files:
        rows = [r for r in read_results([path]) if r.get("metric") == metric]
        if not rows:
            raise Ss3dError(f"{path}: no {metric} rows")
        for r in rows:
            per_key[r["key"]].append(score_of(r, score))
            category[r["key"]] = r["category"]
    uneven = [k for k, v in per_key.items() if len(v) != len(files)]
    if uneven:
        raise Ss3dError(f"the {label} files do not score the same images (first: {uneven[0]})")
    out = []
    for key, values in sorted(per_key.items()):
        row = {"metric": metric, "label": label, "key": key, "category": category[key]}
        if score.startswith("fscore@"):
            row["fscore"] = {score.removeprefix("fscore@"): float(np.mean(values))}
        else:
            row[score] = float(np.mean(values))
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", required=True, help="comma-separated result files, one per seed")
    parser.add_argument("--reference", required=True, help="comma-separated result files, one per seed")
    parser.add_argument("--score", default="iou", help="iou, chamfer_l1, chamfer_l2 or fscore@T (e.g. fscore@0.05)")
    args = parser.parse_args()
    if args.score not in ("iou", "chamfer_l1", "chamfer_l2") and not args.score.startswith("fscore@"):
        raise Ss3dError(f"--score {args.score!r}: expected iou, chamfer_l1, chamfer_l2 or fscore@T")
    rows = (seed_mean_rows(args.method.split(","), "method", args.score)
            + seed_mean_rows(args.reference.split(","), "reference", args.score))
    [margin] = margins(rows, args.score, "reference")
    name = "IoU" if args.score == "iou" else args.score
    print(f"{name} margin {margin.mean:+.3f} [{margin.low:+.3f}, {margin.high:+.3f}] over {margin.samples} images "
          "(seeds averaged per image; positive = better)")


if __name__ == "__main__":
    try:
        main()
    except Ss3dError as err:
        raise SystemExit(f"error: {err}") from None
