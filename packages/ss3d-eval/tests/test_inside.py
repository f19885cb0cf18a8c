import numpy as np
import pytest
import trimesh

from ss3d_data.errors import Ss3dError
from ss3d_data.inside import grid_around
from ss3d_eval.metrics import voxelize
from ss3d_eval.shapes import make_shape


def test_matches_brute_force_winding_numbers_with_overlapping_parts(asymmetric, gwn):
    mesh = asymmetric
    shape = make_shape(mesh.vertices, mesh.faces)
    grid = grid_around(shape.bounds(), 16)
    occupancy = voxelize(shape, grid)
    reference = gwn(grid.centres().reshape(-1, 3), mesh.vertices[mesh.faces]) > 0.5
    assert occupancy.sum() > 300
    assert (occupancy.reshape(-1) != reference).sum() == 0


def test_open_mesh_majority_vote_keeps_the_inside():
    # A closed box with its top face removed: rays through the hole vote wrong, the other five win.
    box = trimesh.creation.box((0.6, 0.6, 0.6))
    top = box.triangles_center[:, 2] > 0.29
    shape = make_shape(box.vertices, box.faces[~top])
    grid = grid_around(np.array([[-0.3] * 3, [0.3] * 3]), 16, padding=0.2)
    occupancy = voxelize(shape, grid)
    reference = np.all(np.abs(grid.centres()) < 0.3, axis=-1)
    assert (occupancy == reference).all()


def test_inverted_faces_and_axis_aligned_geometry_on_grid_lines():
    box = trimesh.creation.box((1.0, 1.0, 1.0))
    shape = make_shape(box.vertices, box.faces[:, ::-1])  # every normal points inwards
    grid = grid_around(shape.bounds(), 8, padding=0.0)  # faces lie exactly on voxel boundaries
    assert voxelize(shape, grid).all()


def test_sphere_volume_converges():
    sphere = trimesh.creation.icosphere(5, 0.4)
    shape = make_shape(sphere.vertices, sphere.faces)
    grid = grid_around(shape.bounds(), 96)
    volume = voxelize(shape, grid).sum() * grid.voxel**3
    assert volume == pytest.approx(sphere.volume, rel=0.01)


def test_point_cloud_has_no_inside():
    cloud = make_shape(np.random.default_rng(0).normal(size=(50, 3)), None, "cloud.ply")
    with pytest.raises(Ss3dError, match="point cloud"):
        voxelize(cloud, grid_around(cloud.bounds(), 8))
