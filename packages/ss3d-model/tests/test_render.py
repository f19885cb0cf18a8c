import math

import torch

from ss3d_model.cameras import intrinsics_matrix, look_at, pixel_rays
from ss3d_model.render import composite, importance_depths, ray_bounds, render_image, render_rays, sample_depths


class ConstantSphere:
    """A field with density ``sigma`` inside a sphere of radius ``radius`` at the origin and colour logits c."""

    def __init__(self, sigma: float, radius: float, logits=(0.5, -1.0, 2.0)) -> None:
        self.sigma, self.radius, self.logits = sigma, radius, torch.tensor(logits)

    def decode(self, z, points):
        inside = points.norm(dim=-1) <= self.radius
        sigma = torch.where(inside, self.sigma, -1.0)  # negative outside: ReLU must zero it
        return sigma, self.logits.expand(*points.shape[:-1], 3)


def test_constant_sphere_opacity_matches_closed_form(tiny_volume):
    sigma, radius, d = 4.0, 0.4, 2.0
    offsets = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.38, 0.45])         # impact parameters
    origins = torch.tensor([0.0, -d, 0.0]).expand(1, 6, 3)
    targets = torch.stack([offsets, torch.zeros(6), torch.zeros(6)], -1)[None]
    directions = targets - origins
    directions = directions / directions.norm(dim=-1, keepdim=True)
    near, far = ray_bounds(origins, tiny_volume)
    mask, rgb = render_rays(ConstantSphere(sigma, radius), torch.zeros(1, 1), origins, directions, near, far, 4000)
    # Distance from the centre to each ray, then the chord through the sphere.
    closest = torch.linalg.cross(origins[0], directions[0]).norm(dim=-1)
    chord = 2 * (radius**2 - closest**2).clamp_min(0).sqrt()
    expected = 1 - torch.exp(-sigma * chord)
    step = 2 * tiny_volume.ray_half_depth / 3999
    torch.testing.assert_close(mask[0], expected, atol=sigma * step, rtol=0)
    assert mask[0, -1] == 0
    colour = torch.sigmoid(torch.tensor([0.5, -1.0, 2.0]))
    torch.testing.assert_close(rgb[0], mask[0, :, None] * colour, atol=1e-5, rtol=0)


def test_composite_golden_values():
    """Two samples 0.5 apart with densities 2 and 1: alpha = (1 - e^-1, 1), T = (1, e^-1)."""
    sigma = torch.tensor([[[2.0, 1.0]]])
    logits = torch.zeros(1, 1, 2, 3)
    depths = torch.tensor([[[1.0, 1.5]]])
    mask, rgb, weights = composite(sigma, logits, depths)
    e = math.exp(-1)
    torch.testing.assert_close(weights[0, 0], torch.tensor([1 - e, e]))
    torch.testing.assert_close(mask, torch.tensor([[1.0]]))
    torch.testing.assert_close(rgb, torch.full((1, 1, 3), 0.5))


def test_last_interval_choice():
    """Density only at the last sample: opaque with the 1e10 interval, 1 - e^-(sigma * step) with the step."""
    sigma = torch.tensor([[[0.0, 0.0, 2.0]]])
    depths = torch.tensor([[[1.0, 1.25, 1.5]]])
    opaque, _, _ = composite(sigma, torch.zeros(1, 1, 3, 3), depths)
    stepped, _, _ = composite(sigma, torch.zeros(1, 1, 3, 3), depths, last_interval=None)
    torch.testing.assert_close(opaque, torch.tensor([[1.0]]))
    torch.testing.assert_close(stepped, torch.tensor([[1 - math.exp(-0.5)]]))


def test_empty_space_renders_black():
    near, far = torch.ones(2, 3), torch.full((2, 3), 2.0)
    origins = torch.zeros(2, 3, 3)
    directions = torch.tensor([0.0, 0.0, 1.0]).expand(2, 3, 3)
    mask, rgb = render_rays(ConstantSphere(5.0, 0.1), torch.zeros(2, 1), origins, directions, near, far, 8)
    assert mask.abs().max() == 0 and rgb.abs().max() == 0


def test_sample_depths_uniform():
    t = sample_depths(torch.tensor([[1.0]]), torch.tensor([[3.0]]), 5)
    torch.testing.assert_close(t[0, 0], torch.tensor([1.0, 1.5, 2.0, 2.5, 3.0]))


def test_stratified_depths_fall_one_per_bin_and_render_the_same_opacity_on_average(tiny_volume):
    near, far = torch.tensor([[1.0]]), torch.tensor([[3.0]])
    jitter = torch.tensor([[[0.0, 0.5, 0.999, 0.25]]])
    t = sample_depths(near, far, 4, jitter)
    torch.testing.assert_close(t[0, 0], torch.tensor([1.0, 1.75, 2.4995, 2.625]))
    # A thin sphere (chord 0.2 through its centre) spans under two sampling steps: fixed depths over- or
    # under-count it depending on where they fall; stratified depths estimate its optical depth without bias.
    sigma, radius, rays = 3.0, 0.1, 4000
    origins = torch.tensor([0.0, -2.0, 0.0]).expand(1, rays, 3)
    directions = torch.tensor([0.0, 1.0, 0.0]).expand(1, rays, 3)
    near, far = ray_bounds(origins, tiny_volume)
    generator = torch.Generator().manual_seed(0)
    for samples in (13, 16):
        fixed, _ = render_rays(ConstantSphere(sigma, radius), torch.zeros(1, 1), origins, directions, near, far,
                               samples, last_interval=None)
        jitter = torch.rand(1, rays, samples, generator=generator)
        stratified, _ = render_rays(ConstantSphere(sigma, radius), torch.zeros(1, 1), origins, directions, near, far,
                                    samples, last_interval=None, jitter=jitter)
        depth = -torch.log1p(-stratified).mean().item()
        assert abs(depth - sigma * 2 * radius) < 0.02
        assert abs(-torch.log1p(-fixed).mean().item() - sigma * 2 * radius) > 0.1


def test_ray_bounds(tiny_volume):
    near, far = ray_bounds(torch.tensor([[[0.0, -2.0, 0.0], [0.3, 0.0, 0.4]]]), tiny_volume)
    torch.testing.assert_close(near, torch.tensor([[1.1, 0.0]]))
    torch.testing.assert_close(far, torch.tensor([[2.9, 1.4]]))


def test_render_image_of_sphere(tiny_volume):
    size = 16
    k = intrinsics_matrix(20.0, size)
    pose = look_at(torch.zeros(1), torch.zeros(1), torch.full((1,), 2.0))
    mask, rgb = render_image(ConstantSphere(50.0, 0.4), torch.zeros(1, 1), k, pose, size, tiny_volume, chunk=37)
    assert mask.shape == (1, size, size) and rgb.shape == (1, size, size, 3)
    # The sphere's silhouette radius in pixels is f * r / sqrt(d^2 - r^2).
    silhouette = 20.0 * 0.4 / math.sqrt(4 - 0.16)
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    r = ((xs - 8) ** 2 + (ys - 8) ** 2).sqrt()
    assert (mask[0][r < silhouette - 0.8] > 0.99).all() and (mask[0][r > silhouette + 0.8] < 0.01).all()


def test_gradients_reach_decoder_encoder_and_cameras(tiny_network, tiny_config, tiny_volume):
    from ss3d_model.cameras import MultiHypothesisCameras, sample_pixels

    tiny_network.train()
    cams = MultiHypothesisCameras(4, 3, (1.5, 2.0), 60.0, 32, generator=torch.Generator().manual_seed(0))
    images = torch.rand(2, 3, tiny_config.input_size, tiny_config.input_size)
    idx = torch.tensor([1, 3])
    z = tiny_network.encode(images)
    poses = cams.poses(idx)                                                     # [2, K, 4, 4]
    pixels = sample_pixels(2, 20, 32).float() + 0.5
    origins, dirs = pixel_rays(cams.intrinsics, poses, pixels[:, None].expand(2, 3, 20, 2))
    near, far = ray_bounds(origins, tiny_volume)
    b, k, r, _ = origins.shape
    zk = z[:, None].expand(b, k, -1).reshape(b * k, -1)
    mask, rgb = render_rays(tiny_network, zk, origins.reshape(b * k, r, 3), dirs.reshape(b * k, r, 3),
                            near.reshape(b * k, r), far.reshape(b * k, r), tiny_volume.samples_per_ray)
    per_hypothesis = ((mask - 0.5) ** 2).mean(-1).view(b, k) + ((rgb - 0.3) ** 2).mean((-1, -2)).view(b, k)
    loss = (cams.probabilities(idx) * per_hypothesis).sum()
    loss.backward()
    for name, param in [("decoder", tiny_network.decoder.layers[2].weight),
                        ("head", tiny_network.decoder.head.weight),
                        ("encoder", tiny_network.encoder.trunk.conv1.weight),
                        ("residual", tiny_network.encoder.residual_out.weight)]:
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert cams.raw.grad[idx].abs().sum() > 0 and cams.logits.grad[idx].abs().sum() > 0
    assert cams.raw.grad[0].abs().sum() == 0


class ThinSlab:
    """Density ``sigma`` in the slab |y| <= half_thickness (an opaque thin part), empty elsewhere."""

    def __init__(self, sigma: float, half_thickness: float) -> None:
        self.sigma, self.half = sigma, half_thickness

    def decode(self, z, points):
        inside = points[..., 1].abs() <= self.half
        return torch.where(inside, self.sigma, -1.0), torch.zeros(*points.shape[:-1], 3)


def test_importance_draws_follow_the_weights():
    depths = torch.linspace(1.0, 3.0, 9).expand(1, 2, 9).contiguous()
    near, far = torch.ones(1, 2), torch.full((1, 2), 3.0)
    weights = torch.zeros(1, 2, 9)
    weights[0, 0, 4] = 1.0                            # ray 0: all weight on the sample at t = 2.0
    drawn = importance_depths(depths, weights, near, far, 16)
    assert drawn.shape == (1, 2, 16)
    # Sample 4's bin runs between the midpoints around it, [1.875, 2.125]: nearly every draw lands there.
    inside = ((drawn[0, 0] >= 1.875 - 1e-6) & (drawn[0, 0] <= 2.125 + 1e-6)).float().mean()
    assert inside >= 0.9
    # Ray 1 has no weight: it falls back to uniform draws, stratified over [near, far].
    torch.testing.assert_close(drawn[0, 1], 1.0 + 2.0 * (torch.arange(16) + 0.5) / 16, atol=2e-3, rtol=0)
    assert bool((drawn[..., 1:] >= drawn[..., :-1]).all())
    jittered = importance_depths(depths, weights, near, far, 16, jitter=torch.rand(1, 2, 16))
    assert bool(((jittered >= 1.0) & (jittered <= 3.0)).all())


class Recording:
    """Wraps a field and keeps every batch of points it was asked about, and whether gradients were on."""

    def __init__(self, field) -> None:
        self.field, self.calls = field, []

    def decode(self, z, points):
        self.calls.append((points.detach().clone(), torch.is_grad_enabled()))
        return self.field.decode(z, points)


def test_hierarchical_rendering_composites_both_passes(tiny_volume):
    """The first pass's S - K points are asked without gradients, then all S (its own and the K draws, sorted
    along the ray) with them; the result is the composite over those S depths, and it renders a slab the first
    pass resolves as its closed form does (1 - e^-(sigma * thickness))."""
    slab = Recording(ThinSlab(5.0, 0.3))
    origins = torch.tensor([0.0, -2.0, 0.0]).expand(1, 32, 3)
    directions = torch.tensor([0.0, 1.0, 0.0]).expand(1, 32, 3)
    near, far = ray_bounds(origins, tiny_volume)
    jitter = torch.rand(1, 32, 24, generator=torch.Generator().manual_seed(0))
    mask, _ = render_rays(slab, torch.zeros(1, 1), origins, directions, near, far, 24, last_interval=None,
                          jitter=jitter, importance=8)
    (first, first_grad), (final, final_grad) = slab.calls
    assert first.shape == (1, 32 * 16, 3) and final.shape == (1, 32 * 24, 3)
    assert not first_grad and final_grad
    depths = final[0, :, 1].view(32, 24) + 2.0
    assert bool((depths[:, 1:] >= depths[:, :-1]).all())
    # Every first-pass depth is among the final ones; the draws crowd into the slab.
    first_depths = first[0, :, 1].view(32, 16) + 2.0
    assert bool(torch.isin(first_depths, depths).all())
    inside = (depths - 2.0).abs() <= 0.3
    assert inside.float().mean() > 0.6 / 1.8 + 0.1
    sigma, _ = slab.field.decode(None, final.view(1, 32, 24, 3))
    expected, _, _ = composite(sigma, torch.zeros(1, 32, 24, 3), depths[None], last_interval=None)
    torch.testing.assert_close(mask, expected)
    torch.testing.assert_close(mask.mean(), torch.tensor(1 - math.exp(-3.0)), atol=0.03, rtol=0)
