"""Where predicted meshes come from: a folder of mesh files named by sample key, or a checkpoint.

Both give a :class:`Predictor`: ``predict(item)`` returns the predicted :class:`Shape` in the canonical frame, or
raises :class:`~ss3d_data.errors.EmptySurface` (no surface: IoU 0, Chamfer undefined) or another
:class:`Ss3dError`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ss3d_data.errors import EmptySurface, Ss3dError
from ss3d_data.schema import SampleInfo
from ss3d_data.shards import SkipCounter, iter_samples, resolve_shards
from ss3d_eval.shapes import MESH_SUFFIXES, Shape, load_shape, make_shape


@dataclass(frozen=True)
class TestItem:
    """One test input: ``image`` [H, W, 3] uint8 and ``mask`` [H, W] uint8 of the evaluated view."""

    info: SampleInfo
    image: np.ndarray
    mask: np.ndarray

    @property
    def key(self) -> str:
        return self.info.key


def iter_test_items(shards: str | list[str], view: int = 0, max_bad: int = 10,
                    skips: SkipCounter | None = None) -> Iterator[TestItem]:
    """The test samples of ``shards`` (``image`` or ``views`` kind), one item each, showing view ``view``.
    Unreadable samples are counted in ``skips`` (a fresh counter of ``max_bad`` if not given) with their reasons."""
    skips = skips if skips is not None else SkipCounter(max_bad)
    for sample in iter_samples(resolve_shards(shards), skips):
        if view >= sample.num_views:
            raise Ss3dError(f"sample {sample.info.key} has {sample.num_views} views; cannot evaluate view {view}")
        yield TestItem(sample.info, sample.images[view], sample.masks[view])


@dataclass
class Predictor:
    """Base: a named source of predicted meshes. ``seen_categories`` is None when unknown."""

    label: str
    source: str
    seen_categories: frozenset[str] | None = None
    fingerprint: str = ""  # changes when the source changes (a re-trained checkpoint), so old rows are not reused

    def predict(self, item: TestItem) -> Shape:  # pragma: no cover - overridden
        raise NotImplementedError

    def seen(self, category: str) -> bool | None:
        return None if self.seen_categories is None else category in self.seen_categories


@dataclass
class MeshDirPredictor(Predictor):
    """Predictions stored as ``<folder>/<key>.<ply|obj|off|glb|gltf|stl>``."""

    folder: Path = field(default_factory=Path)

    def __post_init__(self) -> None:
        if not self.folder.is_dir():
            raise Ss3dError(f"{self.folder}: no such prediction folder")

    def mesh_path(self, key: str) -> Path:
        for suffix in MESH_SUFFIXES:
            path = self.folder / f"{key}{suffix}"
            if path.is_file():
                return path
        raise Ss3dError(f"no predicted mesh for sample {key} in {self.folder} (expected {key}.ply, .obj, ...)")

    def predict(self, item: TestItem) -> Shape:
        path = self.mesh_path(item.key)
        return load_shape(path)


@dataclass
class CheckpointPredictor(Predictor):
    """Predictions by a checkpoint, meshed by ``ss3d_model.reconstruct_mesh`` (the view preprocessed as in
    training, or with the input crop the checkpoint records, encoded, marching cubes) with ``preset``'s
    ``[extract]`` settings, or (``preset`` None) those the checkpoint records. Loaded on construction, as
    ``ss3d-model reconstruct`` loads it (tensors checked against the recorded architecture): a checkpoint that
    cannot be used fails with one line before any sample is scored, not as a failed row per sample. Its metadata's
    ``categories`` say which categories it has seen."""

    checkpoint: Path = field(default_factory=Path)
    preset: str | None = None

    def __post_init__(self) -> None:
        from ss3d_model import load_network
        from ss3d_model.reconstruct import inference_settings, input_settings

        self._network, meta = load_network(self.checkpoint)
        self._extract, self._mask_threshold = inference_settings(meta, self.preset)
        self._crop = input_settings(meta)  # the weights' own input crop: presets never change it
        stat = self.checkpoint.stat()
        self.seen_categories = frozenset(meta.categories)
        self.fingerprint = f"{stat.st_size}:{stat.st_mtime_ns}:{meta.stage}:{meta.step}"

    def predict(self, item: TestItem) -> Shape:
        from ss3d_model.reconstruct import reconstruct_mesh

        mesh = reconstruct_mesh(self._network, item.image, item.mask, self._extract, self._mask_threshold,
                                crop=self._crop)
        return make_shape(mesh.vertices, mesh.faces, f"{self.label}:{item.key}")


def ellipsoid_from_mask(mask: np.ndarray, threshold: float = 0.5, subdivisions: int = 3) -> Shape:
    """The floor every method must beat: a closed ellipsoid fitted to the input mask alone.

    The two image-plane semi-axes come from the second moments of the foreground pixels (a uniform ellipse of
    semi-axis a has variance a^2 / 4 along it, so a = 2 sqrt(eigenvalue)); the depth semi-axis is the shorter of
    the two. Camera frame: x right, y up, z towards the viewer, in units of the longer semi-axis. The evaluation's
    similarity alignment then places it, exactly as it places every method's prediction.
    """
    import trimesh

    ys, xs = np.nonzero(np.asarray(mask) >= round(threshold * 255))
    if len(xs) < 3:
        raise EmptySurface("the input mask has fewer than 3 foreground pixels: no ellipsoid to fit")
    coords = np.stack([xs, -ys], axis=1).astype(np.float64)  # image y points down; the camera frame's y up
    values, vectors = np.linalg.eigh(np.cov(coords, rowvar=False))
    semi = 2.0 * np.sqrt(np.clip(values, 0.25, None))       # >= half a pixel: a one-pixel-wide mask stays a solid
    semi = semi / semi.max()
    axes = np.eye(3)
    axes[:2, :2] = vectors                                   # columns: image-plane axes (shorter first)
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions)
    vertices = (sphere.vertices * np.array([semi[0], semi[1], semi[0]])) @ axes.T
    return make_shape(vertices, sphere.faces, "ellipsoid")


@dataclass
class EllipsoidPredictor(Predictor):
    """The mask-ellipsoid floor (:func:`ellipsoid_from_mask`) as a method: it has seen no category."""

    mask_threshold: float = 0.5

    def predict(self, item: TestItem) -> Shape:
        return ellipsoid_from_mask(item.mask, self.mask_threshold)


ELLIPSOID_LABEL = "ellipsoid"


def ellipsoid_predictor(preset: str) -> EllipsoidPredictor:
    """The floor under the label ``ellipsoid``, thresholding masks as the preset's models do."""
    from ss3d_data.config import data_config

    threshold = data_config(preset).mask_threshold
    return EllipsoidPredictor(label=ELLIPSOID_LABEL, source="mask-ellipsoid", fingerprint="ellipsoid-v1",
                              mask_threshold=threshold)


def checkpoint_predictor(path: str | os.PathLike[str], label: str, preset: str | None = None) -> CheckpointPredictor:
    """A predictor for checkpoint ``path``, meshed with ``preset``'s ``[extract]`` settings, or (None) with those the
    checkpoint was trained with."""
    return CheckpointPredictor(label=label, source=str(path), checkpoint=Path(path), preset=preset)


def mesh_dir_predictor(folder: str | os.PathLike[str], label: str,
                       seen_categories: list[str] | None = None) -> MeshDirPredictor:
    """A predictor reading ``folder/<key>.<mesh suffix>``; ``seen_categories`` optional (zero-shot split)."""
    seen = frozenset(seen_categories) if seen_categories is not None else None
    return MeshDirPredictor(label=label, source=str(folder), seen_categories=seen, folder=Path(folder))


def make_predictors(checkpoints: list[str], pred_dirs: list[str], labels: list[str], preset: str,
                    seen_categories: list[str] | None = None, ellipsoid: bool = False,
                    extract_preset: str | None = None) -> list[Predictor]:
    """One predictor per checkpoint (meshed with ``extract_preset``'s ``[extract]`` settings, or with those each
    checkpoint records when None), then per prediction folder, named by ``labels`` in that order (default: the
    file's stem or the folder's name), then the mask-ellipsoid floor when ``ellipsoid`` (masks thresholded as
    ``preset`` says). Label count and uniqueness are checked."""
    from ss3d_data.schema import make_key

    sources = [("checkpoint", c) for c in checkpoints] + [("dir", d) for d in pred_dirs]
    if not sources and not ellipsoid:
        raise Ss3dError("nothing to evaluate: give --checkpoint, --pred-dir or --ellipsoid")
    if labels and len(labels) != len(sources):
        raise Ss3dError(f"{len(labels)} --label values for {len(sources)} checkpoints and prediction folders",
                        hint="give one --label per --checkpoint / --pred-dir, in the same order, or none")
    names = labels or [make_key(Path(p).name.removesuffix(".safetensors")) for _, p in sources]
    if len(set(names + [ELLIPSOID_LABEL] * ellipsoid)) != len(names) + ellipsoid:
        raise Ss3dError(f"labels must differ, got {names}", hint="name each method with --label")
    out: list[Predictor] = []
    for (kind, path), name in zip(sources, names):
        if kind == "checkpoint":
            out.append(checkpoint_predictor(path, name, extract_preset))
        else:
            out.append(mesh_dir_predictor(path, name, seen_categories))
    if ellipsoid:
        out.append(ellipsoid_predictor(preset))
    return out
