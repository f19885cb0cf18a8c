"""``ss3d-eval iou`` on a checkpoint imported from a file laid out like the authors' release (random tensors): it
is scored end to end, and its predictions are made from the input crop the checkpoint records, whatever preset
meshes it."""

import numpy as np
import torch
import trimesh
from typer.testing import CliRunner

from ss3d_data.manifest import MeshRecord, canonical_matrix, write_manifest
from ss3d_data.schema import Sample, SampleInfo
from ss3d_data.shards import write_shards
from ss3d_eval.cli import app
from ss3d_eval.evaluate import read_results, result_path
from ss3d_eval.predict import checkpoint_predictor, iter_test_items
from ss3d_model.official import import_official, release_layout
from ss3d_model.reconstruct import PLAIN_CROP, InputCrop, reconstruct_mesh


def random_release() -> dict[str, torch.Tensor]:
    """Random tensors in the release's layout; the head's density straddles the level 3.0, so meshes have surfaces."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for name, (shape, dtype) in release_layout().items():
        if dtype == torch.int64:
            state[name] = torch.tensor(1000)
        elif name.endswith("running_var"):
            state[name] = 0.5 + torch.rand(shape, generator=g)
        else:
            state[name] = torch.randn(shape, generator=g) * (0.3 if name.startswith("decoder.net.6") else 0.02)
    state["decoder.net.6.bias"][3] = 3.0
    return state


def test_iou_scores_an_imported_checkpoint_with_its_recorded_crop(tmp_path):
    torch.save(random_release(), tmp_path / "distilled_model.torch")
    checkpoint = tmp_path / "official.safetensors"
    import_official(tmp_path / "distilled_model.torch", checkpoint)

    mesh = trimesh.creation.box((40, 20, 30))
    mesh.export(tmp_path / "chair-1.obj")
    matrix = canonical_matrix(mesh.bounds[0], mesh.bounds[1], "y")
    write_manifest(tmp_path / "manifest.jsonl", [MeshRecord("chair-1", "chair", "test", "CC0-1.0", "", "chair-1.obj",
                                                            len(mesh.faces), False, "test",
                                                            tuple(map(tuple, matrix)))])
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[12:52, 18:44] = 255
    mask[12:52, 17] = 100  # a soft rim: inside the authors' box (> 0.3), outside ss3d's 0.5
    info = SampleInfo("image", "chair-1-img0", "chair", "chair-1", "test", "CC0-1.0", "test")
    write_shards([Sample(info, image[None], mask[None])], tmp_path / "shards", "test", per_shard=1)
    grid = tmp_path / "grid.toml"  # a small grid keeps the paper-sized decoder quick; the crop stays the file's
    grid.write_text('[preset]\ninherit = "paper"\n[extract]\nresolution = 8\ncoarse_resolution = 8\n'
                    'box_half_size = 0.5\n[data]\nmask_threshold = 0.5\n')

    out = tmp_path / "res"
    result = CliRunner().invoke(app, ["iou", "--shards", str(tmp_path / "shards"), "--manifest",
                                      str(tmp_path / "manifest.jsonl"), "--out", str(out), "--checkpoint",
                                      str(checkpoint), "--preset", "tiny", "--extract-preset", str(grid)])
    assert result.exit_code == 0, result.output
    rows = read_results([result_path(out, "official", "iou")])
    assert [r["status"] for r in rows] == ["ok"] and 0 <= rows[0]["iou"] <= 1

    predictor = checkpoint_predictor(checkpoint, "official", str(grid))
    item = next(iter_test_items(str(tmp_path / "shards")))
    predicted = predictor.predict(item)
    network, extract = predictor._network, predictor._extract
    assert predictor._mask_threshold == 77 / 255  # the grid preset's 0.5 does not replace the authors' box rule
    recorded = reconstruct_mesh(network, item.image, item.mask, extract, 77 / 255, crop=InputCrop(30, True))
    plain = reconstruct_mesh(network, item.image, item.mask, extract, 0.5, crop=PLAIN_CROP)
    np.testing.assert_allclose(predicted.vertices, recorded.vertices, atol=1e-6)
    assert len(plain.vertices) != len(recorded.vertices) or not np.allclose(plain.vertices, recorded.vertices)
