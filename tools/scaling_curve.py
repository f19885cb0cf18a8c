"""What more pretraining buys: held-out IoU against pretraining steps and CPU time, with a fit that says where the
curve would meet a target.

Each point is a run folder (its ``metrics.jsonl``: the steps reached and the seconds each leg took; a folder resumed
from a copy of a shorter run holds the shorter run's legs too) and that run's IoU result file, or several of each,
comma-separated, one per seed: their IoU is then averaged per test image (as ``tools/seed_margin.py`` does) and
their training seconds over the seeds. IoU is the tables' mean (categories weighed equally) with its margin over the
floor's result file and the paired 95% interval. The fit is IoU = a + b log2(steps) by least squares over the
points; it prints the gain per doubling and the steps and hours (at the fastest leg's seconds per step: the quietest
machine) at which the fit reaches the floor and the floor plus ``--target-margin``: an extrapolation from the points
measured, labelled as such.

    .venv/bin/python tools/scaling_curve.py --floor runs/exp/q/ellipsoid.iou.jsonl \\
        --point runs/exp/lite-s0=runs/exp/q/lite-s0.iou.jsonl \\
        --point runs/exp/lite-e200-s0,runs/exp/lite-e200-s1=runs/exp/q/lite-e200-s0.iou.jsonl,\\
            runs/exp/q/lite-e200-s1.iou.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from seed_margin import seed_mean_rows  # this folder's tool: the per-image seed mean

from ss3d_data import Ss3dError
from ss3d_eval.table import margins


@dataclass(frozen=True)
class Point:
    steps: int
    seeds: int
    seconds: float           # the legs' training seconds, summed (the seeds' mean)
    fastest_rate: float      # seconds per step of its fastest leg (the quietest machine)
    iou: float
    margin: tuple[float, float, float]  # mean, low, high over the floor


def training_time(metrics: Path) -> tuple[int, float, float]:
    """metrics.jsonl -> (last step, summed seconds of its legs, seconds per step of its fastest leg). Each leg (a
    run or a resume) restarts ``time_s`` from zero; a leg's seconds are its last ``time_s``."""
    if not metrics.is_file():
        raise Ss3dError(f"{metrics}: no such metrics file")
    legs: list[tuple[int, int, float]] = []  # (first step, last step, seconds)
    previous_time = math.inf
    for line in metrics.read_text().splitlines():
        row = json.loads(line)
        if "step" not in row or "time_s" not in row:
            continue
        if row["time_s"] < previous_time:
            legs.append((row["step"] - 1, row["step"], row["time_s"]))
        else:
            legs[-1] = (legs[-1][0], row["step"], row["time_s"])
        previous_time = row["time_s"]
    if not legs:
        raise Ss3dError(f"{metrics}: no logged steps")
    fastest = min(seconds / max(last - first, 1) for first, last, seconds in legs)
    return legs[-1][1], sum(leg[2] for leg in legs), fastest


def category_mean(rows: list[dict]) -> float:
    per_category: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        per_category[r["category"]].append(float(r.get("iou") or 0.0))  # an empty prediction scores 0
    return sum(sum(v) / len(v) for v in per_category.values()) / len(per_category)


def read_point(item: str, floor: list[dict]) -> Point:
    """``FOLDER[,FOLDER...]=RESULTS[,RESULTS...]`` (one of each per seed) -> its point on the curve."""
    folders, sep, results = item.partition("=")
    if not sep:
        raise Ss3dError(f"--point {item!r}: expected RUN_FOLDER=IOU_RESULTS")
    folders, results = folders.split(","), results.split(",")
    if len(folders) != len(results):
        raise Ss3dError(f"--point {item!r}: {len(folders)} run folders but {len(results)} result files")
    times = [training_time(Path(folder) / "metrics.jsonl") for folder in folders]
    if len({steps for steps, _, _ in times}) > 1:
        raise Ss3dError(f"--point {item!r}: the seeds' runs end at different steps "
                        f"({', '.join(str(t[0]) for t in times)})")
    rows = seed_mean_rows(results, "point")
    [m] = margins(rows + floor, "iou", "floor")
    return Point(times[0][0], len(folders), sum(t[1] for t in times) / len(times), min(t[2] for t in times),
                 category_mean(rows), (m.mean, m.low, m.high))


def fit(steps: list[int], ious: list[float]) -> tuple[float, float]:
    """Least-squares IoU = a + b log2(steps) -> (a, b)."""
    if len(set(steps)) < 2:
        raise Ss3dError("the fit needs points at two or more step counts")
    xs = [math.log2(s) for s in steps]
    mx, my = sum(xs) / len(xs), sum(ious) / len(ious)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ious)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def steps_to_reach(level: float, a: float, b: float) -> float | None:
    """Steps at which the fit reaches ``level``; None where it never does (no gain per doubling)."""
    return 2.0 ** ((level - a) / b) if b > 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--point", action="append", required=True,
                        help="RUN_FOLDER=IOU_RESULTS, or comma-separated lists of both, one per seed (repeatable)")
    parser.add_argument("--floor", required=True, help="the floor's IoU result file (mask ellipsoid)")
    parser.add_argument("--reference-steps", type=int, default=1600, help="steps of 1x (the main job's pretraining)")
    parser.add_argument("--target-margin", type=float, default=0.03, help="the target's margin over the floor")
    args = parser.parse_args()
    floor = seed_mean_rows([args.floor], "floor")
    floor_iou = category_mean(floor)
    points = sorted((read_point(item, floor) for item in args.point), key=lambda p: p.steps)
    print("| pretraining steps | x the main job's | seeds | training time | held-out IoU | floor | "
          "margin over the floor |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for p in points:
        mean, low, high = p.margin
        print(f"| {p.steps} | {p.steps / args.reference_steps:g} | {p.seeds} | {p.seconds / 3600:.2f} h | "
              f"{p.iou:.3f} | {floor_iou:.3f} | {mean:+.3f} [{low:+.3f}, {high:+.3f}] |")
    a, b = fit([p.steps for p in points], [p.iou for p in points])
    print(f"\nfit over {len(points)} points: IoU = {a:.3f} + {b:.4f} log2(steps), {b:+.4f} per doubling "
          "(an extrapolation beyond the last point)")
    rate = min(p.fastest_rate for p in points)
    target = floor_iou + args.target_margin
    for name, level in (("the floor", floor_iou), (f"the floor + {args.target_margin:g}", target)):
        steps = steps_to_reach(level, a, b)
        if steps is None:
            print(f"{name} ({level:.3f}): never, at this fit")
        else:
            print(f"{name} ({level:.3f}): about {steps:.0f} steps ({steps / args.reference_steps:.1f}x), "
                  f"{steps * rate / 3600:.1f} hours of training at {rate:.3f} s/step")


if __name__ == "__main__":
    try:
        main()
    except Ss3dError as err:
        raise SystemExit(f"error: {err}") from None
