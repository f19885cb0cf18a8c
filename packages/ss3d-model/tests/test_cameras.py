import math

import pytest
import torch

from ss3d_data.errors import Ss3dError
from ss3d_model.cameras import MultiHypothesisCameras, intrinsics_matrix, look_at, pixel_rays, sample_pixels


def test_default_viewer():
    pose = look_at(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(2.0))
    expected = torch.tensor([[1.0, 0, 0, 0], [0, 0, 1, -2], [0, -1, 0, 0], [0, 0, 0, 1]])
    torch.testing.assert_close(pose, expected, atol=1e-6, rtol=0)


def test_azimuth_counter_clockwise_and_elevation_up():
    quarter = look_at(torch.tensor(0.0), torch.tensor(math.pi / 2), torch.tensor(1.0))
    torch.testing.assert_close(quarter[:3, 3], torch.tensor([1.0, 0, 0]), atol=1e-6, rtol=0)  # -Y turned to +X
    above = look_at(torch.tensor(math.pi / 4), torch.tensor(0.0), torch.tensor(1.0))
    assert above[2, 3] > 0 and above[2, 2] < 0  # above the object, looking down


def test_poses_are_rigid_and_look_at_origin():
    g = torch.Generator().manual_seed(0)
    el = (torch.rand(50, generator=g) - 0.5) * math.pi
    az = torch.rand(50, generator=g) * 2 * math.pi
    dist = 1 + torch.rand(50, generator=g)
    pose = look_at(el, az, dist)
    rot = pose[:, :3, :3]
    torch.testing.assert_close(rot.transpose(1, 2) @ rot, torch.eye(3).expand(50, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(50), atol=1e-5, rtol=0)
    centre = -pose[:, :3, 3] / dist[:, None]
    torch.testing.assert_close(rot[:, :, 2], centre, atol=1e-5, rtol=0)
    # Defined at the poles too.
    assert torch.isfinite(look_at(torch.tensor(math.pi / 2), torch.tensor(0.3), torch.tensor(1.0))).all()


def test_the_differentiable_look_at_gives_the_numpy_look_at_poses():
    """Training's batched torch look-at and the project's numpy one (renderer, report) are one convention."""
    from ss3d_data.cameras import look_at_cam2world, spherical_to_position

    g = torch.Generator().manual_seed(1)
    el = (torch.rand(40, generator=g, dtype=torch.float64) - 0.5) * 0.95 * math.pi
    az = (torch.rand(40, generator=g, dtype=torch.float64) - 0.5) * 4 * math.pi
    dist = 0.5 + 3 * torch.rand(40, generator=g, dtype=torch.float64)
    poses = look_at(el, az, dist)
    for pose, e, a, d in zip(poses, el.tolist(), az.tolist(), dist.tolist()):
        expected = look_at_cam2world(spherical_to_position(math.degrees(a), math.degrees(e), d))
        torch.testing.assert_close(pose, torch.from_numpy(expected), atol=1e-9, rtol=0)


def test_pixel_rays_invert_projection():
    size, focal = 64, 80.0
    k = intrinsics_matrix(focal, size)
    assert k[0, 2] == 32 and k[1, 1] == focal
    pose = look_at(torch.tensor(0.3), torch.tensor(1.1), torch.tensor(2.0))
    points = torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.0, 0.0], [-0.4, 0.25, -0.1]])
    world2cam = torch.linalg.inv(pose)
    cam = points @ world2cam[:3, :3].T + world2cam[:3, 3]
    uv = (cam @ k.T)[:, :2] / cam[:, 2:]
    origins, dirs = pixel_rays(k, pose, uv)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(3))
    t = ((points - origins) * dirs).sum(-1, keepdim=True)
    torch.testing.assert_close(origins + t * dirs, points, atol=1e-5, rtol=0)
    # The principal point looks at the origin.
    _, centre_dir = pixel_rays(k, pose, torch.tensor([[32.0, 32.0]]))
    torch.testing.assert_close(centre_dir[0], -pose[:3, 3] / 2, atol=1e-6, rtol=0)


def test_pixel_rays_batched_shapes():
    k = intrinsics_matrix(torch.tensor([50.0, 60.0]), 32)
    poses = look_at(torch.zeros(2), torch.zeros(2), torch.full((2,), 2.0))
    origins, dirs = pixel_rays(k, poses, torch.rand(2, 9, 2) * 32)
    assert origins.shape == dirs.shape == (2, 9, 3)


def test_sample_pixels():
    g = torch.Generator().manual_seed(1)
    px = sample_pixels(3, 50, 8, generator=g)
    assert px.shape == (3, 50, 2) and px.dtype == torch.long
    assert px.min() >= 0 and px.max() < 8
    assert all(len({tuple(p) for p in img.tolist()}) == 50 for img in px)  # no repeats within an image
    assert sample_pixels(1, 100, 4).shape == (1, 100, 2)  # more than the image holds: with repeats


def test_multi_hypothesis_initialisation():
    cams = MultiHypothesisCameras(5, 4, (1.0, 2.0), 300.0, 128, generator=torch.Generator().manual_seed(0))
    assert cams.raw.shape == (5, 4, 3) and cams.logits.shape == (5, 4)
    el, az, dist = cams.angles(torch.arange(5))
    assert el.abs().max() <= math.radians(45) + 1e-5
    assert dist.min() >= 1.0 and dist.max() <= 2.0
    gaps = torch.diff(az, dim=1)
    torch.testing.assert_close(gaps, torch.full_like(gaps, math.pi / 2), atol=2e-3, rtol=0)
    torch.testing.assert_close(cams.probabilities(torch.tensor([0, 3])), torch.full((2, 4), 0.25))
    assert cams.poses(torch.tensor([1, 2])).shape == (2, 4, 4, 4)
    assert cams.intrinsics[0, 0] == 300.0 and cams.intrinsics[0, 2] == 64.0


def test_soft_clamps_hold():
    cams = MultiHypothesisCameras(2, 3, (1.0, 2.0), 100.0, 64)
    with torch.no_grad():
        cams.raw.mul_(1000.0)
    el, az, dist = cams.angles(torch.arange(2))
    assert el.abs().max() <= math.radians(85) and az.abs().max() <= 2 * math.pi
    assert dist.min() >= 1.0 and dist.max() <= 2.0


def test_camera_gradients():
    cams = MultiHypothesisCameras(3, 2, (1.0, 2.0), 100.0, 64)
    idx = torch.tensor([2])
    (cams.poses(idx).sum() + (cams.probabilities(idx) * torch.tensor([1.0, 2.0])).sum()).backward()
    assert cams.raw.grad[2].abs().sum() > 0 and cams.raw.grad[:2].abs().sum() == 0
    assert cams.logits.grad[2].abs().sum() > 0


def test_bad_range():
    with pytest.raises(Ss3dError):
        MultiHypothesisCameras(1, 2, (2.0, 1.0), 100.0, 64)
