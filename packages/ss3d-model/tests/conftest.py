import pytest
import torch

from ss3d_data.presets import load_preset
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
