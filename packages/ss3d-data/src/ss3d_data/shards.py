"""Writing and reading shard files (the contract itself lives in :mod:`ss3d_data.schema`).

Shards are written atomically one tar at a time, so a killed writer never leaves a torn shard; beside them an
``<prefix>.index.json`` lists each shard with its sample count and per-category counts. Readers skip corrupt
samples, count them, and stop with a clear error once more than ``max_bad`` were skipped.
"""

from __future__ import annotations

import glob
import json
import os
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import webdataset as wds

from ss3d_data.atomic import atomic_write, atomic_write_text
from ss3d_data.errors import Ss3dError
from ss3d_data.schema import SHARD_VERSION, Sample, ShardFormatError, decode_sample, encode_sample


def shard_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:06d}.tar"


def write_shards(samples: Iterable[Sample], out_dir: str | os.PathLike[str], prefix: str, per_shard: int = 64) -> list[Path]:
    """Write ``samples`` into ``out_dir/<prefix>-NNNNNN.tar`` shards of at most ``per_shard`` samples each.

    Returns the shard paths; writes ``<prefix>.index.json`` last (its presence means the set is complete).
    """
    if per_shard < 1:
        raise Ss3dError("per_shard must be at least 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    entries: list[dict[str, Any]] = []
    batch: list[dict[str, Any]] = []
    seen: set[str] = set()

    def flush() -> None:
        path = out / shard_name(prefix, len(paths))
        with atomic_write(path) as handle:
            writer = wds.TarWriter(handle)
            for encoded in batch:
                writer.write(encoded)
            writer.close()
        counts = Counter(json.loads(e["meta.json"])["category"] for e in batch)
        entries.append({"file": path.name, "samples": len(batch), "categories": dict(sorted(counts.items()))})
        paths.append(path)
        batch.clear()

    for sample in samples:
        if sample.info.key in seen:
            raise ShardFormatError(f"duplicate sample key {sample.info.key!r}")
        seen.add(sample.info.key)
        batch.append(encode_sample(sample))
        if len(batch) == per_shard:
            flush()
    if batch:
        flush()
    index = {"format": "ss3d-shard-index", "version": SHARD_VERSION, "prefix": prefix, "shards": entries,
             "samples": sum(e["samples"] for e in entries)}
    atomic_write_text(out / f"{prefix}.index.json", json.dumps(index, indent=2) + "\n")
    return paths


def resolve_shards(spec: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[str]:
    """Shard paths from a directory, a glob, a single file, or a list of those; sorted, de-duplicated."""
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    found: list[str] = []
    for item in items:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            found += sorted(str(p) for p in path.glob("*.tar"))
        elif any(ch in text for ch in "*?["):
            found += sorted(glob.glob(text))
        elif path.is_file():
            found.append(text)
        else:
            raise Ss3dError(f"no such shard file or folder: {text}")
    found = sorted(dict.fromkeys(found))
    if not found:
        raise Ss3dError(f"no .tar shards found in {', '.join(map(str, items))}")
    for shard in found:
        if not tarfile.is_tarfile(shard):
            raise Ss3dError(f"{shard}: not a tar shard", hint="shards are written by `ss3d-data shard ...`")
    return found


# Coarse kinds of skip reasons, so counts can be summed across readers and reported as one line (the reason
# strings themselves carry sample keys and decoder details).
SKIP_KINDS = ("unreadable tar data", "missing member", "unreadable image", "bad meta.json", "bad cameras",
              "contract violation")


def skip_kind(reason: str) -> str:
    """The :data:`SKIP_KINDS` entry a skip reason belongs to."""
    if reason.startswith("unreadable tar data"):
        return "unreadable tar data"
    if ": missing " in reason:
        return "missing member"
    if "readable image" in reason or "PIL mode" in reason or "larger than" in reason:
        return "unreadable image"
    if "meta.json" in reason or "num_views" in reason:
        return "bad meta.json"
    if "camera" in reason or "cam2world" in reason:
        return "bad cameras"
    return "contract violation"


@dataclass
class SkipCounter:
    """Counts samples skipped as corrupt; raises once more than ``max_bad`` have been skipped."""

    max_bad: int = 10
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)  # skips by :func:`skip_kind`

    def skip(self, reason: str) -> None:
        self.skipped += 1
        self.kinds[skip_kind(reason)] += 1
        if len(self.reasons) < 20:
            self.reasons.append(reason)
        if self.skipped > self.max_bad:
            raise Ss3dError(
                f"more than {self.max_bad} corrupt shard samples skipped; last: {reason}",
                hint="re-create the shards (ss3d-data shard ...) or raise --max-bad",
            )


def select_shards(shards: Sequence[str], rank: int = 0, world_size: int = 1, worker: int = 0,
                  num_workers: int = 1) -> list[str]:
    """The shards one reader reads: reader slot ``rank * num_workers + worker`` of ``world_size * num_workers``
    takes every (world_size * num_workers)-th shard, so ranks and loader workers read disjoint shards that together
    cover the set once. Every rank must get at least one shard (else its gradient steps would stall); a loader
    worker may get none when there are fewer shards than workers (it then yields nothing)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise Ss3dError(f"rank {rank} is outside world_size {world_size}")
    if num_workers < 1 or not 0 <= worker < num_workers:
        raise Ss3dError(f"worker {worker} is outside num_workers {num_workers}")
    ordered = list(shards)
    if len(ordered) < world_size:
        raise Ss3dError(f"{len(ordered)} shard(s) cannot feed {world_size} ranks",
                        hint="write more, smaller shards (ss3d-data shard ... --per-shard N)")
    slots = world_size * num_workers
    return ordered[rank * num_workers + worker::slots]


def iter_samples(shards: Iterable[str], skips: SkipCounter | None = None, rank: int = 0, world_size: int = 1,
                 worker: int = 0, num_workers: int = 1) -> Iterator[Sample]:
    """Decode every valid sample of ``shards`` in order; corrupt ones (bad tar members, broken images, contract
    violations) are skipped and counted in ``skips``. With ``rank/world_size`` and ``worker/num_workers`` only
    this reader's share of the shards is read (:func:`select_shards`)."""
    skips = skips if skips is not None else SkipCounter()
    shards = select_shards(list(shards), rank, world_size, worker, num_workers)
    if not shards:
        return

    def on_tar_error(exn: Exception) -> bool:
        skips.skip(f"unreadable tar data: {exn}")
        return True  # keep going

    # The shard list is already this reader's share: webdataset's own rank and worker splitters are switched off
    # (inside a DataLoader worker they would split it a second time, and under DDP refuse to run).
    dataset = wds.WebDataset(list(shards), shardshuffle=False, handler=on_tar_error, empty_check=False,
                             nodesplitter=None, workersplitter=None)
    for raw in dataset:
        try:
            yield decode_sample(raw)
        except ShardFormatError as err:
            skips.skip(str(err))
