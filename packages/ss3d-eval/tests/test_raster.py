import numpy as np
import pytest
import trimesh

from ss3d_eval.raster import BACKGROUND, look_at, project, render
from ss3d_eval.shapes import make_shape


def test_look_at_front_camera_axes():
    rotation, position = look_at(0.0, 0.0, 2.0)
    assert np.allclose(position, [0, -2, 0])
    assert np.allclose(rotation, [[1, 0, 0], [0, 0, -1], [0, 1, 0]])  # x right, y down (-Z), z forward (+Y)
    uv, depth = project(np.array([[0.0, 0.0, 0.0]]), rotation, position, 100.0, 64)
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
    assert abs((rows.min() + rows.max()) / 2 - (size - 1) / 2) <= 1 and abs((cols.min() + cols.max()) / 2 - (size - 1) / 2) <= 1


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
