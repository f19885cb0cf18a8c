"""Automatic masks: ``auto_mask`` on drawn images, ``load_input``'s choice of mask, and ``ss3d-model reconstruct`` on
plain RGB photos (the mask it used is written next to the mesh). Agreement with rendered silhouettes is measured in
the top-level tests/test_auto_mask.py, which needs Blender."""

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from ss3d_data.errors import Ss3dError
from ss3d_model.cli import app
from ss3d_model.reconstruct import load_input
from ss3d_model.segment import auto_mask

runner = CliRunner()


def photo(size=(160, 120), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A "product photo": a two-tone object (ellipse body, box foot) on a noisy gradient -> (rgb, true mask bool)."""
    width, height = size
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, width)[None, :, None]
    backdrop = (1 - t) * np.array([70, 110, 160]) + t * np.array([150, 170, 190])
    backdrop = np.broadcast_to(backdrop, (height, width, 3)) + rng.normal(0, 6, (height, width, 3))
    image = Image.fromarray(np.clip(backdrop, 0, 255).astype(np.uint8))
    silhouette = Image.new("L", size)
    body = (0.32 * width, 0.2 * height, 0.68 * width, 0.7 * height)
    foot = (0.42 * width, 0.68 * height, 0.58 * width, 0.82 * height)
    draw, outline = ImageDraw.Draw(image), ImageDraw.Draw(silhouette)
    draw.ellipse(body, fill=(200, 60, 40))
    draw.rectangle(foot, fill=(60, 40, 30))
    outline.ellipse(body, fill=255)
    outline.rectangle(foot, fill=255)
    return np.asarray(image), np.asarray(silhouette) > 0


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_auto_mask_finds_the_object():
    rgb, true = photo()
    mask = auto_mask(rgb)
    assert mask.dtype == np.uint8 and mask.shape == true.shape and set(np.unique(mask)) == {0, 255}
    assert iou(mask > 0, true) > 0.9
    # larger than the working size: segmented on a downscaled copy, the mask comes back at full size
    big_rgb, big_true = photo((800, 600))
    assert iou(auto_mask(big_rgb) > 0, big_true) > 0.9


@pytest.mark.parametrize("value", [0, 128, 255])
def test_a_uniform_image_has_no_foreground(value):
    with pytest.raises(Ss3dError, match="no foreground object found") as caught:
        auto_mask(np.full((60, 80, 3), value, np.uint8))
    assert "--mask" in caught.value.hint


def test_load_input_prefers_a_mask_file_then_alpha_then_automatic(tmp_path):
    rgb, true = photo()
    Image.fromarray(rgb).save(tmp_path / "photo.jpg", quality=92)
    loaded = load_input(tmp_path / "photo.jpg")
    assert loaded.mask_source == "automatic" and loaded.rgb.shape == (120, 160, 3)
    assert iou(loaded.mask > 0, true) > 0.9
    alpha = np.zeros((120, 160), np.uint8)
    alpha[10:50, 20:90] = 255
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "cutout.png")
    loaded = load_input(tmp_path / "cutout.png")
    assert loaded.mask_source == "alpha" and np.array_equal(loaded.mask, alpha)
    Image.fromarray(255 - alpha).save(tmp_path / "mask.png")
    loaded = load_input(tmp_path / "cutout.png", tmp_path / "mask.png")
    assert loaded.mask_source == "mask file" and np.array_equal(loaded.mask, 255 - alpha)
    with pytest.raises(AttributeError):
        loaded.mask_source = "alpha"  # frozen


def reconstruct(*args):
    return runner.invoke(app, ["reconstruct", "--preset", "tiny", "--threshold", "0.02", *map(str, args)])


def test_cli_on_an_rgb_jpeg_writes_the_mesh_and_the_automatic_mask(tmp_path, checkpoint):
    rgb, true = photo()
    Image.fromarray(rgb).save(tmp_path / "lamp.jpg", quality=92)
    out = tmp_path / "meshes" / "lamp.glb"
    result = reconstruct("--checkpoint", checkpoint, "--image", tmp_path / "lamp.jpg", "--out", out)
    assert result.exit_code == 0, result.output
    assert out.is_file()
    written = Image.open(out.with_name("lamp.mask.png"))
    assert written.mode == "L" and written.size == (160, 120)
    assert iou(np.asarray(written) > 0, true) > 0.9
    assert "computed automatically" in result.output and "lamp.mask.png" in result.output


def test_cli_batch_writes_a_mask_beside_each_mesh_that_needed_one(tmp_path, checkpoint):
    rgb, true = photo()
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(rgb).save(folder / "a.jpg", quality=92)
    Image.fromarray(np.dstack([rgb, true.astype(np.uint8) * 255])).save(folder / "b.png")
    result = reconstruct("--checkpoint", checkpoint, "--image", folder, "--out", tmp_path / "batch", "--format", "ply")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "batch").iterdir()) == ["a.mask.png", "a.ply", "b.ply"]


def test_cli_refuses_to_overwrite_an_input_with_the_mask(tmp_path, checkpoint):
    rgb, _ = photo()
    image = tmp_path / "chair.mask.png"
    Image.fromarray(rgb).save(image)
    result = reconstruct("--checkpoint", checkpoint, "--image", image, "--out", tmp_path / "chair.glb")
    assert result.exit_code == 2 and "would overwrite an input file" in result.output, result.output
    assert not (tmp_path / "chair.glb").exists() and np.array_equal(np.asarray(Image.open(image)), rgb)


def test_cli_on_a_uniform_image_is_one_error_line(tmp_path, checkpoint):
    image = tmp_path / "wall.jpg"
    Image.fromarray(np.full((90, 120, 3), 200, np.uint8)).save(image)
    result = reconstruct("--checkpoint", checkpoint, "--image", image, "--out", tmp_path / "wall.glb")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("error:") and "wall.jpg: no foreground object found" in lines[0], lines
    assert all(line.startswith("hint:") and "--mask" in line for line in lines[1:]), lines
    assert not (tmp_path / "wall.glb").exists() and not (tmp_path / "wall.mask.png").exists()
