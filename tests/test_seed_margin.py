"""tools/seed_margin.py on real result files: seeds averaged per image, then the evaluation's paired margin."""

import json
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "seed_margin.py"


def write(path: Path, label: str, scores: dict[str, tuple[str, float]]) -> str:
    rows = [{"format": "ss3d-eval-result", "version": 1, "metric": "iou", "label": label, "key": key,
             "category": category, "iou": iou} for key, (category, iou) in scores.items()]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True)


def test_seeds_are_averaged_per_image_before_the_paired_margin(tmp_path):
    # Two categories; the method's seeds average to reference + 0.1 on category a and + 0.3 on category b.
    a0 = write(tmp_path / "a0.jsonl", "m", {"x": ("a", 0.30), "y": ("a", 0.40), "z": ("b", 0.50)})
    a1 = write(tmp_path / "a1.jsonl", "m-seed1", {"x": ("a", 0.10), "y": ("a", 0.40), "z": ("b", 0.30)})
    ref = write(tmp_path / "r.jsonl", "r", {"x": ("a", 0.10), "y": ("a", 0.30), "z": ("b", 0.10)})
    result = run("--method", f"{a0},{a1}", "--reference", ref)
    assert result.returncode == 0, result.stderr
    # Within each category every image differs alike, so resampling cannot move the margin; the mean of the two
    # categories (0.2) is not the mean of the three images (0.167): categories weigh equally, as in the tables.
    assert result.stdout.startswith("IoU margin +0.200 [+0.200, +0.200] over 3 images")


def test_files_of_different_images_are_refused_in_one_line(tmp_path):
    a0 = write(tmp_path / "a0.jsonl", "m", {"x": ("a", 0.3)})
    a1 = write(tmp_path / "a1.jsonl", "m", {"y": ("a", 0.3)})
    result = run("--method", f"{a0},{a1}", "--reference", a0)
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and "do not score the same images" in result.stderr


def write_chamfer(path: Path, label: str, scores: dict[str, tuple[str, float, float]]) -> str:
    """ss3d-eval chamfer rows: key -> (category, chamfer_l1, F-score at 0.05)."""
    rows = [{"format": "ss3d-eval-result", "version": 1, "metric": "chamfer", "label": label, "key": key,
             "category": category, "chamfer_l1": l1, "fscore": {"0.01": 0.0, "0.05": f}}
            for key, (category, l1, f) in scores.items()]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_point_metrics_are_averaged_over_seeds_and_oriented_so_positive_is_better(tmp_path):
    m0 = write_chamfer(tmp_path / "m0.jsonl", "m", {"x": ("a", 0.04, 0.60), "y": ("b", 0.05, 0.50)})
    m1 = write_chamfer(tmp_path / "m1.jsonl", "m1", {"x": ("a", 0.06, 0.70), "y": ("b", 0.05, 0.60)})
    ref = write_chamfer(tmp_path / "r.jsonl", "r", {"x": ("a", 0.06, 0.55), "y": ("b", 0.07, 0.45)})
    fscore = run("--method", f"{m0},{m1}", "--reference", ref, "--score", "fscore@0.05")
    assert fscore.returncode == 0, fscore.stderr
    # seeds' means 0.65 and 0.55 against 0.55 and 0.45: +0.1 in each category
    assert fscore.stdout.startswith("fscore@0.05 margin +0.100 [+0.100, +0.100] over 2 images")
    # Chamfer: lower is better, so 0.05 against 0.06 and 0.07 is a positive margin of 0.015
    chamfer = run("--method", f"{m0},{m1}", "--reference", ref, "--score", "chamfer_l1")
    assert chamfer.returncode == 0 and chamfer.stdout.startswith("chamfer_l1 margin +0.015 [+0.015, +0.015]")
    for bad in (["--score", "volume"], ["--score", "fscore@0.05", "--reference", write(tmp_path / "iou.jsonl", "i",
                                                                                       {"x": ("a", 0.3)})]):
        args = ["--method", m0, "--reference", ref, *bad]
        result = run(*args)
        assert result.returncode != 0 and result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error:")
