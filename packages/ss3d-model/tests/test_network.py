import dataclasses
import math

import pytest
import torch
import torchvision

from ss3d_data.errors import Ss3dError
from ss3d_data.presets import load_preset
from ss3d_model.cameras import PHOTO_FOCAL_PER_SIDE, VIEW_DISTANCE, photo_projection
from ss3d_model.config import ModelConfig, VolumeConfig
from ss3d_model.network import ReconstructionNetwork, imagenet_weights_path, load_imagenet_encoder


def test_paper_config_matches_the_paper():
    config = ModelConfig.from_preset(load_preset("paper"))
    assert config.latent_dim == 2560 and config.hidden == 256 and config.modulated_layers == 5
    assert VolumeConfig.from_preset(load_preset("paper")).samples_per_ray == 100
    assert ModelConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("change", [{"hidden": 0}, {"encoder_arch": "vgg"}, {"extra": 1}, {"hidden": "8"}])
def test_bad_config_rejected(tiny_config, change):
    with pytest.raises(Ss3dError):
        ModelConfig.from_dict({**tiny_config.to_dict(), **change})


def test_missing_config_key_rejected(tiny_config):
    d = tiny_config.to_dict()
    del d["omega0"]
    with pytest.raises(Ss3dError, match="omega0"):
        ModelConfig.from_dict(d)


def test_shapes(tiny_network, tiny_config):
    images = torch.rand(2, 3, tiny_config.input_size, tiny_config.input_size)
    z = tiny_network.encode(images)
    assert z.shape == (2, tiny_config.latent_dim)
    sigma, rgb = tiny_network.decode(z, torch.rand(2, 7, 3))
    assert sigma.shape == (2, 7) and rgb.shape == (2, 7, 3)
    sigma2, rgb2 = tiny_network(images, torch.rand(2, 7, 3))
    assert sigma2.shape == (2, 7)


def test_bad_shapes_rejected(tiny_network, tiny_config):
    with pytest.raises(Ss3dError):
        tiny_network.encode(torch.rand(1, 1, 64, 64))
    with pytest.raises(Ss3dError):
        tiny_network.decode(torch.zeros(1, tiny_config.latent_dim + 1), torch.rand(1, 4, 3))
    with pytest.raises(Ss3dError):
        tiny_network.decode(torch.zeros(2, tiny_config.latent_dim), torch.rand(1, 4, 3))


def test_decoder_is_the_film_siren_formula(tiny_network, tiny_config):
    """The fused implementation equals sin(omega * freq_i * (W h + b) + shift_i) evaluated object by object."""
    dec, h_dim, layers = tiny_network.decoder, tiny_config.hidden, tiny_config.modulated_layers
    z = torch.randn(3, tiny_config.latent_dim) * 0.3
    points = torch.rand(3, 11, 3) - 0.5
    sigma, rgb = tiny_network.decode(z, points)
    with torch.inference_mode():  # the in-place inference path computes the same
        sigma_inference, rgb_inference = tiny_network.decode(z, points)
    torch.testing.assert_close(sigma_inference, sigma.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rgb_inference, rgb.detach(), rtol=1e-5, atol=1e-6)
    for b in range(3):
        freq = z[b, : layers * h_dim].view(layers, h_dim) + 1
        shift = z[b, layers * h_dim :].view(layers, h_dim)
        h = torch.sin(tiny_config.omega0 * (points[b] @ dec.first.weight.T + dec.first.bias))
        for i, layer in enumerate(dec.layers):
            h = torch.sin(tiny_config.omega0 * freq[i] * (h @ layer.weight.T + layer.bias) + shift[i])
        raw = h @ dec.head.weight.T + dec.head.bias
        torch.testing.assert_close(sigma[b], raw[:, 3] * tiny_network.config.density_scale, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(rgb[b], raw[:, :3], rtol=1e-4, atol=1e-5)


def _plain_film_siren(dec, z: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """The formula written plainly, differentiated by autograd: the reference for the lean training pass."""
    b, lh = z.shape[0], dec.layers_count * dec.hidden
    freq = (z[:, :lh] + 1).view(b, dec.layers_count, 1, dec.hidden)
    shift = z[:, lh:].view(b, dec.layers_count, 1, dec.hidden)
    h = torch.sin(dec.omega0 * dec.first(points))
    for i, layer in enumerate(dec.layers):
        h = torch.sin(dec.omega0 * freq[:, i] * layer(h) + shift[:, i])
    return dec.head(h)


def test_the_lean_training_pass_has_the_plain_formulas_gradients(tiny_config, monkeypatch):
    from ss3d_model.network import FilmSirenDecoder

    monkeypatch.setattr("ss3d_model.network.LEAN_MIN_VALUES", 0)  # lean at any size

    torch.manual_seed(0)
    dec = FilmSirenDecoder(8, 3, 30.0).double()
    z = (torch.randn(2, 2 * 3 * 8, dtype=torch.float64) * 0.3).requires_grad_()
    points = (torch.rand(2, 5, 3, dtype=torch.float64) - 0.5).requires_grad_()
    weights = torch.randn(2, 5, 4, dtype=torch.float64)
    lean = torch.autograd.grad((dec(z, points) * weights).sum(), [z, points, *dec.parameters()])
    plain = torch.autograd.grad((_plain_film_siren(dec, z, points) * weights).sum(), [z, points, *dec.parameters()])
    for a, b in zip(lean, plain):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda zz, pp: dec(zz, pp), (z, points))


def test_the_lean_training_pass_keeps_a_third_of_the_activations(tiny_config, monkeypatch):
    from ss3d_model.network import FilmSirenDecoder

    monkeypatch.setattr("ss3d_model.network.LEAN_MIN_VALUES", 2000 * 64 * 5)  # this call is just large enough

    dec = FilmSirenDecoder(64, 5, 30.0)
    z, points = (torch.randn(1, 2 * 5 * 64) * 0.3).requires_grad_(), torch.rand(1, 2000, 3) - 0.5  # as in training
    kept = []
    for forward in (dec, lambda zz, pp: _plain_film_siren(dec, zz, pp)):
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            forward(z, points)
        kept.append(sum(n for n in sizes if n >= 2000 * 64))  # the per-point [N, H] tensors
    assert kept[0] == 2000 * 64 * 6  # the first layer's product and one product per modulated layer
    assert kept[1] >= 2.5 * kept[0]  # plain autograd: 3 per modulated layer and 2 for the first


def test_siren_init_bounds(tiny_network, tiny_config):
    dec = tiny_network.decoder
    assert dec.first.weight.abs().max() <= 1 / 3
    bound = math.sqrt(6 / tiny_config.hidden) / tiny_config.omega0
    assert all(layer.weight.abs().max() <= bound for layer in [*dec.layers, dec.head])


def test_objects_do_not_share_state(tiny_config):
    a, b = ReconstructionNetwork(tiny_config), ReconstructionNetwork(tiny_config)
    assert a.decoder.first.weight.data_ptr() != b.decoder.first.weight.data_ptr()
    assert not torch.equal(a.decoder.first.weight, b.decoder.first.weight)


def test_encoder_normalises_inputs(tiny_network):
    """A constant ImageNet-mean image becomes zeros before the trunk."""
    enc = tiny_network.encoder
    mean_image = enc.mean.expand(1, 3, 8, 8)
    assert torch.allclose((mean_image - enc.mean) / enc.std, torch.zeros(1, 3, 8, 8))
    assert "encoder.mean" not in tiny_network.state_dict()


def test_imagenet_weights_loaded_from_a_real_file(tmp_path, tiny_network):
    reference = getattr(torchvision.models, tiny_network.config.encoder_arch)(weights=None)
    path = tmp_path / "trunk.pth"
    torch.save(reference.state_dict(), path)
    assert load_imagenet_encoder(tiny_network, path)
    assert torch.equal(tiny_network.encoder.trunk.conv1.weight, reference.conv1.weight)


def test_imagenet_cache_lookup(tmp_path, monkeypatch, tiny_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert imagenet_weights_path("resnet34") == tmp_path / "hub" / "checkpoints" / "resnet34-b627a593.pth"
    assert not load_imagenet_encoder(tiny_network)  # absent: random init stays, no download
    arch = tiny_network.config.encoder_arch
    cached = imagenet_weights_path(arch)
    cached.parent.mkdir(parents=True)
    torch.save(getattr(torchvision.models, arch)(weights=None).state_dict(), cached)
    assert load_imagenet_encoder(tiny_network)


def test_bad_imagenet_files(tmp_path, tiny_network):
    with pytest.raises(Ss3dError, match="no such"):
        load_imagenet_encoder(tiny_network, tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a weights file")
    with pytest.raises(Ss3dError, match="not a readable"):
        load_imagenet_encoder(tiny_network, junk)
    other = tmp_path / "other.pth"
    wrong_arch = "resnet50" if tiny_network.config.encoder_arch != "resnet50" else "resnet18"
    torch.save(getattr(torchvision.models, wrong_arch)(weights=None).state_dict(), other)
    with pytest.raises(Ss3dError):
        load_imagenet_encoder(tiny_network, other)


@pytest.mark.slow
def test_compiled_decoder_matches_eager(tiny_network, tiny_config):
    z = torch.randn(2, tiny_config.latent_dim) * 0.2
    points = torch.rand(2, 300, 3) - 0.5
    keys = set(tiny_network.state_dict())
    with torch.inference_mode():
        eager = tiny_network.decode(z, points)
        if not tiny_network.enable_compile():
            pytest.skip("torch.compile is unavailable on this machine")
        compiled = tiny_network.decode(z, points)
        other_size = tiny_network.decode(z, points[:, :123])
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    assert other_size[0].shape == (2, 123)
    assert set(tiny_network.state_dict()) == keys  # compiling adds nothing to checkpoints
    tiny_network.disable_compile()


def test_a_compiled_decoder_that_disagrees_with_the_eager_one_is_not_used(tiny_network, tiny_config, monkeypatch):
    # A stand-in for a miscompile (measured once: a cache shared across CPU kernel capabilities gave outputs off by
    # about 1): the compiled function is off by 0.01, which the check before use must catch.
    def miscompile(fn, **kwargs):
        return lambda z, points: fn(z, points) + 0.01

    monkeypatch.setattr(torch, "compile", miscompile)
    z = torch.randn(2, tiny_config.latent_dim) * 0.2
    points = torch.rand(2, 50, 3) - 0.5
    with torch.inference_mode():
        eager = tiny_network.decode(z, points)
        assert not tiny_network.enable_compile()
        after = tiny_network.decode(z, points)
    torch.testing.assert_close(after, eager, rtol=0, atol=0)


@pytest.fixture()
def pixel_network(tiny_config) -> ReconstructionNetwork:
    torch.manual_seed(0)
    return ReconstructionNetwork(dataclasses.replace(tiny_config, pixel_features=4)).eval()


def test_a_pixel_aligned_code_carries_the_feature_map_and_the_projection(pixel_network):
    config = pixel_network.config
    size = config.input_size
    images = torch.rand(2, 3, size, size)
    crop = torch.tensor([[1.0, 0.0, 0.0]] * 2)
    projection = photo_projection(crop, size, size, size)
    code = pixel_network.encode(images, projection)
    side = config.feature_side
    assert code.shape == (2, config.code_dim) == (2, config.latent_dim + 4 * side * side + 12)
    _, features = pixel_network.encoder(images)
    assert features.shape == (2, 4, side, side)      # the trunk's stride-4 map
    torch.testing.assert_close(code[:, :config.latent_dim], pixel_network.encoder(images)[0])
    torch.testing.assert_close(code[:, -12:].reshape(2, 3, 4), projection)
    sigma, rgb = pixel_network.decode(code, torch.rand(2, 9, 3) - 0.5)
    assert sigma.shape == (2, 9) and rgb.shape == (2, 9, 3)
    with pytest.raises(Ss3dError, match="projection"):
        pixel_network.encode(images)


def test_points_read_the_feature_map_where_they_project(pixel_network):
    """A feature map holding each cell's own column and row: a point reads back where it projects."""
    config = pixel_network.config
    side = config.feature_side
    ramp = (torch.arange(side, dtype=torch.float32) + 0.5) / side * 2 - 1       # cell centres in [-1, 1]
    features = torch.zeros(1, 4, side, side)
    features[0, 0] = ramp[None, :]                                             # u
    features[0, 1] = ramp[:, None]                                             # v
    projection = photo_projection(torch.tensor([[1.0, 0.0, 0.0]]), config.input_size, config.input_size,
                                  config.input_size)
    code = torch.cat([torch.zeros(1, config.latent_dim), features.flatten(1), projection.flatten(1)], 1)
    # Points in the view frame (camera on -Y at VIEW_DISTANCE looking at the origin, Z up): x right, z up.
    points = torch.tensor([[[0.0, 0.0, 0.0], [0.15, 0.0, 0.0], [0.0, 0.3, -0.1], [-0.12, -0.2, 0.08]]])
    read = pixel_network.pixel_features_at(code, points)[0]
    depth = VIEW_DISTANCE + points[0, :, 1]
    expected_u = PHOTO_FOCAL_PER_SIDE * points[0, :, 0] / depth * 2   # focal per side, over half the side
    expected_v = -PHOTO_FOCAL_PER_SIDE * points[0, :, 2] / depth * 2
    torch.testing.assert_close(read[:, 0], expected_u, atol=1e-5, rtol=0)
    torch.testing.assert_close(read[:, 1], expected_v, atol=1e-5, rtol=0)
    # Outside the crop: zeros (nothing is read from beyond the image).
    far = pixel_network.pixel_features_at(code, torch.tensor([[[2.5, 0.0, 0.0]]]))
    assert torch.all(far == 0)


def test_pixel_features_change_the_field_only_where_points_project(pixel_network):
    config = pixel_network.config
    side = config.feature_side
    projection = photo_projection(torch.tensor([[1.0, 0.0, 0.0]]), config.input_size, config.input_size,
                                  config.input_size)
    z = 0.2 * torch.randn(1, config.latent_dim)
    features = torch.zeros(1, 4, side, side)
    changed = features.clone()
    changed[0, :, : side // 4, : side // 4] = 3.0                                # the crop's top-left corner
    left_top = torch.tensor([[[-0.4, 0.0, 0.4]]])                              # projects there
    right_bottom = torch.tensor([[[0.4, 0.0, -0.4]]])
    with torch.no_grad():
        for point, moves in ((left_top, True), (right_bottom, False)):
            before = pixel_network.decode(torch.cat([z, features.flatten(1), projection.flatten(1)], 1), point)[0]
            after = pixel_network.decode(torch.cat([z, changed.flatten(1), projection.flatten(1)], 1), point)[0]
            assert bool((before != after).any()) == moves


def test_pixel_layers_give_the_modulated_layers_per_point_phases(tiny_config):
    """With pixel_layers = L + 1 the pixel features reach the field even when the first layer's path is cut."""
    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config, pixel_features=4, pixel_layers=tiny_config.modulated_layers + 1)
    network = ReconstructionNetwork(config).eval()
    assert len(network.decoder.pixel_shifts) == config.modulated_layers
    with torch.no_grad():
        network.decoder.pixel.weight.zero_()
        network.decoder.pixel.bias.zero_()
    z, points = 0.2 * torch.randn(1, config.latent_dim), torch.rand(1, 5, 3) - 0.5
    features = torch.randn(1, 5, 4)
    with torch.no_grad():
        assert not torch.allclose(network.decoder(z, points, features), network.decoder(z, points, 0 * features))
        for shift in network.decoder.pixel_shifts:
            shift.weight.zero_()
        torch.testing.assert_close(network.decoder(z, points, features), network.decoder(z, points, 0 * features))
    with pytest.raises(Ss3dError, match="pixel_layers"):
        dataclasses.replace(tiny_config, pixel_features=4, pixel_layers=config.modulated_layers + 2)
