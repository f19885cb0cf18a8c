"""Every supported mesh format lands in the canonical frame where its manifest matrix says (real bpy imports)."""

from pathlib import Path

import numpy as np
import pytest
import trimesh

from ss3d_data.errors import Ss3dError
from ss3d_data.manifest import canonical_matrix

pytestmark = pytest.mark.blender


def _expected_bounds(mesh: trimesh.Trimesh, matrix: np.ndarray):
    points = trimesh.transform_points(mesh.vertices, matrix)
    return points.min(0), points.max(0)


@pytest.fixture(scope="module")
def scene():
    from ss3d_render.scene import RenderScene

    with RenderScene(image_size=32, samples=1, max_bounces=0, use_hdris=False) as render_scene:
        yield render_scene


# An asymmetric, off-centre shape, so a wrong axis convention changes the bounds.
def _shape() -> trimesh.Trimesh:
    mesh = trimesh.creation.box(extents=[3.0, 1.0, 2.0])
    mesh.apply_translation([5.0, -2.0, 1.0])
    return mesh


@pytest.mark.parametrize("suffix,up_axis", [(".obj", "y"), (".glb", "y"), (".ply", "z"), (".stl", "z"), (".off", "z")])
def test_format_lands_on_its_canonical_bounds(scene, tmp_path: Path, suffix: str, up_axis: str):
    from ss3d_render.importers import world_bounds

    mesh = _shape()
    path = tmp_path / f"shape{suffix}"
    mesh.export(path)
    matrix = canonical_matrix(mesh.bounds[0], mesh.bounds[1], up_axis=up_axis)
    scene.load_object(path, matrix)
    low, high = world_bounds(scene.objects)
    want_low, want_high = _expected_bounds(mesh, matrix)
    np.testing.assert_allclose(low, want_low, atol=1e-4)
    np.testing.assert_allclose(high, want_high, atol=1e-4)
    assert max(high - low) == pytest.approx(1.0, abs=1e-4)


def test_objects_are_swapped_not_accumulated(scene, tmp_path: Path):
    import bpy

    mesh = _shape()
    path = tmp_path / "shape.obj"
    mesh.export(path)
    matrix = canonical_matrix(mesh.bounds[0], mesh.bounds[1], up_axis="y")
    for _ in range(3):
        scene.load_object(path, matrix)
    assert sum(1 for obj in bpy.data.objects if obj.type == "MESH") == 1
    assert len(bpy.data.meshes) == 1


def test_unsupported_missing_and_empty_files_are_errors(scene, tmp_path: Path):
    (tmp_path / "thing.fbx").write_text("not a mesh")
    with pytest.raises(Ss3dError, match="unsupported mesh format"):
        scene.load_object(tmp_path / "thing.fbx", np.eye(4))
    with pytest.raises(Ss3dError, match="not found"):
        scene.load_object(tmp_path / "absent.obj", np.eye(4))
    (tmp_path / "empty.obj").write_text("# nothing\n")
    with pytest.raises(Ss3dError, match="no mesh faces"):
        scene.load_object(tmp_path / "empty.obj", np.eye(4))
