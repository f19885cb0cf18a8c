import json
import struct

import pytest
import torch

from ss3d_model.checkpoint import CheckpointError, CheckpointMeta, load_checkpoint, save_checkpoint
from ss3d_model.config import ModelConfig
from ss3d_model.io import load_network, save_network
from ss3d_model.network import ReconstructionNetwork


def test_round_trip_is_bit_exact(tmp_path, tiny_network, tiny_config):
    path = tmp_path / "init.safetensors"
    save_network(path, tiny_network, CheckpointMeta(model_config={}, stage="init", preset="tiny"))
    loaded, meta = load_network(path)
    assert meta.model_config == tiny_config.to_dict() and meta.stage == "init"
    assert loaded.config == tiny_config and not loaded.training
    for name, value in tiny_network.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    g = torch.Generator().manual_seed(3)
    images = torch.rand(2, 3, 64, 64, generator=g)
    points = torch.rand(2, 50, 3, generator=g) - 0.5
    with torch.no_grad():
        a, b = tiny_network(images, points), loaded(images, points)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_config_travels_in_the_file(tmp_path):
    config = ModelConfig("resnet18", 64, 16, 2, 30.0)
    path = tmp_path / "m.safetensors"
    save_network(path, ReconstructionNetwork(config), CheckpointMeta(model_config={"stale": 1}, stage="pretrain"))
    loaded, _ = load_network(path)
    assert loaded.config == config and loaded.decoder.head.weight.shape == (4, 16)


def test_shape_mismatch_rejected(tmp_path, tiny_network, tiny_config):
    tensors = dict(tiny_network.state_dict())
    tensors["decoder.head.weight"] = torch.zeros(4, tiny_config.hidden + 1)
    path = tmp_path / "bad.safetensors"
    save_checkpoint(path, tensors, CheckpointMeta(model_config=tiny_config.to_dict(), stage="init"))
    with pytest.raises(CheckpointError, match="decoder.head.weight"):
        load_network(path)


def test_missing_and_extra_tensors_rejected(tmp_path, tiny_network, tiny_config):
    tensors = dict(tiny_network.state_dict())
    del tensors["decoder.first.bias"]
    path = tmp_path / "missing.safetensors"
    save_checkpoint(path, tensors, CheckpointMeta(model_config=tiny_config.to_dict(), stage="init"))
    with pytest.raises(CheckpointError, match="1 missing"):
        load_network(path)
    tensors = {**tiny_network.state_dict(), "extra.weight": torch.zeros(2)}
    save_checkpoint(path, tensors, CheckpointMeta(model_config=tiny_config.to_dict(), stage="init"))
    with pytest.raises(CheckpointError, match="1 unexpected"):
        load_network(path)


def test_bad_model_config_rejected(tmp_path, tiny_network, tiny_config):
    path = tmp_path / "cfg.safetensors"
    save_checkpoint(path, tiny_network.state_dict(),
                    CheckpointMeta(model_config={**tiny_config.to_dict(), "hidden": -3}, stage="init"))
    with pytest.raises(CheckpointError, match="model_config"):
        load_network(path)


def test_pickle_is_not_a_checkpoint(tmp_path, tiny_network):
    path = tmp_path / "model.pt"
    torch.save(tiny_network.state_dict(), path)
    with pytest.raises(CheckpointError):
        load_network(path)
    header = json.dumps({"__metadata__": {"ss3d.format": "ss3d-checkpoint"}}).encode()
    (tmp_path / "x.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(CheckpointError, match="version"):
        load_checkpoint(tmp_path / "x.safetensors")
