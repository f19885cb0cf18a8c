"""Saving and loading a whole network through the checkpoint contract (``ss3d_model.checkpoint``).

The architecture travels in ``CheckpointMeta.model_config``; :func:`load_network` rebuilds the network from it and
insists on an exact match of tensor names, shapes and dtypes.
"""

from __future__ import annotations

import os

import torch

from ss3d_data.errors import Ss3dError
from ss3d_model.checkpoint import CheckpointError, CheckpointMeta, load_checkpoint, save_checkpoint
from ss3d_model.config import ModelConfig
from ss3d_model.network import ReconstructionNetwork


def save_network(path: str | os.PathLike[str], network: ReconstructionNetwork, meta: CheckpointMeta) -> None:
    """Write the network's state dict atomically; ``meta.model_config`` is set from the network's config."""
    meta.model_config = network.config.to_dict()
    save_checkpoint(path, network.state_dict(), meta)


def load_network(path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
                 ) -> tuple[ReconstructionNetwork, CheckpointMeta]:
    """Rebuild the network from a checkpoint's config and load its tensors strictly (eval mode)."""
    tensors, meta = load_checkpoint(path)
    try:
        config = ModelConfig.from_dict(meta.model_config)
    except Ss3dError as err:
        raise CheckpointError(f"{path}: checkpoint model_config is invalid ({err})") from None
    network = ReconstructionNetwork(config)
    expected = network.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"{path}: tensors do not match the model config ({len(missing)} missing, "
                              f"{len(unexpected)} unexpected: {detail})")
    for name, value in expected.items():
        got = tensors[name]
        if got.shape != value.shape or got.dtype != value.dtype:
            raise CheckpointError(f"{path}: tensor {name!r} is {got.dtype} {list(got.shape)}, the model config "
                                  f"needs {value.dtype} {list(value.shape)}")
    network.load_state_dict(tensors, strict=True)
    network.eval()
    return network.to(map_location), meta
