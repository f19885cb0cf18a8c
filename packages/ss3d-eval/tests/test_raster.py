import numpy as np
import pytest
import trimesh

from ss3d_eval.raster import BACKGROUND, render, view_camera
from ss3d_eval.shapes import make_shape
from ss3d_model.raster import project, rasterise


def test_look_at_front_camera_axes():
    pose = view_camera(0.0, 0.0, 2.0)
    assert np.allclose(pose[:3, 3], [0, -2, 0])
    assert np.allclose(pose[:3, :3].T, [[1, 0, 0], [0, 0, -1], [0, 1, 0]])  # x right, y down (-Z), z forward (+Y)
    uv, depth = project(np.array([[0.0, 0.0, 0.0]]), pose, 100.0, 64)
    assert np.allclose(uv, [[32, 32]]) and depth[0] == pytest.approx(2.0)


def test_cube_silhouette_matches_its_projection():
    size, half, distance = 128, 0.25, 2.4
    cube = trimesh.creation.box((2 * half,) * 3)
    image = render(make_shape(cube.vertices, cube.faces), size, 0.0, 0.0, distance=distance)
    covered = (image != np.array(BACKGROUND, np.uint8)).any(-1)
    focal = size / 2 * (distance - 0.65) / (0.65 * 1.05)
    side = 2 * focal * half / (distance - half)  # the front face, nearest the camera, bounds the silhouette
    assert abs(covered.sum() - side**2) <= 4 * side  # within one pixel ring of the exact square
    rows, cols = np.nonzero(covered)
    assert abs((rows.min() + rows.max()) / 2 - (size - 1) / 2) <= 1
    assert abs((cols.min() + cols.max()) / 2 - (size - 1) / 2) <= 1


def test_nearest_surface_wins():
    # A small bright-facing square in front of a large one tilted away: where they overlap the front one shows.
    front = trimesh.creation.box((0.2, 0.01, 0.2))
    front.apply_translation([0, -0.4, 0])
    back = trimesh.creation.box((0.8, 0.01, 0.8))
    back.apply_transform(trimesh.transformations.rotation_matrix(1.1, [0, 0, 1]))
    both = trimesh.util.concatenate([front, back])
    image = render(make_shape(both.vertices, both.faces), 96, 0.0, 0.0, colour=(200, 200, 200))
    alone = render(make_shape(front.vertices, front.faces), 96, 0.0, 0.0, colour=(200, 200, 200))
    mask = (alone != np.array(BACKGROUND, np.uint8)).any(-1)
    assert mask.sum() > 20
    assert (image[mask] == alone[mask]).all()


def test_vertex_colours_are_interpolated_across_a_triangle():
    # One triangle facing the camera, red, green and blue corners: the pixel near each corner takes its colour and
    # the centre a mix of all three.
    vertices = np.array([[-0.5, 0.0, -0.4], [0.5, 0.0, -0.4], [0.0, 0.0, 0.5]])
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]])
    pose = view_camera(0.0, 0.0, 2.0)
    image = rasterise(vertices, np.array([[0, 1, 2]]), pose, 64.0, 96, colours=colours).astype(int)
    (u0, v0), (u1, v1), (u2, v2) = np.floor(project(vertices, pose, 64.0, 96)[0]).astype(int)
    assert image[v0 - 2, u0 + 3].argmax() == 0 and image[v1 - 2, u1 - 3].argmax() == 1
    assert image[v2 + 3, u2].argmax() == 2
    centre = np.floor(project(vertices.mean(0, keepdims=True), pose, 64.0, 96)[0][0]).astype(int)
    assert (image[centre[1], centre[0]] > 40).all()
