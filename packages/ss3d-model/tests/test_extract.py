import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from ss3d_data.errors import Ss3dError
from ss3d_model.extract import (
    coarse_to_fine_field,
    coarse_to_fine_grid,
    dense_grid,
    edge_interpolate,
    extract_mesh,
    mesh_from_grid,
)


def blobs(points):
    """Two overlapping spheres plus a ripple: raw density, surface at 3.0."""
    a = 10 * (0.3 - (points - torch.tensor([0.1, 0.0, 0.0])).norm(dim=-1))
    b = 10 * (0.15 - (points - torch.tensor([-0.3, 0.2, 0.1])).norm(dim=-1))
    return 3.0 + torch.maximum(a, b) + 0.5 * torch.sin(9 * points[:, 0])


class CountingField:
    def __init__(self, fn):
        self.fn, self.count = fn, 0

    def __call__(self, points):
        self.count += points.shape[0]
        return self.fn(points)


@pytest.mark.parametrize("resolution,coarse", [(32, 8), (64, 16), (64, 4)])
def test_coarse_to_fine_equals_dense(resolution, coarse):
    dense = dense_grid(blobs, resolution, 0.55)
    field = CountingField(blobs)
    values, evaluations = coarse_to_fine_grid(field, resolution, coarse, 3.0, 0.55, chunk=5000)
    assert evaluations == field.count < dense.numel() / 2
    a, b = mesh_from_grid(dense, 3.0, 0.55), mesh_from_grid(values, 3.0, 0.55)
    assert len(a.faces) > 100 and a.is_watertight
    # Every cell the surface crosses had exact corners: marching cubes gives the very same mesh.
    np.testing.assert_array_equal(a.faces, b.faces)
    np.testing.assert_allclose(a.vertices, b.vertices, atol=1e-6)


def test_extra_channels_interpolated_along_edges():
    """A linear colour field is reproduced exactly at every vertex from the two lattice ends of its edge."""
    field = lambda p: torch.cat([blobs(p)[:, None], p + 0.5], -1)  # noqa: E731
    values, extras, _ = coarse_to_fine_field(field, 64, 16, 3.0, 0.55)
    assert extras.shape == (65, 65, 65, 3)
    mesh = mesh_from_grid(values, 3.0, 0.55)
    colours, ok = edge_interpolate(extras, mesh.vertices, 0.55)
    assert ok.all()
    np.testing.assert_allclose(colours.numpy(), mesh.vertices + 0.5, atol=1e-5)


def test_surface_touching_the_box_closes():
    cube = lambda p: 10.0 * torch.ones(p.shape[0])  # noqa: E731  (everything inside)
    mesh = mesh_from_grid(dense_grid(cube, 8, 0.5), 3.0, 0.5)
    assert mesh.is_watertight
    np.testing.assert_allclose(mesh.bounds, [[-0.5] * 3, [0.5] * 3], atol=1e-6)


def test_vertices_in_canonical_units():
    sphere = lambda p: 3.0 + 10 * (0.25 - p.norm(dim=-1))  # noqa: E731
    mesh = mesh_from_grid(dense_grid(sphere, 64, 0.55), 3.0, 0.55)
    radii = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(radii.mean() - 0.25) < 0.01 and radii.std() < 0.01
    assert abs(mesh.volume / (4 / 3 * np.pi * 0.25**3) - 1) < 0.02  # outward faces: positive volume


def test_empty_field_gives_empty_mesh():
    nothing = lambda p: torch.zeros(p.shape[0])  # noqa: E731
    values, _ = coarse_to_fine_grid(nothing, 16, 4, 3.0, 0.5)
    assert len(mesh_from_grid(values, 3.0, 0.5).faces) == 0


def test_bad_resolution_ratio():
    with pytest.raises(Ss3dError, match="power of two"):
        coarse_to_fine_grid(blobs, 48, 16, 3.0, 0.5)


def test_network_mesh_is_coloured_and_matches_dense(tiny_network, tiny_config):
    z = torch.randn(tiny_config.latent_dim) * 0.1
    with torch.no_grad():
        sigma, _ = tiny_network.decode(z[None], torch.rand(1, 4000, 3) - 0.5)
    threshold = float(sigma.quantile(0.7))  # an untrained field: put the level where a surface exists
    mesh = extract_mesh(tiny_network, z, 32, 8, threshold, 0.55)
    dense = extract_mesh(tiny_network, z[None], 32, 32, threshold, 0.55)
    # A random SIREN is high-frequency noise: specks thinner than a coarse cell may be missed (as in MISE), but
    # every extracted vertex is a dense vertex and almost all of the dense surface is found.
    assert len(mesh.faces) > 0 and abs(len(mesh.faces) - len(dense.faces)) <= 0.01 * len(dense.faces)
    distance, _ = cKDTree(dense.vertices).query(mesh.vertices)
    assert distance.max() < 1e-5
    voxel = 1.1 / 32
    distance, _ = cKDTree(mesh.vertices).query(dense.vertices)
    assert (distance < voxel).mean() > 0.99
    colours = mesh.visual.vertex_colors
    assert colours.shape == (len(mesh.vertices), 4) and colours[:, 3].min() == 255
    with torch.no_grad():
        _, logits = tiny_network.decode(z[None], torch.from_numpy(mesh.vertices).float()[None])
    direct = torch.sigmoid(logits[0]).numpy() * 255
    assert np.abs(colours[:, :3] - direct).mean() < 2.0  # edge-interpolated colours are the decoder's, smoothed
    assert np.abs(mesh.vertices).max() <= 0.55 + 1e-6
    with pytest.raises(Ss3dError):
        extract_mesh(tiny_network, torch.zeros(2, tiny_config.latent_dim), 16, 4, 0.0, 0.5)


def test_a_view_frame_model_is_meshed_in_the_view_box_with_cells_no_coarser():
    from ss3d_model import ExtractConfig
    from ss3d_model.cameras import VIEW_BOX_HALF_SIZE

    extract = ExtractConfig(resolution=64, coarse_resolution=16, density_threshold=3.0, box_half_size=0.55)
    assert extract.grid(view_frame=False) == (64, 16, 0.55)
    resolution, coarse, box = extract.grid(view_frame=True)
    assert box == VIEW_BOX_HALF_SIZE and resolution // coarse == 4 and resolution % coarse == 0
    assert 2 * box / resolution <= 2 * 0.55 / 64
    wide = ExtractConfig(resolution=96, coarse_resolution=24, density_threshold=3.0, box_half_size=1.0)
    assert wide.grid(view_frame=True) == (96, 24, 1.0)  # a preset's box already that large is kept

    def sphere(points):  # an object scaled 1.6x by the view frame: radius 0.8, surface at 3.0
        return 3.0 + 10 * (0.8 - points.norm(dim=-1))

    def mesh(grid):
        values, _ = coarse_to_fine_grid(sphere, grid[0], grid[1], 3.0, grid[2])
        return mesh_from_grid(values, 3.0, grid[2])

    canonical, framed = mesh(extract.grid(view_frame=False)), mesh(extract.grid(view_frame=True))
    assert canonical.bounds[1].max() == pytest.approx(0.55)           # cut by the canonical box
    assert framed.bounds[1].max() == pytest.approx(0.8, abs=0.02)     # whole in the view frame's
