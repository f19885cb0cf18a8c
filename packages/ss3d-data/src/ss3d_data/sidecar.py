"""The camera sidecar (format ``ss3d-cameras``, version 1): the true cameras of a rendered image collection.

Image samples (``kind = "image"``) never carry cameras, since self-training must not see them; evaluation may still
want them. They live beside the collection as JSON lines, one image per line, sorted by key::

    {"format": "ss3d-cameras", "version": 1, "key": "<sample key>",
     "intrinsics": [[...], [...], [...]], "cam2world": [[...], [...], [...], [...]]}

``intrinsics`` is K (3x3, pixels), ``cam2world`` the 4x4 camera-to-canonical-frame matrix, with the camera and pixel
conventions of the shard contract (OpenCV axes, pixel centres at integer + 0.5). Lines without ``format`` and
``version`` are read as version 1 (the renderer's per-image lines); any other tag or version is refused.
Normative text: ``docs/formats.md``. Renderers write ``<collection>/cameras.jsonl``; ``ss3d-data shard`` copies it
to ``<prefix>.cameras.jsonl`` beside the shards.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from ss3d_data.atomic import atomic_write_text
from ss3d_data.errors import Ss3dError
from ss3d_data.schema import make_key

CAMERAS_FORMAT = "ss3d-cameras"
CAMERAS_VERSION = 1

Camera = tuple[np.ndarray, np.ndarray]  # (intrinsics [3, 3] float64, cam2world [4, 4] float64)


def _check_camera(key: str, intrinsics: object, cam2world: object, where: str) -> Camera:
    try:
        k = np.asarray(intrinsics, dtype=np.float64)
        c2w = np.asarray(cam2world, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise Ss3dError(f"{where}: camera of {key!r} is not numeric ({err})") from None
    if k.shape != (3, 3) or c2w.shape != (4, 4):
        raise Ss3dError(f"{where}: camera of {key!r} must be intrinsics [3, 3] and cam2world [4, 4], "
                        f"got {k.shape} and {c2w.shape}")
    if not (np.isfinite(k).all() and np.isfinite(c2w).all()):
        raise Ss3dError(f"{where}: camera of {key!r} has non-finite values")
    if not np.allclose(c2w[3], [0, 0, 0, 1], atol=1e-5):
        raise Ss3dError(f"{where}: cam2world of {key!r} must end with the row [0, 0, 0, 1]")
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        raise Ss3dError(f"{where}: intrinsics of {key!r} need positive focal lengths")
    return k, c2w


def camera_line(key: str, intrinsics: np.ndarray, cam2world: np.ndarray) -> str:
    """One sidecar line (no newline) for image ``key``; validates the camera first."""
    if make_key(key) != key:
        raise Ss3dError(f"camera sidecar: {key!r} is not a valid sample key")
    k, c2w = _check_camera(key, intrinsics, cam2world, "camera sidecar")
    record = {"format": CAMERAS_FORMAT, "version": CAMERAS_VERSION, "key": key, "intrinsics": k.tolist(),
              "cam2world": c2w.tolist()}
    return json.dumps(record, sort_keys=True)


def write_cameras(path: str | os.PathLike[str],
                  rows: Iterable[tuple[str, np.ndarray, np.ndarray]] | Mapping[str, Camera]) -> Path:
    """Write a sidecar atomically, sorted by key. ``rows``: (key, intrinsics [3, 3], cam2world [4, 4]) triples or
    a mapping key -> (intrinsics, cam2world) as :func:`read_cameras` returns. Duplicate keys are an error."""
    triples = [(k, *cam) for k, cam in rows.items()] if isinstance(rows, Mapping) else list(rows)
    seen: set[str] = set()
    lines = []
    for key, intrinsics, cam2world in sorted(triples, key=lambda t: t[0]):
        if key in seen:
            raise Ss3dError(f"camera sidecar: duplicate key {key!r}")
        seen.add(key)
        lines.append(camera_line(key, intrinsics, cam2world))
    target = Path(path)
    atomic_write_text(target, "".join(line + "\n" for line in lines))
    return target


def read_cameras(path: str | os.PathLike[str]) -> dict[str, Camera]:
    """Read and validate a sidecar: key -> (intrinsics [3, 3], cam2world [4, 4]) float64. Errors name file and line."""
    p = Path(path)
    if not p.is_file():
        raise Ss3dError(f"{p}: no such camera sidecar")
    cameras: dict[str, Camera] = {}
    for number, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{p}:{number}"
        try:
            raw = json.loads(line)
        except ValueError as err:
            raise Ss3dError(f"{where}: not JSON ({err})") from None
        if not isinstance(raw, dict):
            raise Ss3dError(f"{where}: not a JSON object")
        if (raw.get("format", CAMERAS_FORMAT) != CAMERAS_FORMAT
                or raw.get("version", CAMERAS_VERSION) != CAMERAS_VERSION):
            raise Ss3dError(f"{where}: not an {CAMERAS_FORMAT} v{CAMERAS_VERSION} record")
        key = raw.get("key")
        if not isinstance(key, str) or not key or make_key(key) != key:
            raise Ss3dError(f"{where}: missing or invalid key {key!r}")
        if key in cameras:
            raise Ss3dError(f"{where}: duplicate key {key!r}")
        if "intrinsics" not in raw or "cam2world" not in raw:
            raise Ss3dError(f"{where}: {key!r} needs intrinsics and cam2world")
        cameras[key] = _check_camera(key, raw["intrinsics"], raw["cam2world"], where)
    return cameras
