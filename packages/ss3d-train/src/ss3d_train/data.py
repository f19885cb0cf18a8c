"""Shards to training batches: a torch ``IterableDataset`` over ``ss3d_data`` shards, split by rank and loader worker.

ss3d-data has no torch dependency, so the torch side lives here. Each reader slot (rank, worker) owns a fixed subset of
the shards for the whole run (``ss3d_data.shards.select_shards``); every epoch it shuffles its own shards and then
its samples through a buffer, seeded by (seed, epoch, rank, worker). Per-sample randomness (which view is the input)
is drawn from (seed, epoch, key), so it does not depend on how samples fall to workers. Together this makes the
batch sequence of an epoch a pure function of the seed and the epoch: a resumed run skips the batches already done
and sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ss3d_data.errors import Ss3dError
from ss3d_data.preprocess import crop_to_mask, resize_view
from ss3d_data.schema import Sample
from ss3d_data.shards import (
    SKIP_KINDS,
    SkipCounter,
    iter_samples,
    iter_tar_members,
    resolve_shards,
    select_shards,
    shard_index_entry,
    shard_prefix,
)
from ss3d_model.cameras import VIEW_DISTANCE

Transform = Callable[[Sample, np.random.Generator], dict[str, Any] | None]


def data_manifest_hash(shards: list[str]) -> str:
    """sha256 over the shard index files (when present) and every shard's name and size: names the data a run read."""
    digest = hashlib.sha256()
    for index in sorted({shard_prefix(s) + ".index.json" for s in shards}):
        if Path(index).is_file():
            digest.update(Path(index).name.encode() + b"\0" + Path(index).read_bytes())
    for shard in sorted(shards):
        digest.update(f"{Path(shard).name}:{Path(shard).stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def shard_record(shards: list[str]) -> dict[str, Any]:
    """What a run records of its shards in ``config.json`` (``--resume`` compares it): their file names and their
    :func:`data_manifest_hash` (index contents, names and sizes)."""
    return {"shards": sorted(Path(s).name for s in shards), "manifest_hash": data_manifest_hash(shards)}


def shard_keys(shard: str) -> list[str]:
    """Sample keys of one shard in file order, from its ``.meta.json`` member names (no image is decoded); a
    damaged stretch of the tar is passed over as the readers do."""
    try:
        return [member[0].split("/")[-1].split(".", 1)[0] for member in iter_tar_members(shard)
                if isinstance(member, tuple) and member[0].endswith(".meta.json")]
    except OSError as err:
        raise Ss3dError(f"{shard}: unreadable shard ({err})") from None


def index_categories(shards: list[str]) -> list[str]:
    """The categories named by the index entries of ``shards`` (sorted); empty when no index is found."""
    return sorted({name for s in shards for name in (shard_index_entry(s) or {}).get("categories", {})})


def sample_rng(seed: int, epoch: int, key: str) -> np.random.Generator:
    """Per-sample randomness, a function of (seed, epoch, key) only."""
    return np.random.default_rng([seed, epoch, zlib.crc32(key.encode())])


class ShardDataset(IterableDataset):
    """Transformed samples of this rank's shards; each DataLoader worker reads a disjoint subset of them.

    ``transform(sample, rng)`` returns a dict of arrays/tensors (one training example) or None to drop the sample.
    Corrupt samples are skipped and counted by kind (:data:`~ss3d_data.shards.SKIP_KINDS`) in ``bad_counts``, one
    row per loader worker in shared memory so the training process sees the workers' counts; the training loop
    (:func:`~ss3d_train.loop.epoch_batches`) enforces ``max_bad`` per epoch.
    """

    def __init__(self, shards: list[str], transform: Transform, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle_buffer: int = 64, max_bad: int = 10) -> None:
        self.shards = sorted(shards)
        if len(self.shards) < world_size:
            raise Ss3dError(f"{len(self.shards)} shard(s) cannot feed {world_size} ranks",
                            hint="write more, smaller shards (ss3d-data shard ... --per-shard N)")
        self.transform, self.seed = transform, seed
        self.rank, self.world_size = rank, world_size
        self.shuffle_buffer, self.max_bad = shuffle_buffer, max_bad
        self.epoch = 0
        self.bad_counts = torch.zeros(1, len(SKIP_KINDS), dtype=torch.int64).share_memory_()
        self.bad_total = torch.zeros(len(SKIP_KINDS), dtype=torch.int64)  # summed over finished epochs

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.bad_counts.zero_()

    def set_workers(self, workers: int) -> None:
        """One counting row per loader worker: each worker writes only its own row, so no count is lost to a race."""
        self.bad_counts = torch.zeros(max(workers, 1), len(SKIP_KINDS), dtype=torch.int64).share_memory_()

    def bad_this_epoch(self) -> torch.Tensor:
        """Skipped samples of the current epoch by kind, over all loader workers."""
        return self.bad_counts.sum(0)

    def reader_shards(self, worker: int = 0, num_workers: int = 1) -> list[str]:
        return select_shards(self.shards, self.rank, self.world_size, worker, num_workers)

    def rank_shards(self, num_workers: int = 1) -> list[str]:
        """Every shard this rank reads over all its loader workers."""
        return [s for w in range(num_workers) for s in self.reader_shards(w, num_workers)]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        mine = self.reader_shards(worker, num_workers)
        order_rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker, 7])
        mine = [mine[i] for i in order_rng.permutation(len(mine))]
        buffer: list[dict[str, Any]] = []
        # No limit here: the training loop compares the sum over all workers with max_bad (and raises on every rank
        # together); a worker raising on its own would print a multi-line worker traceback.
        skips = SkipCounter(max_bad=2**62)
        row = self.bad_counts[worker]

        def counted() -> Iterator[Any]:
            seen = 0
            for sample in iter_samples(mine, skips):
                if skips.skipped != seen:
                    row.copy_(torch.tensor([skips.kinds[k] for k in SKIP_KINDS]))
                    seen = skips.skipped
                yield sample
            row.copy_(torch.tensor([skips.kinds[k] for k in SKIP_KINDS]))

        for sample in counted():
            item = self.transform(sample, sample_rng(self.seed, self.epoch, sample.info.key))
            if item is None:
                continue
            buffer.append(item)
            if len(buffer) >= self.shuffle_buffer:
                yield buffer.pop(int(order_rng.integers(len(buffer))))
        while buffer:
            yield buffer.pop(int(order_rng.integers(len(buffer))))


def make_loader(dataset: ShardDataset, batch_size: int, workers: int) -> DataLoader:
    """Batches in a fixed order (workers are read round-robin); the last partial batch is dropped so every step sees
    a full batch."""
    dataset.set_workers(workers)
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, drop_last=True,
                      persistent_workers=False, pin_memory=False)


def shards_from(specs: list[str]) -> list[str]:
    return resolve_shards(specs)


# --------------------------------------------------------------------------------------------------- transforms

def _to_chw(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [3, H, W] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0


def jitter_colours(image: np.ndarray, foreground: np.ndarray, strength: float, rng: np.random.Generator
                   ) -> np.ndarray:
    """uint8 [H, W, 3] -> the same with per-channel gains in [1 - s, 1 + s] and one brightness offset in [-s/2, s/2]
    (of full scale) applied to the ``foreground`` [H, W] pixels; the background stays 0."""
    gains = 1.0 + rng.uniform(-strength, strength, 3)
    offset = 255.0 * rng.uniform(-strength / 2, strength / 2)
    jittered = np.clip(image.astype(np.float32) * gains + offset, 0, 255).astype(np.uint8)
    return np.where(foreground[..., None], jittered, 0).astype(np.uint8)


@dataclass(frozen=True)
class ViewsTransform:
    """``views`` sample -> one input view (cropped to the mask at ``input_size``) and ``supervision_views`` other views
    resized to ``supervision_size`` with their cameras (pretraining; also the synthetic half of distillation).

    Output: input [3, S, S]; rgb [K, s, s, 3] (background 0); mask [K, s, s]; intrinsics [K, 3, 3];
    cam2world [K, 4, 4]; input_intrinsics [3, 3]; input_cam2world [4, 4]; input_size_px (original side); with
    ``occupancy_points`` P > 0 also occupancy_points [P, 3] and occupancy_labels [P] drawn from the sample's
    occupancy grid (a ``near_fraction`` share around the surface).

    ``view_frame`` (pixel-aligned models) puts the whole sample in the input camera's view frame
    (:func:`view_frame`); ``input_crop`` [3] (the input crop's scale and offset) is always given.

    ``colour_jitter`` j > 0 augments the input view only (beyond the paper): each channel's gain is drawn from
    [1 - j, 1 + j] and a brightness offset from [-j/2, j/2] (of full scale), per sample; the supervising views keep
    their true colours. 0 draws nothing, so the sample's other random draws are unchanged.

    ``crop_jitter`` c > 0 varies the input view's scale (beyond the paper; geometry-preserving): the crop around the
    mask gets a margin drawn from [0, c] times the mask box's longer side on every side, so the object fills between
    1 / (1 + 2c) and all of the input. ``input_crop`` records that crop, so a pixel-aligned model's projection
    stays exact. 0 draws nothing.
    """

    input_size: int
    supervision_size: int
    supervision_views: int
    mask_threshold: float
    occupancy_points: int = 0
    near_fraction: float = 0.5
    colour_jitter: float = 0.0
    yaw_frame: bool = False
    view_frame: bool = False
    crop_jitter: float = 0.0

    def __call__(self, sample: Sample, rng: np.random.Generator) -> dict[str, Any] | None:
        if sample.info.kind != "views":
            raise Ss3dError(f"sample {sample.info.key} is an {sample.info.kind!r} sample; this stage reads 'views' "
                            "shards (synthetic renders with cameras)")
        v = sample.num_views
        if v < 2 and self.supervision_views > 0:
            raise Ss3dError(f"sample {sample.info.key} has one view; pretraining needs an input and other views")
        first = int(rng.integers(v))
        others = np.array([i for i in range(v) if i != first])
        chosen = rng.choice(others, self.supervision_views, replace=len(others) < self.supervision_views) \
            if self.supervision_views else np.zeros(0, dtype=int)
        margin = 0
        if self.crop_jitter > 0:
            foreground = sample.masks[first] >= round(self.mask_threshold * 255)
            rows, cols = foreground.any(axis=1).nonzero()[0], foreground.any(axis=0).nonzero()[0]
            side = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 if rows.size else 0
            margin = int(round(rng.uniform(0.0, self.crop_jitter) * side))
        crop = crop_to_mask(sample.images[first], sample.masks[first], self.input_size, self.mask_threshold,
                            margin_px=margin)
        image = jitter_colours(crop.image, crop.mask >= round(self.mask_threshold * 255), self.colour_jitter, rng) \
            if self.colour_jitter > 0 else crop.image
        rgbs, masks, ks = [], [], []
        for i in chosen:
            img, msk, k = resize_view(sample.images[i], sample.masks[i], sample.intrinsics[i], self.supervision_size)
            soft = msk.astype(np.float32) / 255.0
            # The renderer composites on black, so the colour target is the view times its (soft) mask.
            rgbs.append(img.astype(np.float32) / 255.0 * soft[..., None])
            masks.append(soft)
            ks.append(k)
        size = self.supervision_size
        # The whole sample's turn (about Z for the yaw frame) and scale (the view frame's).
        turn, scale = None, 1.0
        if self.yaw_frame:
            turn = input_yaw(sample.cam2world[first])
        elif self.view_frame:
            turn, scale = view_frame(sample.cam2world[first])
        extra: dict[str, Any] = {}
        if self.occupancy_points:
            if sample.occupancy is None:
                raise Ss3dError(f"sample {sample.info.key} carries no occupancy labels, which this preset's "
                                "occupancy_weight needs", hint="write the views shards with `ss3d-data shard folders "
                                "--manifest MESHES.jsonl` and a preset whose [data] occupancy_resolution is > 0")
            points, labels = sample.occupancy.sample(self.occupancy_points, self.near_fraction, rng)
            if turn is not None:
                points = (scale * points @ turn[:3, :3].T).astype(np.float32)
            extra = {"occupancy_points": torch.from_numpy(points), "occupancy_labels": torch.from_numpy(labels)}
        poses = sample.cam2world.astype(np.float32)
        if turn is not None:
            poses = turn @ sample.cam2world
            poses[:, :3, 3] *= scale
            poses = poses.astype(np.float32)
        return {**extra,
            "input": _to_chw(image),
            "rgb": torch.from_numpy(np.stack(rgbs)) if rgbs else torch.zeros(0, size, size, 3),
            "mask": torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, size, size),
            "intrinsics": torch.from_numpy(np.stack(ks)) if ks else torch.zeros(0, 3, 3),
            "cam2world": torch.from_numpy(poses[chosen]),
            "input_intrinsics": torch.from_numpy(sample.intrinsics[first].astype(np.float32)),
            "input_cam2world": torch.from_numpy(poses[first]),
            "input_side": sample.images.shape[1],
            "input_crop": torch.tensor([crop.scale, *crop.offset], dtype=torch.float32),
            "category": sample.info.category,
            "key": sample.info.key,
        }


def input_yaw(input_cam2world: np.ndarray) -> np.ndarray:
    """[4, 4] rotation about Z that turns the scene so the input camera sits at azimuth 0 (on -Y, as
    ``look_at``): shapes are then predicted in the input view's yaw frame, not the canonical one."""
    x, y = float(input_cam2world[0, 3]), float(input_cam2world[1, 3])
    azimuth = np.arctan2(x, -y)
    c, s = np.cos(-azimuth), np.sin(-azimuth)
    turn = np.eye(4)
    turn[:2, :2] = [[c, -s], [s, c]]
    return turn


def view_frame(input_cam2world: np.ndarray) -> tuple[np.ndarray, float]:
    """The input camera's view frame: ([4, 4] rotation about the origin, scale) that take the scene to where the
    camera, turned by the rotation and its position scaled, is ``look_at(0, 0, VIEW_DISTANCE)`` (level on -Y,
    looking at the origin). Scaling fixes the camera's distance, so that the same projection
    (:func:`ss3d_model.cameras.photo_projection`) serves every input; the object is scaled with the scene."""
    rotation = input_cam2world[:3, :3].astype(np.float64)
    position = input_cam2world[:3, 3].astype(np.float64)
    distance = float(np.linalg.norm(position))
    if distance <= 0:
        raise Ss3dError("an input camera at the origin has no view frame")
    # The view frame's camera axes (look_at(0, 0, d)): x = +X, y = -Z, z = +Y.
    target = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    turn = np.eye(4)
    turn[:3, :3] = target @ rotation.T
    return turn, VIEW_DISTANCE / distance


@dataclass(frozen=True)
class ImageTransform:
    """``image`` sample -> network input at ``input_size`` and supervision at ``supervision_size``, both cropped to the
    mask box (self-training; the collection half of distillation). ``index_of`` maps keys to camera rows.

    Output: input [3, S, S]; rgb [s, s, 3] (background 0); mask [s, s] in [0, 1]; index (camera row, -1 if none);
    input_crop [3] (the crops' scale and offset at ``input_size``, as :class:`ViewsTransform`'s); photo_size [2]
    (the image's width and height).
    """

    input_size: int
    supervision_size: int
    mask_threshold: float
    index_of: dict[str, int] | None = None
    categories: frozenset[str] | None = None

    def __call__(self, sample: Sample, rng: np.random.Generator) -> dict[str, Any] | None:
        if sample.info.kind != "image":
            raise Ss3dError(f"sample {sample.info.key} is a {sample.info.kind!r} sample; this stage reads 'image' "
                            "shards (image collections)")
        if self.categories is not None and sample.info.category not in self.categories:
            return None
        crop = crop_to_mask(sample.images[0], sample.masks[0], self.input_size, self.mask_threshold)
        sup = crop_to_mask(sample.images[0], sample.masks[0], self.supervision_size, self.mask_threshold)
        soft = sup.mask.astype(np.float32) / 255.0
        index = -1 if self.index_of is None else self.index_of.get(sample.info.key, -1)
        return {
            "input": _to_chw(crop.image),
            "rgb": torch.from_numpy(sup.image.astype(np.float32) / 255.0 * soft[..., None]),
            "mask": torch.from_numpy(soft),
            "index": index,
            "input_crop": torch.tensor([crop.scale, *crop.offset], dtype=torch.float32),
            "photo_size": torch.tensor([sample.images.shape[2], sample.images.shape[1]]),
            "category": sample.info.category,
            "key": sample.info.key,
        }
