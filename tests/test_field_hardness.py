"""tools/field_hardness.py: the peak density and one-sample opacity it reports, on a real network whose field is
set to a known constant, and its one-line refusals."""

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import torch

from ss3d_data import load_preset
from ss3d_model import ModelConfig, ReconstructionNetwork, VolumeConfig

TOOL = Path(__file__).resolve().parents[1] / "tools" / "field_hardness.py"
spec = importlib.util.spec_from_file_location("field_hardness", TOOL)
field_hardness = importlib.util.module_from_spec(spec)
sys.modules["field_hardness"] = field_hardness  # dataclasses look their module up
spec.loader.exec_module(field_hardness)


def constant_field(density: float) -> tuple[ReconstructionNetwork, torch.Tensor]:
    """A tiny network whose decoder head outputs ``density`` everywhere (zero weights, the bias set)."""
    torch.manual_seed(0)
    network = ReconstructionNetwork(ModelConfig.from_preset(load_preset("tiny"))).eval()
    with torch.no_grad():
        network.decoder.head.weight.zero_()
        network.decoder.head.bias.copy_(torch.tensor([0.0, 0.0, 0.0, density / network.config.density_scale]))
        z = network.encode(torch.rand(1, 3, network.config.input_size, network.config.input_size))
    return network, z


def test_the_spacing_is_the_ray_over_its_samples():
    volume = VolumeConfig.from_preset(load_preset("cpu"))
    assert abs(field_hardness.sample_spacing(volume) - 1.8 / 24) < 1e-9


def test_a_constant_field_reports_its_density_and_one_samples_opacity():
    network, z = constant_field(4.0)
    h = field_hardness.hardness(network, z, 8, 0.6, 0.075, level=2.0)
    assert abs(h.peak - 4.0) < 1e-4
    assert abs(h.opacity - (1 - math.exp(-4.0 * 0.075))) < 1e-4
    assert h.share_above == 1.0
    # below the level nowhere reaches it; a negative raw density is empty space (ReLU), not a negative peak
    assert field_hardness.hardness(network, z, 8, 0.6, 0.075, level=5.0).share_above == 0.0
    empty, z = constant_field(-3.0)
    assert field_hardness.hardness(empty, z, 8, 0.6, 0.075, level=2.0).peak == 0.0


def test_bad_input_is_refused_in_one_line(tmp_path):
    for extra in (["--checkpoint", str(tmp_path / "missing.safetensors")], ["--checkpoint", "x", "--resolution", "1"]):
        out = subprocess.run([sys.executable, str(TOOL), "--shards", str(tmp_path), *extra],
                             capture_output=True, text=True)
        assert out.returncode == 2 and out.stderr.startswith("error:") and out.stderr.strip().count("\n") == 0
