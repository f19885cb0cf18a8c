import numpy as np
import pytest
import trimesh
from PIL import Image
from typer.testing import CliRunner

import ss3d_model.reconstruct as reconstruct_module
from ss3d_model.checkpoint import read_checkpoint_meta
from ss3d_model.cli import app

runner = CliRunner()


def rgba_image(path, size=(90, 70), box=(20, 15, 60, 50)):
    data = np.zeros((size[1], size[0], 4), np.uint8)
    x0, y0, x1, y1 = box
    data[y0:y1, x0:x1] = [200, 60, 30, 255]
    Image.fromarray(data).save(path)
    return path


def reconstruct(*args):
    return runner.invoke(app, ["reconstruct", "--preset", "tiny", "--threshold", "0.02", *map(str, args)])


def test_init_writes_a_random_init_checkpoint(checkpoint):
    meta = read_checkpoint_meta(checkpoint)
    assert meta.stage == "init" and meta.preset == "tiny" and meta.encoder_init == "random"
    assert meta.model_config["hidden"] == 32


@pytest.mark.parametrize("suffix", [".glb", ".ply", ".obj"])
def test_reconstruct_writes_a_valid_mesh(tmp_path, checkpoint, suffix):
    image = rgba_image(tmp_path / "chair.png")
    out = tmp_path / f"chair{suffix}"
    result = reconstruct("--checkpoint", checkpoint, "--image", image, "--out", out,
                         *(["--turntable", tmp_path / "t.png"] if suffix == ".glb" else []))
    assert result.exit_code == 0, result.output
    mesh = trimesh.load(out, force="mesh")
    assert len(mesh.faces) > 0 and np.abs(mesh.vertices).max() <= 0.55 + 1e-5
    if suffix == ".glb":
        assert Image.open(tmp_path / "t.png").size == (4 * 192, 192)


def test_separate_mask_and_batch_mode(tmp_path, checkpoint):
    folder = tmp_path / "images"
    folder.mkdir()
    masks = tmp_path / "masks"
    masks.mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(folder / f"{name}.jpg")
        mask = np.zeros((40, 50), np.uint8)
        mask[10:30, 5:45] = 255
        Image.fromarray(mask).save(masks / f"{name}.png")
    out = tmp_path / "meshes"
    result = reconstruct("--checkpoint", checkpoint, "--image", folder, "--mask", masks, "--out", out,
                         "--format", "ply")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.ply", "b.ply"]


def error_of(result):
    assert result.exit_code == 2, result.output
    return result.output


def test_bad_inputs(tmp_path, checkpoint, monkeypatch):
    good = rgba_image(tmp_path / "good.png")
    out = tmp_path / "o.glb"
    base = ["--checkpoint", checkpoint, "--out", out]
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG not really")
    assert "unreadable image" in error_of(reconstruct(*base, "--image", junk))
    assert "no such image" in error_of(reconstruct(*base, "--image", tmp_path / "missing.png"))
    empty = tmp_path / "empty.png"
    Image.fromarray(np.zeros((30, 30, 4), np.uint8)).save(empty)
    assert "mask is empty" in error_of(reconstruct(*base, "--image", empty))
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(rgb)
    assert "no foreground object" in error_of(reconstruct(*base, "--image", rgb))  # uniform: no automatic mask
    small_mask = tmp_path / "small.png"
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(small_mask)
    assert "10x10 but the image is 30x30" in error_of(reconstruct(*base, "--image", rgb, "--mask", small_mask))
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((30, 30), 40000, np.uint16)).save(deep)
    assert "not 8-bit" in error_of(reconstruct(*base, "--image", rgb, "--mask", deep))
    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((30, 30), 9, np.uint8)).save(gray)
    assert "grayscale" in error_of(reconstruct(*base, "--image", gray, "--mask", small_mask))
    assert "single-channel" in error_of(reconstruct(*base, "--image", rgb, "--mask", rgb))
    monkeypatch.setattr(reconstruct_module, "MAX_PIXELS", 1000)
    assert "too large" in error_of(reconstruct(*base, "--image", good))


def test_bad_outputs_and_checkpoints(tmp_path, checkpoint):
    good = rgba_image(tmp_path / "good.png")
    assert "must end in" in error_of(reconstruct("--checkpoint", checkpoint, "--image", good,
                                                 "--out", tmp_path / "o.stl"))
    assert "no such file" in error_of(reconstruct("--checkpoint", tmp_path / "nope.safetensors", "--image", good,
                                                  "--out", tmp_path / "o.glb"))
    assert "is a folder" in error_of(reconstruct("--checkpoint", checkpoint, "--image", good, "--image", good,
                                                 "--out", tmp_path / "o.glb"))
    result = runner.invoke(app, ["reconstruct", "--preset", "tiny", "--checkpoint", str(checkpoint),
                                 "--image", str(good), "--out", str(tmp_path / "o.glb")])
    assert "no surface" in error_of(result)
    assert not (tmp_path / "o.glb").exists()


def test_extraction_settings_come_from_the_checkpoint_unless_a_preset_is_named():
    from ss3d_data import Ss3dError, load_preset
    from ss3d_model import CheckpointMeta
    from ss3d_model.reconstruct import inference_settings

    recorded = {**load_preset("cpu").section("extract"), "density_threshold": 1.75}
    meta = CheckpointMeta(model_config={}, stage="pretrain", preset="my-experiment",
                          extra={"extract": recorded, "mask_threshold": 0.4})
    extract, mask_threshold = inference_settings(meta)
    assert (extract.density_threshold, extract.resolution, mask_threshold) == (1.75, 64, 0.4)
    assert inference_settings(meta, "paper")[0].density_threshold == 3.0
    # Older checkpoints record only the preset's name.
    assert inference_settings(CheckpointMeta(model_config={}, stage="pretrain", preset="cpu"))[0].density_threshold \
        == load_preset("cpu").section("extract")["density_threshold"]
    with pytest.raises(Ss3dError, match="preset 'my-experiment' is not available"):
        inference_settings(CheckpointMeta(model_config={}, stage="pretrain", preset="my-experiment"))
