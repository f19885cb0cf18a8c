"""tools/scaling_curve.py on real-format run folders and result files: legs summed, the log2 fit, where it meets
the floor and the target."""

import json
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "scaling_curve.py"


def results(path: Path, label: str, iou: float) -> str:
    rows = [{"format": "ss3d-eval-result", "version": 1, "metric": "iou", "label": label, "key": key,
             "category": category, "iou": iou} for key, category in (("x", "a"), ("y", "a"), ("z", "b"))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def run_folder(path: Path, legs: list[tuple[int, float]]) -> str:
    """A run folder whose metrics.jsonl holds ``legs`` (last step, seconds), each restarting its clock, as a run
    resumed from a copy of a shorter one does."""
    path.mkdir()
    rows, step = [], 0
    for last, seconds in legs:
        first = step + 1
        for s in range(first, last + 1):
            rows.append({"step": s, "loss": 0.1, "time_s": seconds * (s - first + 1) / (last - first + 1)})
        step = last
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_the_curve_sums_legs_and_extrapolates_the_log2_fit(tmp_path):
    floor = results(tmp_path / "floor.jsonl", "ellipsoid", 0.15)
    legs = [(800, 100.0), (1600, 120.0), (3200, 200.0)]
    points = [f"{run_folder(tmp_path / f'r{i}', legs[:i + 1])}={results(tmp_path / f'r{i}.jsonl', 'm', iou)}"
              for i, iou in enumerate((0.10, 0.12, 0.14))]
    out = subprocess.run([sys.executable, str(TOOL), "--floor", floor, *[f"--point={p}" for p in points]],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # 3200 steps: the three legs' 420 s; IoU 0.14 against the floor's 0.15, every image alike: no interval width
    assert "| 3200 | 2 | 1 | 0.12 h | 0.140 | 0.150 | -0.010 [-0.010, -0.010] |" in lines
    assert "+0.0200 per doubling" in out.stdout
    # +0.02 per doubling from 0.14 at 3200: the floor half a doubling later (3200 sqrt 2), the floor + 0.03 two
    # doublings later; hours at the fastest leg's 0.125 s per step
    assert any(line.startswith("the floor (0.150): about 4525 steps (2.8x), 0.2 hours") for line in lines)
    assert any(line.startswith("the floor + 0.03 (0.180): about 12800 steps (8.0x), 0.4 hours") for line in lines)


def test_a_point_with_two_seeds_averages_them_per_image(tmp_path):
    floor = results(tmp_path / "floor.jsonl", "ellipsoid", 0.15)
    short = [run_folder(tmp_path / f"s{seed}", [(800, seconds)]) for seed, seconds in ((0, 100.0), (1, 140.0))]
    long = [run_folder(tmp_path / f"l{seed}", [(800, seconds), (1600, 100.0)]) for seed, seconds in ((0, 100.0),
                                                                                                      (1, 140.0))]
    scores = [",".join(results(tmp_path / f"{name}{seed}.jsonl", f"{name}{seed}", iou) for seed, iou in enumerate(pair))
              for name, pair in (("s", (0.10, 0.12)), ("l", (0.13, 0.15)))]
    points = [f"{','.join(short)}={scores[0]}", f"{','.join(long)}={scores[1]}"]
    out = subprocess.run([sys.executable, str(TOOL), "--floor", floor, *[f"--point={p}" for p in points]],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # 800 steps: the seeds' mean IoU 0.11 and their mean 120 s; 1600: 0.14 and 220 s; +0.03 per doubling
    assert "| 800 | 0.5 | 2 | 0.03 h | 0.110 | 0.150 | -0.040 [-0.040, -0.040] |" in lines
    assert "| 1600 | 1 | 2 | 0.06 h | 0.140 | 0.150 | -0.010 [-0.010, -0.010] |" in lines
    assert "+0.0300 per doubling" in out.stdout


def test_bad_points_are_refused_in_one_line(tmp_path):
    floor = results(tmp_path / "floor.jsonl", "ellipsoid", 0.15)
    short = run_folder(tmp_path / "short", [(800, 100.0)])
    long = run_folder(tmp_path / "long", [(1600, 100.0)])
    for point in ("no-separator", f"{tmp_path / 'missing'}={floor}", f"{short},{long}={floor}",
                  f"{short},{long}={floor},{floor}"):
        out = subprocess.run([sys.executable, str(TOOL), "--floor", floor, "--point", point],
                             capture_output=True, text=True)
        assert out.returncode != 0 and out.stderr.strip().count("\n") == 0 and out.stderr.startswith("error:")
