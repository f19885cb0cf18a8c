"""The training loop every stage shares (:func:`run_stage`): epochs from the resume position, the batches of an
epoch across ranks (skipping those already done, bounding unreadable samples), guarded optimiser updates, the
progress bar, metrics, periodic checkpoints and ``--stop-after``. The run folder itself is :mod:`ss3d_train.run`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from ss3d_data.clikit import progress
from ss3d_data.errors import Ss3dError
from ss3d_train.data import ShardDataset
from ss3d_train.distributed import World, all_min
from ss3d_train.run import NonFiniteGuard, StageRun, bad_summary, finite_everywhere


def _check_bad(loader, world: World, epoch_done: bool) -> None:
    """Stop every rank together once a rank's loader skipped more than ``max_bad`` samples this epoch; at the end
    of an epoch add its counts to the dataset's total."""
    dataset = loader.dataset
    if not isinstance(dataset, ShardDataset):
        return
    counts = dataset.bad_this_epoch()
    worst = -all_min(world, -float(counts.sum()))
    if worst > dataset.max_bad:
        mine = f"; here: {bad_summary(counts)}" if counts.sum() else ""
        raise Ss3dError(f"more than {dataset.max_bad} unreadable shard samples in epoch {dataset.epoch} "
                        f"({int(worst)} on the worst rank{mine})",
                        hint="re-create the shards (ss3d-data shard ...), check them with `ss3d-data inspect`, or "
                             "raise --max-bad")
    if epoch_done:
        dataset.bad_total += counts


def epoch_batches(loader, world: World, skip: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index in epoch, batch) of one epoch, starting after ``skip`` batches already done (resume). The epoch ends
    for every rank as soon as one rank runs out, so collective operations never wait on a finished rank. An epoch
    without a single full batch is an error: training on it would silently write an untrained checkpoint. More
    than the dataset's ``max_bad`` unreadable samples in the epoch stop the run (checked after every batch)."""
    iterator = iter(loader)
    index = 0
    while True:
        batch = next(iterator, None)
        _check_bad(loader, world, epoch_done=batch is None)
        if all_min(world, 0.0 if batch is None else 1.0) < 0.5:
            if index == 0:
                raise Ss3dError(f"the shards gave no full batch of {loader.batch_size} valid samples"
                                f"{' on some process' if world.size > 1 else ''}: too few samples for this batch "
                                "size, or none readable")
            return
        if index >= skip:
            yield index, batch
        index += 1


class KeptBuffers:
    """A module's buffers (batch-norm running statistics) as they were before a training forward pass, put back
    when the step is skipped: a NaN batch must not leave NaN statistics behind in a step that "changed nothing"."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.saved = [(buffer, buffer.detach().clone()) for buffer in module.buffers()]

    def restore(self) -> None:
        with torch.no_grad():
            for buffer, value in self.saved:
                buffer.copy_(value)


def guarded_update(guard: NonFiniteGuard, world: World, optimizer: torch.optim.Optimizer, loss: Tensor,
                   step: int, kept: KeptBuffers | None = None, clip_norm: float = 0.0) -> float | None:
    """One optimiser update. -> the L2 norm of the gradient of all the optimiser's parameters before any clipping
    (the metrics' ``grad_norm``: what a ``grad_clip_norm`` is chosen from), or None, with nothing changed (``kept``
    buffers restored), when the loss is NaN/Inf on any rank (every rank then skips the batch together, and ``guard``
    counts it). ``clip_norm`` > 0 rescales that gradient to at most that norm first (the stages' ``grad_clip_norm``);
    the gradients are already averaged over ranks by then, so every rank measures and clips alike."""
    optimizer.zero_grad(set_to_none=True)
    if not guard.ok(finite_everywhere(world, loss), step):
        if kept is not None:
            kept.restore()
        return None
    loss.backward()
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    norm = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
    if 0 < clip_norm < norm:
        scale = clip_norm / (norm + 1e-6)  # torch's clip_grad_norm_ rule, with the norm already measured
        for grad in grads:
            grad.mul_(scale)
    optimizer.step()
    return norm


def images_per_second(images: int, started: float) -> float:
    """Throughput of a step that began at ``started`` (``time.perf_counter()``)."""
    return images / max(time.perf_counter() - started, 1e-9)


class _Quiet:
    """Stands in for the progress bar on ranks other than 0."""

    def __enter__(self) -> "_Quiet":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *args: object, **kwargs: object) -> int:
        return 0

    def update(self, *args: object, **kwargs: object) -> None:
        return None


def stage_progress(world: World):
    """The standard progress bar on rank 0; a silent stand-in elsewhere."""
    return progress() if world.is_main else _Quiet()


Metrics = dict[str, float]


class StageState(Protocol):
    """What :func:`run_stage` needs of a stage's state: its resume position, a JSON-able dict holding at least
    ``step`` (optimiser steps done), ``epoch`` and ``batch`` (batches of the epoch done); stages add their own
    counters (e.g. a second data stream's place)."""

    position: dict[str, Any]


def new_position(**extra: Any) -> dict[str, Any]:
    return {"step": 0, "epoch": 0, "batch": 0, **extra}


def loss_status(values: Metrics) -> str:
    """The progress bar's default status: loss and throughput."""
    return f"loss {values['loss']:.5g} {values.get('images_per_s', 0.0):.1f} img/s"


def run_stage(run: StageRun, network: torch.nn.Module, state: StageState,
              step: Callable[[Any, dict[str, Any]], Metrics | None], loader, epochs: int,
              checkpoint: Callable[[bool], None], checkpoint_every: int, *, label: str,
              end_epoch: Callable[[], None] | None = None, status: Callable[[Metrics], str] = loss_status,
              datasets: tuple[ShardDataset | None, ...] = ()) -> Path:
    """The training loop every stage shares: epochs from the resume position, the batches of an epoch after those
    already done, one ``step(state, batch)`` each (None = skipped by the non-finite guard: no step is counted),
    metrics, the progress bar, periodic checkpoints (``checkpoint(final)``) and ``--stop-after``. ``end_epoch``
    runs after each full epoch (before the position moves to the next). Returns the final checkpoint, or ``last``
    when ``--stop-after`` ended this invocation."""
    position = state.position
    with stage_progress(run.world) as bar:
        task = bar.add_task(label, total=None, status="")
        while position["epoch"] < epochs:
            loader.dataset.set_epoch(position["epoch"])
            for index, batch in epoch_batches(loader, run.world, position["batch"]):
                position["batch"] = index + 1
                values = step(state, batch)
                if values is None:
                    continue
                bar.update(task, advance=1, status=f"epoch {position['epoch']} {status(values)}")
                position["step"] += 1
                run.steps_this_run += 1
                run.log(position["step"], {**values, "epoch": position["epoch"], "skipped": run.guard.skipped})
                stop = bool(run.options.stop_after) and run.steps_this_run >= run.options.stop_after
                if stop or position["step"] % checkpoint_every == 0:  # one write when both fall on one step
                    checkpoint(False)
                if stop:
                    return run.last
            if end_epoch is not None:
                end_epoch()
            position.update(epoch=position["epoch"] + 1, batch=0)
    checkpoint(True)
    run.finish(network, loader.dataset, *datasets)
    return run.final
