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
