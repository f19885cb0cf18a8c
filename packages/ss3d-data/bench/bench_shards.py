"""Shard read throughput: decoded samples/s with N reader processes (and a torch DataLoader when torch is there),
each relative to the raw tar read speed of the same shards measured in the same run.

    .venv/bin/python packages/ss3d-data/bench/bench_shards.py [--samples 384] [--size 128] [--views 1] [--workers 1 2]

The shards are synthetic (random images, box masks) written to a temporary folder; PNG decoding dominates, so
samples/s scale with image size and views per sample.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from ss3d_data.schema import Sample, SampleInfo
from ss3d_data.shards import SkipCounter, iter_samples, resolve_shards, write_shards


def make_shards(folder: Path, samples: int, size: int, views: int, per_shard: int) -> list[str]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]

    def gen():
        for i in range(samples):
            # smooth images (gradients + noise) compress like renders do, unlike pure noise
            base = (np.stack([xx, yy, xx + yy], -1) * (255 / (2 * size))).astype(np.uint8)
            images = np.clip(base[None] + rng.integers(0, 24, (views, size, size, 3)), 0, 255).astype(np.uint8)
            masks = np.zeros((views, size, size), np.uint8)
            masks[:, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 255
            kind = "views" if views > 1 else "image"
            info = SampleInfo(kind, f"s{i:05d}", f"cat{i % 4}", f"s{i:05d}", "bench", "CC0-1.0")
            cams = (np.tile(np.eye(3, dtype=np.float32), (views, 1, 1)), np.tile(np.eye(4, dtype=np.float32),
                                                                                 (views, 1, 1)))
            yield Sample(info, images, masks, *cams) if kind == "views" else Sample(info, images, masks)

    write_shards(gen(), folder, "bench", per_shard)
    return resolve_shards(folder)


def raw_tar_read(shards: list[str]) -> int:
    """Reference: read every member's bytes with tarfile (no decoding); returns the number of samples."""
    keys = set()
    for shard in shards:
        with tarfile.open(shard) as tar:
            for member in tar:
                tar.extractfile(member).read()  # type: ignore[union-attr]
                keys.add(member.name.split(".", 1)[0])
    return len(keys)


def _read_share(args: tuple[list[str], int, int]) -> int:
    shards, worker, workers = args
    return sum(1 for _ in iter_samples(shards, SkipCounter(0), worker=worker, num_workers=workers))


def read_with_processes(shards: list[str], workers: int) -> int:
    if workers == 1:
        return _read_share((shards, 0, 1))
    with mp.get_context("fork").Pool(workers) as pool:
        return sum(pool.map(_read_share, [(shards, w, workers) for w in range(workers)]))


def read_with_torch(shards: list[str], workers: int) -> int | None:
    try:
        import torch
        from torch.utils.data import DataLoader, IterableDataset, get_worker_info
    except ImportError:
        return None
    torch.set_num_threads(1)

    class Shards(IterableDataset):
        def __iter__(self):
            info = get_worker_info()
            w, n = (info.id, info.num_workers) if info else (0, 1)
            for s in iter_samples(shards, SkipCounter(0), worker=w, num_workers=n):
                yield torch.from_numpy(s.images[0])

    loader = DataLoader(Shards(), batch_size=None, num_workers=workers)
    return sum(1 for _ in loader)


def timed(fn, *args) -> tuple[float, int]:
    start = time.perf_counter()
    n = fn(*args)
    return time.perf_counter() - start, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=384)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--views", type=int, default=1, help="views per sample (1: image samples)")
    parser.add_argument("--per-shard", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shards = make_shards(Path(tmp), args.samples, args.size, args.views, args.per_shard)
        mb = sum(os.path.getsize(s) for s in shards) / 2**20
        raw_tar_read(shards)  # warm the page cache so every reader sees the same storage
        t_raw, n_raw = timed(raw_tar_read, shards)
        ref = n_raw / t_raw
        print(f"{len(shards)} shards, {args.samples} samples ({args.views} view(s) of {args.size} px), {mb:.1f} MiB; "
              f"{os.cpu_count()} CPU cores")
        print(f"{'reader':<28}{'samples/s':>12}{'MiB/s':>10}{'x raw tar':>11}")
        print(f"{'raw tar read (reference)':<28}{ref:>12.0f}{mb / t_raw:>10.1f}{1.0:>11.3f}")
        for workers in args.workers:
            t, n = timed(read_with_processes, shards, workers)
            assert n == args.samples, (n, args.samples)
            print(f"{f'iter_samples, {workers} process(es)':<28}{n / t:>12.0f}{mb / t:>10.1f}{n / t / ref:>11.3f}")
        for workers in [0, *args.workers]:
            t, n = timed(read_with_torch, shards, workers)
            if n is None:
                print("torch DataLoader: torch not installed")
                break
            assert n == args.samples, (n, args.samples)
            print(f"{f'torch DataLoader, {workers} workers':<28}{n / t:>12.0f}{mb / t:>10.1f}{n / t / ref:>11.3f}")


if __name__ == "__main__":
    main()
