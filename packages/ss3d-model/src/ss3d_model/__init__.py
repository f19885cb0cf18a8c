"""ss3d-model: the image-conditioned implicit reconstruction network and everything needed to use it."""

from ss3d_model.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CheckpointError,
    CheckpointMeta,
    load_checkpoint,
    load_state,
    read_checkpoint_meta,
    save_checkpoint,
    save_state,
    state_path,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "CheckpointMeta",
    "load_checkpoint",
    "load_state",
    "read_checkpoint_meta",
    "save_checkpoint",
    "save_state",
    "state_path",
]
