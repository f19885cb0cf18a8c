"""tools/ray_sampling.py: the thin-slab measurement that docs/quality.md quotes, against geometry's closed forms."""

import importlib.util
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from ss3d_data import load_preset
from ss3d_model.config import VolumeConfig

TOOL = Path(__file__).resolve().parents[1] / "tools" / "ray_sampling.py"
spec = importlib.util.spec_from_file_location("ray_sampling", TOOL)
ray_sampling = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ray_sampling)
CPU = VolumeConfig.from_preset(load_preset("cpu"))  # 24 samples over a 1.8-long ray


def missed_share(thickness: float, spacing: float) -> float:
    """Chance that stratified samples (one uniform in each bin of width ``spacing``) all miss a slab thinner than a
    bin at a uniformly random position: inside one bin, or straddling two with a share a of it in the first."""
    r = thickness / spacing
    return (1 - r) * (1 - r) + r * (1 - r + r * r / 6)


def test_uniform_samples_miss_a_thin_slab_as_often_as_geometry_says():
    row = ray_sampling.measure(CPU, 0.025, 60.0, rays=20000, seed=0)
    assert abs(row["missed"] - missed_share(0.05, 1.8 / 24)) < 0.02


def test_a_slab_thicker_than_the_spacing_renders_its_closed_form_either_way():
    exact = 0.95
    sigma = -math.log(1 - exact) / 0.4
    for importance in (0, 8):
        row = ray_sampling.measure(replace(CPU, importance_samples=importance), 0.2, sigma, rays=4000, seed=1)
        assert abs(row["mean"] - exact) < 0.02 and row["missed"] == 0.0


def test_the_command_prints_one_row_per_scheme_and_thickness():
    result = subprocess.run([sys.executable, str(TOOL), "--importance", "0,8", "--half-thickness", "0.05,0.2",
                             "--rays", "500"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 0.")]
    assert len(rows) == 6  # 2 thicknesses x (uniform, K = 8, the dense uniform reference)


def test_bad_input_is_one_line_and_exit_2():
    for args in (["--importance", "0,x"], ["--importance", "23"], ["--opacity", "1"], ["--preset", "nope"]):
        result = subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True)
        assert result.returncode == 2 and "Traceback" not in result.stderr, (args, result.stderr)
