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

from ss3d_data.atomic import atomic_write, atomic_write_text
from ss3d_data.errors import Ss3dError
from ss3d_data.schema import SHARD_VERSION, Sample, ShardFormatError, decode_sample, encode_sample


def shard_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:06d}.tar"


def write_shards(samples: Iterable[Sample], out_dir: str | os.PathLike[str], prefix: str,
                 per_shard: int = 64) -> list[Path]:
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

    # Imported here: webdataset imports torch (2.5 s), which the shard readers and most CLI commands never need.
    import webdataset as wds

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
SKIP_KINDS = ("unreadable tar data", "missing from shard", "missing member", "unreadable image", "bad meta.json",
              "bad cameras", "contract violation")


def skip_kind(reason: str) -> str:
    """The :data:`SKIP_KINDS` entry a skip reason belongs to."""
    for kind in ("unreadable tar data", "missing from shard"):
        if reason.startswith(kind):
            return kind
    if ": missing " in reason:
        return "missing member"
    if "readable image" in reason or "PIL mode" in reason or "larger than" in reason:
        return "unreadable image"
    if "meta.json" in reason or "num_views" in reason:
        return "bad meta.json"
    if "camera" in reason or "cam2world" in reason:
        return "bad cameras"
    return "contract violation"


@dataclass(frozen=True)
class Skip:
    """One skipped sample: its key and category where they could still be read (else None), and why."""

    shard: str
    key: str | None
    category: str | None
    reason: str

    @property
    def kind(self) -> str:
        return skip_kind(self.reason)


@dataclass
class SkipCounter:
    """Counts samples skipped as corrupt; raises once more than ``max_bad`` have been skipped. ``records`` keeps
    the first :attr:`KEEP` skips in full (evaluation turns them into failed rows)."""

    KEEP = 10_000

    max_bad: int = 10
    skipped: int = 0
    records: list[Skip] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)  # skips by :func:`skip_kind`

    def skip(self, reason: str, *, shard: str = "", key: str | None = None, category: str | None = None) -> None:
        self.skipped += 1
        self.kinds[skip_kind(reason)] += 1
        if len(self.records) < self.KEEP:
            self.records.append(Skip(shard, key, category, reason))
        if self.skipped > self.max_bad:
            raise Ss3dError(
                f"more than {self.max_bad} corrupt shard samples skipped; last: {reason}",
                hint="re-create the shards (ss3d-data shard ...) or raise --max-bad",
            )

    @property
    def reasons(self) -> list[str]:
        return [r.reason for r in self.records]

    def summary(self) -> str:
        """One line: ``3 skipped (2 unreadable tar data, 1 missing member)`` or ``0 skipped``."""
        parts = ", ".join(f"{n} {kind}" for kind, n in sorted(self.kinds.items(), key=lambda kv: -kv[1]) if n)
        return f"{self.skipped} skipped" + (f" ({parts})" if parts else "")


def shard_prefix(shard: str | os.PathLike[str]) -> str:
    """``/x/chair-000003.tar`` -> ``/x/chair`` (the set's index file is ``<prefix>.index.json``)."""
    return str(shard).removesuffix(".tar").rsplit("-", 1)[0]


def shard_index_entry(shard: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The entry of ``shard`` in its set's ``<prefix>.index.json`` (``file``, ``samples``, ``categories``), or None
    when there is no readable index or it does not list the shard."""
    index = Path(shard_prefix(shard) + ".index.json")
    try:
        entries = json.loads(index.read_text(encoding="utf-8")).get("shards", [])
    except (OSError, ValueError, AttributeError):
        return None
    return next((e for e in entries if isinstance(e, dict) and e.get("file") == Path(shard).name), None)


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


_BLOCK = 512


@dataclass(frozen=True)
class TarDamage:
    """Bytes ``start``..``end`` of a tar could not be read as members (a damaged header, or a truncated end)."""

    start: int
    end: int
    what: str

    def __str__(self) -> str:
        return f"{self.what} at bytes {self.start}-{self.end}"


def iter_tar_members(path: str | os.PathLike[str]) -> Iterator[tuple[str, bytes] | TarDamage]:
    """The regular files of a tar as ``(name, data)``, in order, with a :class:`TarDamage` wherever bytes could
    not be read. Unlike :mod:`tarfile`'s stream reader, a damaged header does not end the archive: reading resumes
    at the next 512-byte block that is a valid header (its checksum holds), so one garbled member costs one sample,
    not the rest of the shard. PAX and GNU long names are understood."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        offset, long_name = 0, None
        gap: int | None = None  # start of the blocks read since the last valid header that were not one
        garbled = False  # whether that gap holds anything but zero blocks
        while offset + _BLOCK <= size:
            handle.seek(offset)
            try:
                info = tarfile.TarInfo.frombuf(handle.read(_BLOCK), "utf-8", "surrogateescape")
            except tarfile.HeaderError as err:
                # Zero blocks are the end marker, unless a header follows them (a zeroed header mid-archive).
                gap = offset if gap is None else gap
                garbled = garbled or not isinstance(err, tarfile.EOFHeaderError)
                offset += _BLOCK
                continue
            if gap is not None:
                yield TarDamage(gap, offset, "damaged tar header")
                gap, garbled, long_name = None, False, None  # a long name read before the damage named a lost member
            data_start = offset + _BLOCK
            if data_start + info.size > size:
                yield TarDamage(offset, size, f"truncated tar member {info.name!r}")
                return
            handle.seek(data_start)
            data = handle.read(info.size)
            offset = data_start + -(-info.size // _BLOCK) * _BLOCK
            if info.type == tarfile.XHDTYPE:  # PAX extended header: the next member's long path
                for record in data.decode("utf-8", "surrogateescape").split("\n"):
                    fields = record.split(" ", 1)
                    if len(fields) == 2 and fields[1].startswith("path="):
                        long_name = fields[1].removeprefix("path=")
            elif info.type == tarfile.GNUTYPE_LONGNAME:
                long_name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
            elif info.type in tarfile.REGULAR_TYPES:
                yield (long_name or info.name), data
                long_name = None
            else:  # directories, links, global headers: not sample members
                long_name = None
        handle.seek(offset)
        tail_garbled = bool(handle.read().strip(b"\0"))  # a last block cut short
        # A whole tar ends in zero blocks; without them (or with a partial block) it was cut short.
        if garbled or tail_garbled or gap is None or size % _BLOCK:
            yield TarDamage(offset if gap is None else gap, size, "tar cut short or damaged at its end")


def _split_member(name: str) -> tuple[str, str]:
    """``dir/key.rgb000.png`` -> (``dir/key``, ``rgb000.png``): the key runs to the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    key, _, ext = base.partition(".")
    return (f"{folder}/{key}" if folder else key), ext


def _category_of(raw: dict[str, Any]) -> str | None:
    try:
        category = json.loads(raw["meta.json"]).get("category")
    except (KeyError, ValueError, UnicodeDecodeError, AttributeError):
        return None
    return category if isinstance(category, str) and category else None


def _shard_samples(shard: str, skips: SkipCounter) -> Iterator[Sample]:
    """Decode one shard's samples, skipping and counting corrupt ones, then compare with the index's count."""
    name = Path(shard).name
    entry = shard_index_entry(shard)
    listed_categories = (entry or {}).get("categories") or {}
    # a sample too damaged to name its category belongs to the shard's only one, when it has one
    sole_category = next(iter(listed_categories)) if len(listed_categories) == 1 else None
    met: Counter[str] = Counter()  # samples met (valid or skipped) per category ("" = unknown), for the index
    damage: list[TarDamage] = []  # damaged byte ranges not yet blamed for a skipped sample

    def finish(raw: dict[str, Any]) -> Iterator[Sample]:
        key, category = raw["__key__"], _category_of(raw) or sole_category
        met[category or ""] += 1
        try:
            sample = decode_sample(raw)
        except ShardFormatError as err:
            reason = f"unreadable tar data: {name}: {damage.pop(0)}, so {err}" if damage else f"{name}: {err}"
            skips.skip(reason, shard=shard, key=key, category=category)
            return
        yield sample

    raw: dict[str, Any] | None = None
    for item in iter_tar_members(shard):
        if isinstance(item, TarDamage):
            damage.append(item)
            continue
        key, ext = _split_member(item[0])
        if raw is not None and key != raw["__key__"]:
            yield from finish(raw)
            raw = None
        raw = raw if raw is not None else {"__key__": key}
        raw[ext] = item[1]
    if raw is not None:
        yield from finish(raw)
    listed = entry.get("samples") if entry else None
    if not isinstance(listed, int):
        # No index to count against: each damaged range that no skipped sample accounts for may have held whole
        # samples; count one for each rather than none.
        for lost in damage:
            skips.skip(f"unreadable tar data: {name}: {lost}", shard=shard)
        return
    # Samples lost without a trace (damage that took whole samples, a shard cut at a member boundary): charge them
    # to the categories the index lists beyond those met, so evaluation can still count them per category.
    missing = Counter({c: n for c, n in listed_categories.items() if isinstance(n, int)})
    missing.subtract({c: n for c, n in met.items() if c})
    categories = [c for c, n in sorted(missing.items()) if n > 0 for _ in range(n)]
    where = f" ({', '.join(map(str, damage))})" if damage else ""
    for i in range(listed - sum(met.values())):
        skips.skip(f"missing from shard: {name} holds {sum(met.values())} of the {listed} samples its index lists"
                   + where, shard=shard, category=categories[i] if i < len(categories) else None)


def iter_samples(shards: Iterable[str], skips: SkipCounter | None = None, rank: int = 0, world_size: int = 1,
                 worker: int = 0, num_workers: int = 1) -> Iterator[Sample]:
    """Decode every valid sample of ``shards`` in order; corrupt ones (damaged tar data, missing members, broken
    images, contract violations, samples the index lists but the shard lacks) are skipped and counted in
    ``skips`` with their reason. With ``rank/world_size`` and ``worker/num_workers`` only this reader's share of
    the shards is read (:func:`select_shards`)."""
    skips = skips if skips is not None else SkipCounter()
    for shard in select_shards(list(shards), rank, world_size, worker, num_workers):
        try:
            yield from _shard_samples(shard, skips)
        except OSError as err:
            raise Ss3dError(f"cannot read shard {shard}: {err.strerror or err}") from None
