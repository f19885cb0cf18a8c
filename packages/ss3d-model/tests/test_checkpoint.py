import pytest
import torch
from safetensors.torch import save_file

from ss3d_data.errors import Ss3dError
from ss3d_model.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    load_checkpoint,
    load_state,
    save_checkpoint,
    save_state,
    state_path,
)


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {"decoder.w": torch.randn(8, 4, generator=g), "encoder.b": torch.randn(3, generator=g).double(),
            "steps": torch.arange(5)}


def _meta():
    return CheckpointMeta(model_config={"hidden": 8}, stage="pretrain", preset="tiny", step=7, categories=["chair"])


def test_round_trip_is_bit_exact(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, _tensors(), _meta())
    tensors, meta = load_checkpoint(path)
    for k, v in _tensors().items():
        assert tensors[k].dtype == v.dtype and torch.equal(tensors[k], v)
    assert meta.step == 7 and meta.categories == ["chair"] and meta.model_config == {"hidden": 8}
    assert meta.code_version.startswith("0.1.0")


def test_truncated_checkpoint_rejected(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, _tensors(), _meta())
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)
    path.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(path)


def test_wrong_version_rejected(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file(_tensors(), path, metadata={"ss3d.format": "ss3d-checkpoint", "ss3d.version": "99", "ss3d.meta": "{}"})
    with pytest.raises(CheckpointError, match="version '99'"):
        load_checkpoint(path)


def test_non_ss3d_and_non_safetensors_files_rejected(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file(_tensors(), plain)
    with pytest.raises(CheckpointError, match="not an ss3d-checkpoint"):
        load_checkpoint(plain)
    pickle_file = tmp_path / "model.pt"
    torch.save(_tensors(), pickle_file)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(pickle_file)
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_interrupted_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, _tensors(), _meta())
    before = path.read_bytes()
    import ss3d_data.atomic as atomic

    def crash(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(Ss3dError, match="disk full"):  # one error line, not a traceback
        save_checkpoint(path, {"x": torch.zeros(3)}, _meta())
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_state_file_round_trip_and_format_check(tmp_path):
    ckpt = tmp_path / "last.safetensors"
    assert state_path(ckpt).name == "last.state.safetensors"
    save_state(state_path(ckpt), {"adam.m": torch.ones(2)}, {"step": 3, "rng": [1, 2]})
    tensors, info = load_state(state_path(ckpt))
    assert info == {"step": 3, "rng": [1, 2]} and torch.equal(tensors["adam.m"], torch.ones(2))
    with pytest.raises(CheckpointError, match="not an ss3d-checkpoint"):
        load_checkpoint(state_path(ckpt))
