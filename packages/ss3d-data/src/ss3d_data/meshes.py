"""Mesh manifests from mesh sources: scan a source into candidates, inspect each mesh, normalise, split.

A *candidate* (:class:`MeshCandidate`) is one mesh file found by a source scanner, with its category, licence and
up axis. :func:`build_manifest` loads every candidate with trimesh, skips bad meshes (unreadable, empty, zero
area, absurd size) with a reason, computes ``to_canonical`` (rotation to Z-up, centring, unit longest side), assigns
a deterministic split from a hash of the instance id, and writes the manifest plus a JSON report beside it
(``<manifest>.report.json``: counts per category and every skipped mesh with its reason).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ss3d_data.atomic import atomic_write_text
from ss3d_data.config import DataConfig
from ss3d_data.errors import Ss3dError
from ss3d_data.manifest import MeshRecord, canonical_matrix, write_manifest
from ss3d_data.schema import SPLITS

MESH_SUFFIXES = (".obj", ".glb", ".gltf", ".ply", ".off", ".stl")

# Irregular plurals and words that end in "s" but are singular; everything else loses a plural "s"/"es"/"ies".
_SINGULAR = {"people": "person", "men": "man", "women": "woman", "children": "child", "mice": "mouse",
             "geese": "goose", "knives": "knife", "shelves": "shelf", "leaves": "leaf", "feet": "foot",
             "teeth": "tooth", "glasses": "glasses", "scissors": "scissors", "headphones": "headphones",
             "sunglasses": "sunglasses", "bus": "bus", "cactus": "cactus", "octopus": "octopus",
             "asparagus": "asparagus",
             "hibiscus": "hibiscus", "chassis": "chassis", "series": "series", "species": "species", "tulips": "tulip",
             "toilets": "toilet", "clothes": "clothes", "dress": "dress", "glass": "glass", "torus": "torus",
             "canvas": "canvas", "triceratops": "triceratops", "compass": "compass", "boxes": "box",
             "benches": "bench", "couches": "couch",
             "dishes": "dish", "brushes": "brush", "watches": "watch"}


def normalise_category(name: str) -> str:
    """A category label from free text: lower case, words joined by ``_``, last word singular ("Chairs" -> "chair",
    "Coffee Cups" -> "coffee_cup", "ChineseDragon" -> "chinese_dragon")."""
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", str(name)).lower()
    words = re.findall(r"[a-z]+", text)
    if not words:
        raise Ss3dError(f"cannot make a category name from {name!r}")
    words[-1] = singular(words[-1])
    return "_".join(words)


def singular(word: str) -> str:
    """English singular of one lower-case word (good enough for object category names)."""
    if word in _SINGULAR:
        return _SINGULAR[word]
    for plural, single in _SINGULAR.items():  # compounds: "bookshelves" -> "bookshelf"
        if len(plural) >= 5 and word.endswith(plural) and plural != single:
            return word[: -len(plural)] + single
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def assign_split(instance_id: str, fractions: Sequence[float] = (0.8, 0.1, 0.1), salt: str = "ss3d") -> str:
    """Deterministic instance-level split: the SHA-256 of ``salt/instance_id`` as a number u in [0, 1), compared
    with the cumulative ``fractions`` (train, val, test). Independent of the other instances and of run order."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise Ss3dError(f"split fractions must be three non-negative numbers summing to 1, got {list(fractions)}")
    digest = hashlib.sha256(f"{salt}/{instance_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    edges = np.cumsum(fractions)
    for split, edge in zip(SPLITS, edges):
        if u < edge:
            return split
    return SPLITS[-1]


@dataclass(frozen=True)
class MeshCandidate:
    """One mesh file found by a source scanner."""

    path: Path
    instance_id: str
    category: str
    source: str
    licence: str
    attribution: str = ""
    up_axis: str = "y"


@dataclass
class InspectedMesh:
    faces: int
    textured: bool
    bounds: np.ndarray  # [2, 3]: min and max corner in file coordinates


@dataclass
class BuildReport:
    manifest: str
    records: int = 0
    categories: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True) + "\n"


def _obj_textured(path: Path) -> bool:
    """An OBJ is textured when one of its MTL files names an existing diffuse texture map."""
    folder = path.parent
    with open(path, encoding="utf-8", errors="replace") as handle:
        libs = [line.split(None, 1)[1].strip() for line in handle if line.startswith("mtllib") and " " in line]
    for lib in libs:
        mtl = folder / lib
        if not mtl.is_file():
            continue
        for line in mtl.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.strip().split()
            if parts and parts[0].lower() == "map_kd" and len(parts) > 1 and (folder / parts[-1]).is_file():
                return True
    return False


def read_off_polygons(path: Path):
    """An OFF file with mixed polygon sizes, comments or colours (which trimesh's OFF reader refuses), read line
    by line with polygons fan-triangulated. Returns a ``trimesh.Trimesh``."""
    import trimesh

    lines = [line.split("#", 1)[0].split() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    lines = [line for line in lines if line]
    if not lines or not lines[0][0].endswith("OFF"):
        raise ValueError("no OFF header")
    header = lines[0][1:] or lines[1]
    body = lines[1:] if lines[0][1:] else lines[2:]
    n_vertices, n_faces = int(header[0]), int(header[1])
    vertices = np.asarray([row[:3] for row in body[:n_vertices]], dtype=np.float64).reshape(n_vertices, 3)
    triangles = []
    for row in body[n_vertices:n_vertices + n_faces]:
        ring = [int(t) for t in row[1:1 + int(row[0])]]  # anything after the ring is a face colour
        triangles += [(ring[0], ring[k], ring[k + 1]) for k in range(1, len(ring) - 1)]
    return trimesh.Trimesh(vertices, np.asarray(triangles, dtype=np.int64).reshape(-1, 3), process=False)


def load_geometry(path: str | os.PathLike[str]):
    """(all parts of a mesh file as one ``trimesh.Trimesh``, the loaded scene or None). Materials of OBJ files are
    skipped: only geometry matters to the callers. Raises :class:`Ss3dError` for unreadable files."""
    import trimesh  # heavy import, only where meshes are read

    p = Path(path)
    loaded = None
    try:
        loaded = trimesh.load(p, force="scene", skip_materials=p.suffix.lower() == ".obj", process=False)
        mesh = loaded.to_geometry() if hasattr(loaded, "to_geometry") else loaded.dump(concatenate=True)
    except Exception as err:  # trimesh raises many types on bad files
        try:
            if p.suffix.lower() != ".off":
                raise
            mesh = read_off_polygons(p)
        except Exception:
            raise Ss3dError(f"unreadable ({type(err).__name__}: {err})".splitlines()[0]) from None
    return mesh, loaded


def inspect_mesh(path: str | os.PathLike[str]) -> InspectedMesh:
    """Load a mesh with trimesh (materials skipped: only geometry matters here) and check it is usable.
    Raises :class:`Ss3dError` with the reason for unreadable, empty, zero-area or absurd meshes."""
    import trimesh

    p = Path(path)
    mesh, loaded = load_geometry(p)
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0 or len(mesh.vertices) == 0:
        raise Ss3dError("empty (no triangles)")
    if not np.isfinite(mesh.vertices).all():
        raise Ss3dError("non-finite vertex coordinates")
    area = float(mesh.area)
    if not np.isfinite(area) or area <= 0:
        raise Ss3dError("zero surface area")
    if p.suffix.lower() == ".obj":
        textured = _obj_textured(p)
    else:  # any part with a texture image counts (concatenating parts may drop a lone part's texture)
        parts = list(loaded.geometry.values()) if hasattr(loaded, "geometry") else [mesh]
        textured = any(getattr(getattr(g.visual, "material", None), "image", None) is not None
                       or getattr(getattr(g.visual, "material", None), "baseColorTexture", None) is not None
                       for g in parts if getattr(g.visual, "kind", None) == "texture")
    return InspectedMesh(int(len(mesh.faces)), bool(textured), np.asarray(mesh.bounds, dtype=np.float64))


def _manifest_path_of(mesh: Path, manifest: Path) -> str:
    """Relative to the manifest's folder when the mesh lies below it (portable folders), else absolute."""
    mesh_abs, base = mesh.resolve(), manifest.parent.resolve()
    try:
        return str(mesh_abs.relative_to(base))
    except ValueError:
        return str(mesh_abs)


def candidate_record(candidate: MeshCandidate, manifest: Path, config: DataConfig) -> MeshRecord:
    """Inspect one candidate and turn it into a manifest record; :class:`Ss3dError` says why it is unusable."""
    info = inspect_mesh(candidate.path)
    if info.faces > config.max_mesh_faces:
        raise Ss3dError(f"absurd size: {info.faces} faces (limit {config.max_mesh_faces})")
    extent = float((info.bounds[1] - info.bounds[0]).max())
    lo, hi = config.mesh_extent_range
    if not lo <= extent <= hi:
        raise Ss3dError(f"absurd size: longest side {extent:.3g} outside [{lo:g}, {hi:g}]")
    matrix = canonical_matrix(info.bounds[0], info.bounds[1], candidate.up_axis)
    return MeshRecord(
        instance_id=candidate.instance_id,
        category=candidate.category,
        source=candidate.source,
        licence=candidate.licence,
        attribution=candidate.attribution,
        path=_manifest_path_of(candidate.path, manifest),
        faces=info.faces,
        textured=info.textured,
        split=assign_split(candidate.instance_id, config.split_fractions, config.split_salt),
        to_canonical=tuple(tuple(float(x) for x in row) for row in matrix),
    )


def build_manifest(candidates: Iterable[MeshCandidate], out: str | os.PathLike[str], config: DataConfig | None = None,
                   on_progress=None) -> BuildReport:
    """Inspect every candidate, write the manifest ``out`` and the report ``<out>.report.json``; bad meshes are
    skipped with a reason, never fatal. ``on_progress(done, total, instance_id)`` is called after each mesh."""
    config = config or DataConfig()
    out_path = Path(out)
    items = list(candidates)
    ids = Counter(c.instance_id for c in items)
    dupes = sorted(i for i, n in ids.items() if n > 1)
    if dupes:
        raise Ss3dError(f"duplicate instance ids across sources: {', '.join(dupes[:5])}")
    records: list[MeshRecord] = []
    report = BuildReport(manifest=str(out_path))
    for done, candidate in enumerate(items, start=1):
        try:
            records.append(candidate_record(candidate, out_path, config))
        except Ss3dError as err:
            report.skipped.append({"instance_id": candidate.instance_id, "path": str(candidate.path),
                                   "reason": str(err)})
        if on_progress is not None:
            on_progress(done, len(items), candidate.instance_id)
    write_manifest(out_path, records)
    report.records = len(records)
    report.categories = dict(sorted(Counter(r.category for r in records).items()))
    report.splits = dict(sorted(Counter(r.split for r in records).items()))
    report.sources = dict(sorted(Counter(r.source for r in records).items()))
    atomic_write_text(report_path(out_path), report.to_json())
    return report


def report_path(manifest: str | os.PathLike[str]) -> Path:
    p = Path(manifest)
    return p.with_name(p.name.removesuffix(".jsonl") + ".report.json")

