"""Process-group setup for torchrun (DDP) and the single-process case, behind one small surface.

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR; without them a run is a world of one and no process
group is created, so the same command runs either way. The backend is NCCL when CUDA is used, gloo otherwise;
multi-node runs work through torchrun's own rendezvous (``--nnodes``, ``--rdzv-endpoint``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ss3d_data.errors import Ss3dError


@dataclass(frozen=True)
class World:
    rank: int           # global rank of this process
    size: int           # number of processes
    local_rank: int     # rank on this node (selects the GPU)
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and prints progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def setup_world(device: str = "auto") -> World:
    """Join torchrun's process group when launched by it (else a world of one) and pick the device."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise Ss3dError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise Ss3dError("--device cuda was asked for but no CUDA GPU is visible")
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = torch.device("cpu")
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    return World(rank=rank, size=size, local_rank=local_rank, device=chosen)


def teardown_world(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_min(world: World, value: float) -> float:
    """The minimum of ``value`` over all ranks (used so every rank stops an epoch or skips a step together)."""
    if not world.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=world.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return float(t.item())


def all_mean(world: World, values: Tensor) -> Tensor:
    """Mean over ranks of a small float tensor (loss figures for logging and the plateau scheduler)."""
    if not world.distributed:
        return values
    t = values.detach().to(world.device, torch.float64).clone()
    dist.all_reduce(t)
    return (t / world.size).to(values.dtype)


def all_sum_(world: World, tensor: Tensor) -> Tensor:
    """In-place sum over ranks (per-image camera rows owned by one rank each, zero elsewhere)."""
    if world.distributed:
        dist.all_reduce(tensor)
    return tensor


def wrap_ddp(world: World, module: nn.Module) -> nn.Module:
    """DistributedDataParallel around ``module`` in a multi-process world; the module itself otherwise."""
    if not world.distributed:
        return module
    device_ids = [world.local_rank] if world.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def broadcast_buffers(world: World, module: nn.Module) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) to every rank. DDP does this at the start of each
    forward pass; doing it before a checkpoint or the end makes every replica equal to what rank 0 saves."""
    if world.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)
