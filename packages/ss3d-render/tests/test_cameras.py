"""Camera maths without Blender: poses, intrinsics, the OpenCV <-> Blender conversion, the analytic silhouette."""

import numpy as np
import pytest

from ss3d_data.cameras import look_at_cam2world, spherical_to_position
from ss3d_data.errors import Ss3dError
from ss3d_render.cameras import (
    blender_matrix_world,
    intrinsics_matrix,
    opencv_cam2world,
    sample_orbit,
    sphere_silhouette,
)


def project(point, intrinsics, cam2world):
    cam = np.linalg.inv(cam2world) @ np.append(point, 1.0)
    uvw = intrinsics @ cam[:3]
    return uvw[:2] / uvw[2], cam[2]


def test_look_at_is_a_rotation_looking_at_the_target_with_z_up_on_screen():
    eye = spherical_to_position(30.0, 20.0, 2.5)
    pose = look_at_cam2world(eye)
    rotation = pose[:3, :3]
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    k = intrinsics_matrix(100.0, 64, 64)
    (u, v), depth = project(np.zeros(3), k, pose)
    assert (u, v) == pytest.approx((32.0, 32.0)) and depth == pytest.approx(2.5)
    (_, v_top), _ = project(np.array([0.0, 0.0, 0.3]), k, pose)
    assert v_top < 32.0  # world up is image up (image v grows downwards)


def test_azimuth_zero_looks_along_plus_y_and_x_is_right():
    pose = look_at_cam2world(spherical_to_position(0.0, 0.0, 2.0))
    np.testing.assert_allclose(pose[:3, 3], [0.0, -2.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(pose[:3, 2], [0.0, 1.0, 0.0], atol=1e-12)  # forward
    np.testing.assert_allclose(pose[:3, 0], [1.0, 0.0, 0.0], atol=1e-12)  # image right = world +X


def test_roll_turns_the_image_about_the_viewing_axis():
    eye = spherical_to_position(10.0, 5.0, 2.0)
    plain, rolled = look_at_cam2world(eye), look_at_cam2world(eye, roll_deg=90.0)
    np.testing.assert_allclose(rolled[:3, 2], plain[:3, 2], atol=1e-12)
    np.testing.assert_allclose(rolled[:3, 0], plain[:3, 1], atol=1e-12)


def test_straight_down_view_is_still_valid():
    pose = look_at_cam2world(np.array([0.0, 0.0, 3.0]))
    np.testing.assert_allclose(pose[:3, 2], [0.0, 0.0, -1.0], atol=1e-12)
    assert np.linalg.det(pose[:3, :3]) == pytest.approx(1.0)


def test_blender_conversion_flips_y_and_z_and_round_trips():
    pose = look_at_cam2world(spherical_to_position(123.0, -40.0, 2.2))
    blender = blender_matrix_world(pose)
    np.testing.assert_allclose(blender[:3, 2], -pose[:3, 2])  # Blender looks down its -z
    np.testing.assert_allclose(blender[:3, 1], -pose[:3, 1])  # and its +y is image up
    np.testing.assert_allclose(opencv_cam2world(blender), pose)


def test_sample_orbit_respects_ranges_and_seed():
    a = sample_orbit(np.random.default_rng(1), 200, (0.0, 360.0), (-75.0, 75.0), (2.0, 3.0))
    b = sample_orbit(np.random.default_rng(1), 200, (0.0, 360.0), (-75.0, 75.0), (2.0, 3.0))
    np.testing.assert_array_equal(a, b)
    radius = np.linalg.norm(a, axis=1)
    assert radius.min() >= 2.0 and radius.max() <= 3.0
    elevation = np.degrees(np.arcsin(a[:, 2] / radius))
    assert elevation.min() >= -75.0 and elevation.max() <= 75.0


def test_sphere_silhouette_of_a_centred_sphere_is_the_expected_disc():
    distance, radius, focal, size = 3.0, 0.5, 200.0, 101
    pose = look_at_cam2world(spherical_to_position(0.0, 0.0, distance))
    mask = sphere_silhouette(np.zeros(3), radius, intrinsics_matrix(focal, size, size), pose, size, size)
    # A sphere seen from distance d projects to a disc of radius f * r / sqrt(d^2 - r^2) around the centre.
    expected = np.pi * (focal * radius / np.sqrt(distance**2 - radius**2)) ** 2
    assert mask.sum() == pytest.approx(expected, rel=0.02)
    assert mask[size // 2, size // 2] and not mask[0, 0]


def test_sphere_behind_the_camera_is_invisible():
    pose = look_at_cam2world(np.array([0.0, -2.0, 0.0]))
    mask = sphere_silhouette(np.array([0.0, -4.0, 0.0]), 0.5, intrinsics_matrix(50.0, 32, 32), pose, 32, 32)
    assert not mask.any()


def test_bad_intrinsics_and_degenerate_look_at_are_errors():
    with pytest.raises(Ss3dError):
        intrinsics_matrix(0.0, 64, 64)
    with pytest.raises(Ss3dError):
        look_at_cam2world(np.zeros(3))
