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


def one_line_error(result, text):
    assert result.exit_code == 2, result.output
    assert text in result.output and len(result.output.strip().splitlines()) <= 2, result.output  # error (+ hint)


def test_outputs_never_overwrite_inputs(tmp_path, checkpoint):
    good = rgba_image(tmp_path / "good.png")
    before = good.read_bytes()
    base = ["--checkpoint", checkpoint, "--image", good]
    one_line_error(reconstruct(*base, "--out", tmp_path / "o.glb", "--turntable", good), "would overwrite an input")
    one_line_error(reconstruct(*base, "--out", tmp_path / "o.glb", "--turntable", tmp_path / "t.jpg"),
                   "must end in .png")
    copied = tmp_path / "model.glb"  # a checkpoint is read by content, whatever its name
    copied.write_bytes(checkpoint.read_bytes())
    one_line_error(reconstruct("--checkpoint", copied, "--image", good, "--out", copied), "would overwrite an input")
    # The automatic mask (<mesh stem>.mask.png) of an RGB photo must not land on an input either: e.g. a batch
    # re-run over a folder that already holds a.mask.png next to a.png.
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.png", "a.mask.png"):
        Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(folder / name)
    one_line_error(reconstruct("--checkpoint", checkpoint, "--image", folder, "--out", folder),
                   "automatic mask would overwrite an input")
    rgb = folder / "a.png"
    one_line_error(reconstruct("--checkpoint", checkpoint, "--image", rgb, "--out", tmp_path / "x.glb",
                               "--turntable", tmp_path / "x.mask.png"), "would be the same file")
    assert good.read_bytes() == before and copied.read_bytes() == checkpoint.read_bytes()
    # An existing output is simply replaced.
    (tmp_path / "o.glb").write_bytes(b"old")
    (tmp_path / "t.png").write_bytes(b"old")
    result = reconstruct(*base, "--out", tmp_path / "o.glb", "--turntable", tmp_path / "t.png")
    assert result.exit_code == 0, result.output
    assert len(trimesh.load(tmp_path / "o.glb", force="mesh").faces) > 0 and Image.open(tmp_path / "t.png").width


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf"])
def test_threshold_must_be_finite_and_positive(tmp_path, checkpoint, value):
    good = rgba_image(tmp_path / "good.png")
    result = runner.invoke(app, ["reconstruct", "--checkpoint", str(checkpoint), "--image", str(good),
                                 "--out", str(tmp_path / "o.glb"), "--threshold", value])
    one_line_error(result, "--threshold must be a finite number > 0")
    assert not (tmp_path / "o.glb").exists()
    one_line_error(runner.invoke(app, ["serve", "--checkpoint", str(checkpoint), "--threshold", value]),
                   "--threshold must be a finite number > 0")


def test_init_seed_must_not_be_negative(tmp_path):
    one_line_error(runner.invoke(app, ["init", "--preset", "tiny", "--out", str(tmp_path / "c.safetensors"),
                                       "--seed", "-1"]), "--seed must be >= 0")
    assert not (tmp_path / "c.safetensors").exists()


def test_exif_orientation_is_applied_to_images_and_masks(tmp_path):
    from ss3d_model.reconstruct import load_input

    stored = np.zeros((40, 60, 3), np.uint8)  # as a phone writes it: landscape pixels, "rotate 90 degrees" tag
    stored[:10] = [220, 30, 30]
    stored[10:] = [30, 30, 220]
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    shown = np.rot90(stored, k=-1)  # orientation 6: displayed turned 90 degrees clockwise, 40 wide and 60 high
    mask = np.zeros((60, 40), np.uint8)
    mask[5:55, 5:35] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")  # drawn on the displayed picture
    loaded = load_input(tmp_path / "phone.jpg", tmp_path / "mask.png")
    assert loaded.rgb.shape == (60, 40, 3) and np.abs(loaded.rgb.astype(int) - shown).mean() < 8
    # A mask stored sideways with the same tag is turned upright the same way.
    Image.fromarray(np.rot90(mask)).save(tmp_path / "tagged.png", exif=exif)
    assert np.array_equal(load_input(tmp_path / "phone.jpg", tmp_path / "tagged.png").mask, mask)
    Image.fromarray(np.rot90(mask)).save(tmp_path / "sideways.png")  # no tag: a genuine mismatch, in displayed size
    from ss3d_data.errors import Ss3dError

    with pytest.raises(Ss3dError, match="mask is 60x40 but the image is 40x60"):
        load_input(tmp_path / "phone.jpg", tmp_path / "sideways.png")


def test_tiny_or_elongated_inputs_are_refused(tmp_path, checkpoint):
    base = ["--checkpoint", checkpoint, "--out", tmp_path / "o.glb"]
    for size in ((2, 2), (15, 40), (400, 16)):
        path = rgba_image(tmp_path / f"{size[0]}x{size[1]}.png", size=size, box=(0, 0, size[0], size[1]))
        one_line_error(reconstruct(*base, "--image", path), f"a {size[0]}x{size[1]} image is too small or too "
                       "elongated")
    speck = rgba_image(tmp_path / "speck.png", size=(64, 64), box=(30, 30, 35, 34))
    one_line_error(reconstruct(*base, "--image", speck), "the object is only 5x4 px in the mask")
    assert not (tmp_path / "o.glb").exists()


def test_info_checks_tensors_against_the_architecture(tmp_path, checkpoint):
    from ss3d_model.checkpoint import load_checkpoint, save_checkpoint

    result = runner.invoke(app, ["info", str(checkpoint)])
    assert result.exit_code == 0 and '"parameters"' in result.output, result.output
    tensors, meta = load_checkpoint(checkpoint)
    name = min(tensors)
    tensors["renamed." + name] = tensors.pop(name)
    save_checkpoint(tmp_path / "renamed.safetensors", tensors, meta)
    one_line_error(runner.invoke(app, ["info", str(tmp_path / "renamed.safetensors")]),
                   "tensors do not match the model config")


def test_colours_come_from_the_input_photo_or_the_network(tmp_path, checkpoint):
    image = rgba_image(tmp_path / "chair.png")  # one orange object: every vertex the photo sees, or not, is orange
    colours = {}
    for source in ("input", "network"):
        out = tmp_path / f"{source}.ply"
        result = reconstruct("--checkpoint", checkpoint, "--image", image, "--out", out, "--colours", source)
        assert result.exit_code == 0, result.output
        colours[source] = trimesh.load(out, force="mesh").visual.vertex_colors[:, :3].astype(int)
    assert np.abs(colours["input"] - [200, 60, 30]).max() <= 2
    assert np.abs(colours["network"] - [200, 60, 30]).max(1).min() > 20  # an untrained decoder knows no orange
    result = reconstruct("--checkpoint", checkpoint, "--image", image, "--out", tmp_path / "x.ply",
                         "--colours", "photo")
    assert result.exit_code != 0 and "--colours must be one of network, input" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "x.ply").exists()
