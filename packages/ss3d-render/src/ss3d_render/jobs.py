"""What the two render commands share: splitting a manifest across processes, per-instance random streams,
silencing Blender's per-frame chatter, the loop over instances and the run summary."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ss3d_data.clikit import console, progress
from ss3d_data.errors import Ss3dError
from ss3d_data.manifest import MeshRecord


@dataclass
class RenderSummary:
    """Outcome of one render run (this process's share)."""

    assigned: int = 0                     # instances this process is responsible for
    rendered: int = 0                     # sample folders written in this run
    skipped: int = 0                      # already present (resume)
    views: int = 0                        # views rendered in this run
    seconds: float = 0.0                  # wall time of the run
    failed: list[str] = field(default_factory=list)  # "instance: reason" for meshes that could not be rendered

    @property
    def views_per_second(self) -> float:
        return self.views / self.seconds if self.seconds > 0 else 0.0


def assigned_records(records: Sequence[MeshRecord], shard_index: int, num_shards: int) -> list[MeshRecord]:
    """The records process ``shard_index`` of ``num_shards`` renders: instance i goes to process i % num_shards."""
    if num_shards < 1:
        raise Ss3dError(f"--num-shards must be at least 1, got {num_shards}")
    if not 0 <= shard_index < num_shards:
        raise Ss3dError(f"--shard-index must be in [0, {num_shards - 1}], got {shard_index}")
    return [r for i, r in enumerate(records) if i % num_shards == shard_index]


def instance_rng(seed: int, instance_id: str, stream: str) -> np.random.Generator:
    """A random generator that depends only on (seed, instance, stream): renders are reproducible per instance
    whatever the process split or the order of work."""
    digest = hashlib.sha256(f"{stream}/{instance_id}".encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Send file descriptor 1 to /dev/null for the duration (Blender prints a line per frame and import)."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def premultiply(rgba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RGBA uint8 [H, W, 4] (straight alpha) -> (RGB over black [H, W, 3] uint8, mask = alpha [H, W] uint8)."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = np.clip(np.rint(rgba[..., :3].astype(np.float32) * alpha), 0, 255).astype(np.uint8)
    return rgb, rgba[..., 3].copy()


def select_categories(records: Sequence[MeshRecord], categories: Sequence[str] | None) -> list[MeshRecord]:
    """Records whose category is in ``categories`` (all when None); unknown category names are an error."""
    if not categories:
        return list(records)
    present = {r.category for r in records}
    missing = sorted(set(categories) - present)
    if missing:
        raise Ss3dError(
            f"categories not in the manifest: {', '.join(missing)}", hint=f"present: {', '.join(sorted(present))}"
        )
    return [r for r in records if r.category in set(categories)]


def render_each(todo: Sequence[MeshRecord], summary: RenderSummary, task: str, unit: str,
                render_one: Callable[[MeshRecord], int]) -> None:
    """Call ``render_one`` (renders and writes one instance, returns its view count) for every record of ``todo``,
    with a progress bar. A mesh that cannot be rendered (``Ss3dError``) is reported and skipped, not fatal: one bad
    file in a library of hundreds should not stop the run. Fills ``summary``'s counts and seconds."""
    start = time.perf_counter()
    if todo:
        with progress() as bar:
            bar_task = bar.add_task(task, total=len(todo), status="")
            for record in todo:
                try:
                    views = render_one(record)
                except Ss3dError as err:
                    summary.failed.append(f"{record.instance_id}: {err}")
                    console.print(f"[yellow]skipped[/yellow] {record.instance_id}: {err}")
                else:
                    summary.rendered += 1
                    summary.views += views
                rate = summary.views / max(time.perf_counter() - start, 1e-9)
                bar.update(bar_task, advance=1, status=f"{rate:.1f} {unit}/s")
    summary.seconds = time.perf_counter() - start
