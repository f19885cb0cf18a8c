"""Small procedural meshes in every supported format, written to temporary folders, plus manifests for them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from ss3d_data.manifest import MeshRecord, canonical_matrix, write_manifest

# Where the test sphere lands in the canonical frame: off-centre, so any axis flip moves its silhouette.
SPHERE_CENTER = np.array([0.15, -0.1, 0.05])
SPHERE_RADIUS = 0.45
TEXTURE_RGB = (200, 40, 40)   # the PNG texture of the box (red) ...
MTL_KD = (0.0, 1.0, 0.0)      # ... while its MTL diffuse colour says green: the render must show red
VERTEX_RGB = (30, 60, 220)    # PLY vertex colours (blue)


def record(instance_id: str, path: Path, mesh: trimesh.Trimesh, matrix: np.ndarray, category: str = "thing",
           textured: bool = False) -> MeshRecord:
    return MeshRecord(
        instance_id=instance_id, category=category, source="procedural", licence="CC0-1.0", attribution="tests",
        path=path.name, faces=len(mesh.faces), textured=textured, split="train",
        to_canonical=tuple(tuple(float(x) for x in row) for row in matrix),
    )


def sphere_file(folder: Path) -> tuple[Path, trimesh.Trimesh, np.ndarray]:
    """An icosphere in a Y-up OBJ file (centre (1, 2, 3), radius 2) and the matrix that puts it at
    SPHERE_CENTER with radius SPHERE_RADIUS in the canonical frame."""
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=2.0)
    mesh.apply_translation([1.0, 2.0, 3.0])
    path = folder / "sphere.obj"
    mesh.export(path)
    place = np.eye(4)
    place[:3, :3] *= SPHERE_RADIUS / 0.5
    place[:3, 3] = SPHERE_CENTER
    return path, mesh, place @ canonical_matrix(mesh.bounds[0], mesh.bounds[1], up_axis="y")


def textured_box_file(folder: Path) -> tuple[Path, trimesh.Trimesh, np.ndarray]:
    """A box as OBJ + MTL + PNG texture, written by hand (Y-up, extents 2 x 1 x 3)."""
    mesh = trimesh.creation.box(extents=[2.0, 1.0, 3.0])
    Image.fromarray(np.full((8, 8, 3), TEXTURE_RGB, dtype=np.uint8)).save(folder / "paint.png")
    (folder / "box.mtl").write_text(
        f"newmtl paint\nKd {MTL_KD[0]} {MTL_KD[1]} {MTL_KD[2]}\nKa 0 0 0\nKs 0 0 0\nmap_Kd paint.png\n"
    )
    lines = ["mtllib box.mtl", "o box"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in mesh.vertices]
    lines += ["vt 0.25 0.25", "vt 0.75 0.25", "vt 0.5 0.75", "usemtl paint"]
    lines += [f"f {a + 1}/1 {b + 1}/2 {c + 1}/3" for a, b, c in mesh.faces]
    path = folder / "box.obj"
    path.write_text("\n".join(lines) + "\n")
    return path, mesh, canonical_matrix(mesh.bounds[0], mesh.bounds[1], up_axis="y")


def coloured_ply_file(folder: Path) -> tuple[Path, trimesh.Trimesh, np.ndarray]:
    """A capsule with blue vertex colours as a binary PLY (Z-up)."""
    mesh = trimesh.creation.capsule(height=1.0, radius=0.6, count=[16, 16])
    mesh.visual.vertex_colors = np.tile([*VERTEX_RGB, 255], (len(mesh.vertices), 1)).astype(np.uint8)
    path = folder / "capsule.ply"
    mesh.export(path)
    return path, mesh, canonical_matrix(mesh.bounds[0], mesh.bounds[1], up_axis="z")


class MeshKit:
    """The constants and builders above, for tests (conftest is not importable under --import-mode=importlib)."""

    SPHERE_CENTER = SPHERE_CENTER
    SPHERE_RADIUS = SPHERE_RADIUS
    TEXTURE_RGB = TEXTURE_RGB
    MTL_KD = MTL_KD
    VERTEX_RGB = VERTEX_RGB
    record = staticmethod(record)
    sphere_file = staticmethod(sphere_file)


@pytest.fixture
def kit() -> type[MeshKit]:
    return MeshKit


@pytest.fixture
def sphere_manifest(tmp_path: Path) -> Path:
    path, mesh, matrix = sphere_file(tmp_path)
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(manifest, [record("sphere", path, mesh, matrix, category="ball")])
    return manifest


@pytest.fixture
def mixed_manifest(tmp_path: Path) -> Path:
    """A textured box (category box) and a vertex-coloured capsule (category capsule)."""
    box, box_mesh, box_matrix = textured_box_file(tmp_path)
    ply, ply_mesh, ply_matrix = coloured_ply_file(tmp_path)
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(manifest, [
        record("box", box, box_mesh, box_matrix, category="box", textured=True),
        record("capsule", ply, ply_mesh, ply_matrix, category="capsule"),
    ])
    return manifest


@pytest.fixture
def test_preset(tmp_path: Path) -> Path:
    """The tiny preset at 96 px / 8 samples: large enough for a sub-pixel silhouette check, still fast."""
    path = tmp_path / "render-test.toml"
    path.write_text(
        '[preset]\ninherit = "tiny"\n\n[render]\nviews_per_instance = 3\nimage_size = 96\nfocal_px = 180.0\n'
        "cycles_samples = 8\n"
    )
    return path
