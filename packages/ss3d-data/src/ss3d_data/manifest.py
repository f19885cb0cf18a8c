"""The mesh manifest (format ``ss3d-mesh-manifest``, version 1): one JSON object per line, one line per mesh.

Each record says where a mesh file is, what it is (category, source, licence), which split its instance belongs to,
and ``to_canonical``: the 4x4 matrix taking the file's coordinates into the canonical frame (X right, Z up,
bounding box centred at the origin, longest side 1). Renderers and evaluators apply that matrix; nobody rewrites
the source files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ss3d_data.atomic import atomic_write_text
from ss3d_data.errors import Ss3dError
from ss3d_data.schema import SPLITS, make_key

MANIFEST_FORMAT = "ss3d-mesh-manifest"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class MeshRecord:
    instance_id: str            # unique, a valid sample key ([A-Za-z0-9_-]+)
    category: str
    source: str                 # e.g. "sweethome3d-furniture", "libcgal-demo", "procedural", "folder"
    licence: str                # SPDX-like id, e.g. "CC0-1.0", "CC-BY-3.0", "GPL-3.0-or-later"
    attribution: str            # author / origin text required by the licence ("" if none)
    path: str                   # mesh file, absolute or relative to the manifest's folder
    faces: int
    textured: bool
    split: str                  # "train" | "val" | "test"
    to_canonical: tuple[tuple[float, ...], ...]  # 4x4, row-major

    def validate(self) -> None:
        if make_key(self.instance_id) != self.instance_id:
            raise Ss3dError(f"manifest: instance_id {self.instance_id!r} is not a valid key")
        if self.split not in SPLITS:
            raise Ss3dError(f"manifest: {self.instance_id}: split {self.split!r} not in {SPLITS}")
        m = np.asarray(self.to_canonical, dtype=np.float64)
        if m.shape != (4, 4) or not np.isfinite(m).all():
            raise Ss3dError(f"manifest: {self.instance_id}: to_canonical must be a finite 4x4 matrix")
        if self.faces < 1:
            raise Ss3dError(f"manifest: {self.instance_id}: a mesh needs at least one face")

    def matrix(self) -> np.ndarray:
        """``to_canonical`` as a float64 [4, 4] array."""
        return np.asarray(self.to_canonical, dtype=np.float64)

    def resolve(self, manifest_path: str | os.PathLike[str]) -> Path:
        """The mesh file's path, resolving a relative ``path`` against the manifest's folder."""
        p = Path(self.path)
        return p if p.is_absolute() else Path(manifest_path).parent / p


def write_manifest(path: str | os.PathLike[str], records: Iterable[MeshRecord]) -> None:
    """Write records as JSON lines (atomically), sorted by instance id; duplicate ids are an error."""
    rows = sorted(records, key=lambda r: r.instance_id)
    seen: set[str] = set()
    lines = []
    for r in rows:
        r.validate()
        if r.instance_id in seen:
            raise Ss3dError(f"manifest: duplicate instance_id {r.instance_id!r}")
        seen.add(r.instance_id)
        record = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, **asdict(r)}
        lines.append(json.dumps(record, sort_keys=True))
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def read_manifest(path: str | os.PathLike[str]) -> list[MeshRecord]:
    """Read and validate a manifest; errors name the file and line."""
    p = Path(path)
    if not p.is_file():
        raise Ss3dError(f"{p}: no such manifest", hint="build one with `ss3d-data meshes ...`")
    records = []
    for number, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except ValueError as err:
            raise Ss3dError(f"{p}:{number}: not JSON ({err})") from None
        if raw.get("format") != MANIFEST_FORMAT or raw.get("version") != MANIFEST_VERSION:
            raise Ss3dError(f"{p}:{number}: not an {MANIFEST_FORMAT} v{MANIFEST_VERSION} record")
        try:
            record = MeshRecord(**{k: v for k, v in raw.items() if k not in ("format", "version")})
        except TypeError as err:
            raise Ss3dError(f"{p}:{number}: bad record ({err})") from None
        record = MeshRecord(**{**asdict(record), "to_canonical": tuple(tuple(row) for row in record.to_canonical)})
        record.validate()
        records.append(record)
    return records


def canonical_matrix(bounds_min: np.ndarray, bounds_max: np.ndarray, up_axis: str = "z") -> np.ndarray:
    """The 4x4 matrix that rotates a mesh whose up axis is ``up_axis`` ("y" or "z") to Z-up, then centres its
    bounding box at the origin and scales its longest side to 1. Bounds are in the file's coordinates."""
    if up_axis == "z":
        rot = np.eye(4)
    elif up_axis == "y":  # Y-up, -Z forward (OBJ / glTF convention) -> Z-up: (x, y, z) -> (x, -z, y)
        rot = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
    else:
        raise Ss3dError(f"up axis must be 'y' or 'z', got {up_axis!r}")
    corners = np.array([[x, y, z, 1.0] for x in (bounds_min[0], bounds_max[0]) for y in (bounds_min[1], bounds_max[1])
                        for z in (bounds_min[2], bounds_max[2])])
    rotated = corners @ rot.T
    lo, hi = rotated[:, :3].min(0), rotated[:, :3].max(0)
    extent = float((hi - lo).max())
    if not np.isfinite(extent) or extent <= 0:
        raise Ss3dError("mesh has an empty or degenerate bounding box")
    scale = np.diag([1 / extent, 1 / extent, 1 / extent, 1.0])
    shift = np.eye(4)
    shift[:3, 3] = -(lo + hi) / 2
    return scale @ shift @ rot


def select_records(
    records: Iterable[MeshRecord],
    categories: Iterable[str] | None = None,
    per_category: dict[str, int] | None = None,
    allow_missing: bool = False,
    exclude: Iterable[str] = (),
) -> list[MeshRecord]:
    """A deterministic subset: only ``categories`` (all when None) minus ``exclude``, and at most
    ``per_category[split]`` instances of each category per split (no cap for a split not named). Instances are
    taken in instance-id order, so the same manifest always gives the same subset, and a larger cap gives a
    superset."""
    wanted = set(categories) if categories is not None else None
    excluded = set(exclude)
    if wanted is not None and wanted & excluded:
        raise Ss3dError(f"categories both kept and excluded: {', '.join(sorted(wanted & excluded))}")
    records = [r for r in records if r.category not in excluded]
    taken: dict[tuple[str, str], int] = {}
    chosen = []
    for record in sorted(records, key=lambda r: r.instance_id):
        if wanted is not None and record.category not in wanted:
            continue
        slot = (record.category, record.split)
        cap = (per_category or {}).get(record.split)
        if cap is not None and taken.get(slot, 0) >= cap:
            continue
        taken[slot] = taken.get(slot, 0) + 1
        chosen.append(record)
    if wanted is not None and not allow_missing:
        missing = sorted(wanted - {r.category for r in chosen})
        if missing:
            raise Ss3dError(f"manifest has no instances of: {', '.join(missing)}")
    return chosen
