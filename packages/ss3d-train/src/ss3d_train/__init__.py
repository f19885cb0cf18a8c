"""ss3d-train: pretrain on synthetic views, selftrain category experts, distill one unified model (torchrun DDP)."""

from ss3d_train.distill import DistillConfig, distill, distill_loss
from ss3d_train.pretrain import PretrainConfig, pretrain
from ss3d_train.run import RunOptions
from ss3d_train.selftrain import SelftrainConfig, read_cameras_state, selftrain
from ss3d_train.sparse_adam import SparseRowAdam

__all__ = ["DistillConfig", "PretrainConfig", "RunOptions", "SelftrainConfig", "SparseRowAdam", "distill",
           "distill_loss", "pretrain", "read_cameras_state", "selftrain"]
