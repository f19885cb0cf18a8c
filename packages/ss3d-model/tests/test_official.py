"""``ss3d-model import-official`` on a file laid out like the authors' ``distilled_model.torch`` (random tensors;
the real weights are never fetched): the converted network computes what the authors' formulas compute on the raw
tensors, bad files are refused in one line with nothing written, and reconstruct, serve and the input crop use the
recorded settings."""

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms.functional as TF
import trimesh
from PIL import Image
from typer.testing import CliRunner

from ss3d_data.errors import Ss3dError
from ss3d_model.checkpoint import CheckpointMeta, read_checkpoint_meta
from ss3d_model.cli import app
from ss3d_model.io import load_network
from ss3d_model.official import name_table, release_layout
from ss3d_model.reconstruct import (
    PLAIN_CROP,
    InputCrop,
    image_tensor,
    inference_settings,
    input_settings,
    override_grid,
    reconstruct_mesh,
)
from ss3d_model.serve import Reconstructor, Upload

runner = CliRunner()
LATENT, HIDDEN, LAYERS = 2560, 256, 5


def authors_layout() -> dict[str, tuple[int, ...]]:
    """The release's names and shapes as the authors' model definition gives them, written out independently of
    the importer's table: a torchvision ResNet-34 without ``fc`` under ``encoder.features``, the latent head, the
    FiLM-SIREN under ``decoder.net``."""
    trunk = torchvision.models.resnet34(weights=None).state_dict()
    layout = {f"encoder.features.{k}": tuple(v.shape) for k, v in trunk.items() if not k.startswith("fc.")}
    layout.update({"encoder.fc.0.weight": (LATENT, 512), "encoder.fc.0.bias": (LATENT,)})
    for name in ("linear1", "linear2"):
        layout.update({f"encoder.fc.3.{name}.weight": (LATENT, LATENT), f"encoder.fc.3.{name}.bias": (LATENT,)})
    layout.update({"decoder.net.0.linear.weight": (HIDDEN, 3), "decoder.net.0.linear.bias": (HIDDEN,)})
    for i in range(1, LAYERS + 1):
        layout.update({f"decoder.net.{i}.linear.weight": (HIDDEN, HIDDEN), f"decoder.net.{i}.linear.bias": (HIDDEN,)})
    layout.update({"decoder.net.6.weight": (4, HIDDEN), "decoder.net.6.bias": (4,)})
    return layout


def random_release(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors at scales that keep every stage alive: He-scaled convolutions, batch-norm statistics of a
    trained network (non-trivial means and variances, a large step counter), a unit-scale latent, SIREN-scaled sine
    layers, and a head whose density straddles the level 3.0 (so meshes have surfaces)."""
    g = torch.Generator().manual_seed(seed)

    def uniform(shape, bound):
        return (torch.rand(shape, generator=g) * 2 - 1) * bound

    state = {}
    for name, shape in authors_layout().items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(187_500)
        elif name.endswith("running_mean"):
            state[name] = 0.2 * torch.randn(shape, generator=g)
        elif name.endswith("running_var"):
            state[name] = 0.5 + torch.rand(shape, generator=g) * 1.5
        elif name.startswith("encoder.features") and len(shape) == 4:
            state[name] = torch.randn(shape, generator=g) * (2.0 / np.prod(shape[1:])) ** 0.5
        elif name.startswith("encoder.features") and name.endswith("weight"):
            state[name] = 0.5 + torch.rand(shape, generator=g)          # batch-norm scales
        elif name.startswith("encoder.features"):
            state[name] = 0.1 * torch.randn(shape, generator=g)         # batch-norm shifts
        elif name.startswith("encoder.fc"):
            state[name] = torch.randn(shape, generator=g) / shape[-1] ** 0.5 if name.endswith("weight") else \
                0.05 * torch.randn(shape, generator=g)
        elif name == "decoder.net.0.linear.weight":
            state[name] = uniform(shape, 1 / 3)
        elif name == "decoder.net.6.weight":
            state[name] = uniform(shape, 0.3)
        elif name == "decoder.net.6.bias":
            state[name] = torch.tensor([0.1, -0.2, 0.3, 3.0])
        elif name.endswith("weight"):
            state[name] = uniform(shape, (6 / HIDDEN) ** 0.5 / 30)
        else:
            state[name] = uniform(shape, 0.05)
    return state


def reference(state: dict[str, torch.Tensor], images: torch.Tensor, points: torch.Tensor):
    """The authors' formulas on the raw tensors, in float64: -> (z, density [B, N], colour [B, N, 3]). ``points`` are
    in the authors' axes."""
    s = {k: v.double() if v.is_floating_point() else v for k, v in state.items()}
    trunk = torchvision.models.resnet34(weights=None)
    trunk.fc = torch.nn.Identity()
    trunk.load_state_dict({k.removeprefix("encoder.features."): v for k, v in s.items()
                           if k.startswith("encoder.features.")})
    trunk.double().eval()
    # ImageNet's statistics at float32 precision, as any float32 network holds them (the authors' included).
    mean = torch.tensor([0.485, 0.456, 0.406]).double().view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).double().view(1, 3, 1, 1)
    with torch.no_grad():
        features = trunk((images.double() - mean) / std)
        x = F.leaky_relu(F.layer_norm(F.linear(features, s["encoder.fc.0.weight"], s["encoder.fc.0.bias"]),
                                      (LATENT,)), 0.01)
        inner = F.leaky_relu(F.linear(x, s["encoder.fc.3.linear1.weight"], s["encoder.fc.3.linear1.bias"]), 0.01)
        z = F.leaky_relu(x + F.linear(inner, s["encoder.fc.3.linear2.weight"], s["encoder.fc.3.linear2.bias"]), 0.01)
        freq, shift = z[:, : LAYERS * HIDDEN] + 1, z[:, LAYERS * HIDDEN :]
        h = torch.sin(30 * F.linear(points.double(), s["decoder.net.0.linear.weight"], s["decoder.net.0.linear.bias"]))
        for i in range(1, LAYERS + 1):
            part = slice((i - 1) * HIDDEN, i * HIDDEN)
            pre = F.linear(h, s[f"decoder.net.{i}.linear.weight"], s[f"decoder.net.{i}.linear.bias"])
            h = torch.sin(30 * freq[:, None, part] * pre + shift[:, None, part])
        raw = F.linear(h, s["decoder.net.6.weight"], s["decoder.net.6.bias"])
    return z, raw[..., 3], torch.sigmoid(raw[..., :3])


def authors_crop(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The authors' demo preprocessing, step by step with the library they used (torchvision on PIL images)."""
    soft = mask.astype(np.float32) / 255.0
    inside = soft > 0.3
    rows, cols = np.nonzero(inside.any(1))[0], np.nonzero(inside.any(0))[0]
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    picture = Image.fromarray((rgb[box] * soft[box][..., None]).astype(np.uint8))
    w, h = picture.size
    side = max(w, h)
    picture = TF.pad(picture, [int((side - w) / 2), int((side - h) / 2)] * 2, 0, "constant")
    picture = TF.resize(TF.pad(picture, 30, 0, "constant"), [224, 224])
    return np.asarray(picture)


def photo() -> tuple[np.ndarray, np.ndarray]:
    """A 320x260 photo and a soft elliptical mask whose anti-aliased rim holds every value (76 and 77 included)."""
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (260, 320, 3), dtype=np.uint8)
    y, x = np.mgrid[:260, :320]
    distance = np.hypot((x - 150) / 95.0, (y - 140) / 60.0)
    mask = (np.clip((1.0 - distance) * 40 + 0.5, 0, 1) * 255).round().astype(np.uint8)
    return rgb, mask


def save_file(tmp_path: Path, name: str, obj) -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    state = random_release()
    return state, save_file(tmp_path_factory.mktemp("release"), "distilled_model.torch", state)


@pytest.fixture(scope="module")
def converted(release, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "official.safetensors"
    result = runner.invoke(app, ["import-official", str(release[1]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "CC-BY-NC 4.0" in result.output
    return out


def test_the_importers_table_covers_the_authors_layout_exactly():
    layout = authors_layout()
    assert {k: v[0] for k, v in release_layout().items()} == layout
    table = name_table()
    downsample = "layer2.0.downsample.1.running_var"
    assert table[f"encoder.features.{downsample}"] == f"encoder.trunk.{downsample}"
    assert table["encoder.fc.3.linear2.bias"] == "encoder.residual_out.bias"
    assert table["decoder.net.0.linear.weight"] == "decoder.first.weight"
    assert table["decoder.net.5.linear.bias"] == "decoder.layers.4.bias"
    assert table["decoder.net.6.weight"] == "decoder.head.weight"


def test_converted_network_computes_the_authors_formulas(release, converted):
    state, _ = release
    network, _ = load_network(converted)
    network.double()
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 224, 224, generator=g)
    points = torch.rand(2, 500, 3, generator=g) * 1.2 - 0.6              # ss3d's canonical frame
    x, y, zc = points.unbind(-1)
    want_z, want_density, want_colour = reference(state, images, torch.stack([x, zc, -y], -1))
    with torch.no_grad():
        z = network.encode(images.double())
        density, logits = network.decode(z, points.double())
    torch.testing.assert_close(z, want_z, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(density, want_density, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(torch.sigmoid(logits), want_colour, rtol=1e-8, atol=1e-8)
    # Not a degenerate field: densities on both sides of the level, colours spread.
    assert (want_density > 3).float().mean().item() > 0.1 and (want_density < 3).float().mean().item() > 0.1
    assert want_colour.std().item() > 0.05


def test_the_checkpoint_records_origin_input_and_extraction(release, converted):
    meta = read_checkpoint_meta(converted)
    assert (meta.stage, meta.preset, meta.encoder_init) == ("distill", "paper", "imagenet")
    origin = meta.extra["origin"]
    assert origin["sha256"] == hashlib.sha256(release[1].read_bytes()).hexdigest()
    assert origin["file"] == "distilled_model.torch" and "CC-BY-NC 4.0" in origin["licence"]
    assert origin["project_page"] == "https://shubhtuls.github.io/ss3d/"
    extract, mask_threshold = inference_settings(meta)
    assert (extract.resolution, extract.coarse_resolution, extract.density_threshold, extract.box_half_size,
            extract.colours) == (128, 32, 3.0, 0.5, "network")
    assert round(mask_threshold * 255) == 77  # the authors' mask > 0.3 on 8-bit masks
    assert input_settings(meta) == InputCrop(margin_px=30, soft_mask=True)
    # A preset changes the meshing, never the crop the weights were trained with.
    assert inference_settings(meta, "tiny")[1] == mask_threshold
    result = runner.invoke(app, ["info", str(converted)])
    assert result.exit_code == 0 and '"stage": "distill"' in result.output


def test_the_input_is_the_authors_crop_and_other_checkpoints_keep_theirs(converted):
    rgb, mask = photo()
    meta = read_checkpoint_meta(converted)
    _, threshold = inference_settings(meta)
    tensor = image_tensor(rgb, mask, 224, threshold, input_settings(meta))
    ours = (tensor[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(ours, authors_crop(rgb, mask))
    # 30 px of the photo's scale around the square-padded box: about 30 * 224 / (191 + 60) = 27 px here.
    cols = np.nonzero(ours.any(axis=(0, 2)))[0]
    assert 24 <= cols[0] <= 28 and 195 <= cols[-1] <= 199
    # A checkpoint without an input record (every ss3d-trained one) is cropped as before: the box fills the side.
    plain = CheckpointMeta(model_config={}, stage="pretrain", preset="cpu")
    assert input_settings(plain) == PLAIN_CROP
    crop = image_tensor(rgb, mask, 224, 0.5, input_settings(plain))[0].numpy()
    cols = np.nonzero(crop.any(axis=(0, 1)))[0]
    assert cols[0] <= 2 and cols[-1] >= 221  # the ellipse's tips are single pixels


def test_bad_input_records_are_refused():
    for record, text in (([30], "must be an object"), ({"crop_margin": 30}, "unknown key"),
                         ({"crop_margin_px": 30.5}, "wrong type"), ({"soft_mask": 1}, "wrong type"),
                         ({"crop_margin_px": -1}, "out of range")):
        with pytest.raises(Ss3dError, match=text):
            input_settings(CheckpointMeta(model_config={}, stage="distill", extra={"input": record}))


def test_reconstruct_meshes_with_the_recorded_crop(converted, tmp_path):
    rgb, mask = photo()
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "mesh.ply"
    result = runner.invoke(app, ["reconstruct", "--checkpoint", str(converted), "--image", str(tmp_path / "photo.png"),
                                 "--mask", str(tmp_path / "mask.png"), "--out", str(out), "--resolution", "16",
                                 "--coarse-resolution", "16"])
    assert result.exit_code == 0, result.output
    written = trimesh.load(out, process=False)
    network, meta = load_network(converted)
    extract, threshold = inference_settings(meta)
    extract = override_grid(extract, 16, 16)
    expected = reconstruct_mesh(network, rgb, mask, extract, threshold, crop=input_settings(meta))
    plain = reconstruct_mesh(network, rgb, mask, extract, threshold, crop=PLAIN_CROP)
    assert len(written.faces) > 0
    np.testing.assert_allclose(written.vertices, expected.vertices, atol=1e-6)
    assert len(plain.vertices) != len(expected.vertices) or not np.allclose(plain.vertices, expected.vertices)


def test_serve_feeds_the_encoder_the_authors_crop(converted):
    rgb, mask = photo()
    reconstructor = Reconstructor.load(converted, resolution=8, coarse_resolution=8)
    assert reconstructor.crop == InputCrop(30, True) and reconstructor.extract.density_threshold == 3.0
    seen = []
    hook = reconstructor.network.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        uploads = []
        for name, array in (("photo.png", rgb), ("mask.png", mask)):
            buffer = io.BytesIO()
            Image.fromarray(array).save(buffer, format="PNG")
            uploads.append(Upload(name, buffer.getvalue()))
        result = reconstructor.run(*uploads)
    finally:
        hook.remove()
    assert result.faces > 0 and result.mask_source == "mask file"
    fed = (seen[0][0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(fed, authors_crop(rgb, mask))


def test_grid_overrides():
    extract = inference_settings(CheckpointMeta(model_config={}, stage="distill", preset="paper"))[0]
    assert (override_grid(extract, 99, 99).resolution, override_grid(extract, 99, 99).coarse_resolution) == (99, 99)
    assert override_grid(extract, 64).coarse_resolution == 32       # the recorded coarse grid still divides it
    assert override_grid(extract, 100).coarse_resolution == 100     # it does not: dense
    with pytest.raises(Ss3dError, match="power of two"):
        override_grid(extract, 128, 24)
    result = runner.invoke(app, ["reconstruct", "--checkpoint", "x.safetensors", "--image", "x.png", "--out", "x.ply",
                                 "--resolution", "1"])
    assert result.exit_code == 2 and result.output.startswith("error: --resolution must be >= 2")


class Payload:
    """Unpickling this would write a file: the importer must refuse it without doing so."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.write_text, (self.marker, "the importer ran code from the file")


class Opaque:
    """An object of a class defined here: unpickling it would import this test module."""


def refused(tmp_path: Path, source: Path, text: str) -> None:
    out = tmp_path / "out.safetensors"
    result = runner.invoke(app, ["import-official", str(source), "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("error: ") and len(lines) <= 2, result.output  # the error (+ a hint)
    assert text in lines[0], result.output
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))


def test_code_and_non_tensor_entries_are_refused(tmp_path):
    marker = tmp_path / "ran.txt"
    refused(tmp_path, save_file(tmp_path, "code.torch", {"decoder.net.6.bias": Payload(marker)}),
            "holds Python objects")
    assert not marker.exists()
    refused(tmp_path, save_file(tmp_path, "object.torch", {"decoder.net.6.bias": Opaque()}), "Opaque")
    refused(tmp_path, save_file(tmp_path, "int.torch", {"decoder.net.6.bias": 3}), "'decoder.net.6.bias' is a int")
    refused(tmp_path, save_file(tmp_path, "nested.torch", {"state_dict": {"a": torch.zeros(1)}}), "nested mapping")
    refused(tmp_path, save_file(tmp_path, "list.torch", [torch.zeros(1)]), "holds a list, not a state dict")
    refused(tmp_path, tmp_path / "absent.torch", "no such file")


def test_truncated_file_is_refused(release, tmp_path):
    data = release[1].read_bytes()
    (tmp_path / "cut.torch").write_bytes(data[: len(data) // 2])
    refused(tmp_path, tmp_path / "cut.torch", "not a readable PyTorch file")


def test_missing_unexpected_and_misshaped_tensors_are_refused_by_name(release, tmp_path):
    state = release[0]
    missing = {k: v for k, v in state.items() if k != "encoder.fc.0.bias"}
    refused(tmp_path, save_file(tmp_path, "missing.torch", missing), "missing 1 (encoder.fc.0.bias)")
    extra = {**state, "encoder.features.fc.weight": torch.zeros(1000, 512)}
    refused(tmp_path, save_file(tmp_path, "extra.torch", extra), "unexpected 1 (encoder.features.fc.weight)")
    shaped = {**state, "decoder.net.6.weight": torch.zeros(3, 256)}
    refused(tmp_path, save_file(tmp_path, "shape.torch", shaped), "'decoder.net.6.weight' is [3, 256]")
    broken = {**state, "encoder.fc.3.linear1.bias": torch.full((2560,), float("nan"))}
    refused(tmp_path, save_file(tmp_path, "nan.torch", broken), "'encoder.fc.3.linear1.bias' holds NaN")
