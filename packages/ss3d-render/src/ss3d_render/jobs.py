"""What the two render commands share: splitting a manifest across processes, per-instance random streams,
sending Blender's own output to a log file, the loop over instances and the run summary."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self, TextIO

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
    textures_unresolved: int = 0          # image textures whose file could not be read (summed over meshes)
    log: Path | None = None               # where Blender's own output of this run went (None: nothing rendered)

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
    """Send file descriptor 1 to /dev/null for the duration (Blender prints a line per frame and import); the
    render commands keep that output in a :class:`BlenderLog` instead."""
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


LOG_NAME = "blender.log"
_TERMINAL_FAILURES = 5  # "skipped" lines shown on the terminal; every failure is in the log


def log_path(out: Path, shard_index: int = 0, num_shards: int = 1) -> Path:
    """``out/blender.log``; ``out/blender-<i>-of-<n>.log`` for one of several processes sharing ``out``, so that
    their output (which C writes in blocks, not lines) never interleaves."""
    return out / (LOG_NAME if num_shards == 1 else f"blender-{shard_index}-of-{num_shards}.log")


def _fileno(stream: object) -> int | None:
    try:
        return stream.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: an in-memory stream (CliRunner)
        return None


def _flush_c_stdio() -> None:
    """Empty C's stdio buffers (Blender's printf) into the file descriptors they currently point at."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


class BlenderLog:
    """Blender's own output during a render run, appended to a log file instead of the terminal.

    Blender prints from C (``Failed to open dir ...`` for every texture an OBJ's MTL file names by a path on its
    author's disk, an import time per file, per-frame render lines) straight to file descriptors 1 and 2, which
    ``sys.stdout`` / ``sys.stderr`` redirection cannot catch. While open, both descriptors point at the log, and
    ``sys.stderr`` -- where ss3d's console, progress bar, warnings and tracebacks go -- is moved onto a duplicate of
    the original descriptor 2, so those still reach the terminal. Python-level prints of Blender's add-ons (the glTF
    importer logs to ``sys.stdout``) go to the log inside :meth:`capture`. An ``Ss3dError`` leaving the block gets
    the log's path in its hint; any other exception gets a note naming it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1                         # the log file (O_APPEND)
        self._saved: dict[int, int] = {}      # descriptor -> duplicate of what it was before
        self._stream: TextIO | None = None    # text stream on the log, for Python-level prints
        self._stderr: TextIO | None = None    # sys.stderr before, when it wrote to descriptor 2

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(AttributeError, OSError, ValueError):  # None, or closed
                stream.flush()
        _flush_c_stdio()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._stream = io.TextIOWrapper(io.FileIO(os.dup(self._fd), "w"), encoding="utf-8", errors="replace",
                                        line_buffering=True)
        self.note(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: {' '.join(sys.argv)}")
        if _fileno(sys.stderr) == 2:
            self._stderr = sys.stderr
            terminal = io.FileIO(os.dup(2), "w")
            sys.stderr = io.TextIOWrapper(terminal, encoding=sys.stderr.encoding,
                                          errors=sys.stderr.errors or "backslashreplace", line_buffering=True)
        for fd in (1, 2):
            self._saved[fd] = os.dup(fd)
            os.dup2(self._fd, fd)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        with contextlib.suppress(Exception):
            sys.stdout.flush()  # Python-level output of Blender written to descriptor 1 belongs to the log
        _flush_c_stdio()
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)
            os.close(saved)
        self._saved.clear()
        if self._stderr is not None:
            sys.stderr.flush()
            sys.stderr.close()  # closes only the duplicate
            sys.stderr, self._stderr = self._stderr, None
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        os.close(self._fd)
        if isinstance(exc, Ss3dError):
            where = f"Blender's output: {self.path}"
            exc.hint = f"{exc.hint}; {where}" if exc.hint else where
        elif isinstance(exc, Exception):
            console.print(f"[dim]Blender's output up to the error: {self.path}[/dim]", soft_wrap=True)

    def note(self, line: str) -> None:
        """Append one line of ss3d's own to the log, in order with Blender's output."""
        if self._stream is None:
            return
        self._stream.flush()
        _flush_c_stdio()
        os.write(self._fd, (line.rstrip("\n") + "\n").encode("utf-8", "replace"))

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """Python-level ``sys.stdout`` into the log for the duration (wrap bpy calls: while a progress bar runs,
        ``sys.stdout`` is the bar's proxy to the terminal)."""
        if self._stream is None:
            yield
            return
        with contextlib.redirect_stdout(self._stream):
            yield
        self._stream.flush()


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
                render_one: Callable[[MeshRecord], int], log: BlenderLog | None = None) -> None:
    """Call ``render_one`` (renders and writes one instance, returns its view count) for every record of ``todo``,
    with a progress bar. A mesh that cannot be rendered (``Ss3dError``) is reported and skipped, not fatal: one bad
    file in a library of hundreds should not stop the run; the terminal shows the first few, ``log`` all of them.
    Fills ``summary``'s counts and seconds."""
    start = time.perf_counter()
    if todo:
        with progress() as bar:
            bar_task = bar.add_task(task, total=len(todo), status="")
            for record in todo:
                try:
                    views = render_one(record)
                except Ss3dError as err:
                    summary.failed.append(f"{record.instance_id}: {err}")
                    if log is not None:
                        log.note(f"ss3d-render: skipped {record.instance_id}: {err}")
                    if len(summary.failed) <= _TERMINAL_FAILURES or log is None:
                        console.print(f"[yellow]skipped[/yellow] {record.instance_id}: {err}", soft_wrap=True)
                    elif len(summary.failed) == _TERMINAL_FAILURES + 1:
                        console.print(f"[yellow]more meshes skipped[/yellow]: listed in {log.path}", soft_wrap=True)
                else:
                    summary.rendered += 1
                    summary.views += views
                rate = summary.views / max(time.perf_counter() - start, 1e-9)
                bar.update(bar_task, advance=1, status=f"{rate:.1f} {unit}/s")
    summary.seconds = time.perf_counter() - start
