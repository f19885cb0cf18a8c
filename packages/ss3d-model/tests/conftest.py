import pytest
import torch
from typer.testing import CliRunner

from ss3d_data.presets import load_preset
from ss3d_model.cli import app
from ss3d_model.config import ModelConfig, VolumeConfig
from ss3d_model.network import ReconstructionNetwork


@pytest.fixture(scope="session")
def tiny_config() -> ModelConfig:
    return ModelConfig.from_preset(load_preset("tiny"))


@pytest.fixture(scope="session")
def tiny_volume() -> VolumeConfig:
    return VolumeConfig.from_preset(load_preset("tiny"))


@pytest.fixture()
def tiny_network(tiny_config) -> ReconstructionNetwork:
    torch.manual_seed(0)
    return ReconstructionNetwork(tiny_config).eval()


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A fresh ``tiny`` checkpoint written by ``ss3d-model init``: it meshes to a surface at threshold 0.02."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    result = CliRunner().invoke(app, ["init", "--preset", "tiny", "--out", str(path)])
    assert result.exit_code == 0, result.output
    return path
