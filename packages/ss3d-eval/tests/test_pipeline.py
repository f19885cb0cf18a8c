"""End to end on real files: tar shards, a mesh manifest with real mesh files, prediction folders, result JSON
lines, tables, the HTML report, and the CLI."""

import json
import re

import numpy as np
import pytest
import trimesh
from typer.testing import CliRunner

from ss3d_data.errors import Ss3dError
from ss3d_data.manifest import MeshRecord, canonical_matrix, write_manifest
from ss3d_data.schema import Sample, SampleInfo
from ss3d_data.shards import write_shards
from ss3d_eval.cli import app
from ss3d_eval.config import eval_config
from ss3d_eval.evaluate import evaluate, read_results, result_path
from ss3d_eval.predict import make_predictors, mesh_dir_predictor
from ss3d_eval.report import build_report
from ss3d_eval.table import build_table, to_markdown

EMPTY_PLY = ("ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\nproperty float z\n"
             "element face 0\nproperty list uchar int vertex_indices\nend_header\n")


def _meshes():
    """Ground truth in file coordinates (Y-up, centimetres), as a mesh library would ship them."""
    a = trimesh.util.concatenate([trimesh.creation.box((40, 20, 30)), trimesh.creation.icosphere(2, 12)])
    b = trimesh.creation.cylinder(8, 50)
    c = trimesh.creation.box((10, 60, 10))
    return {"chair-1": ("chair", a), "lamp-1": ("lamp", b), "lamp-2": ("lamp", c)}


@pytest.fixture
def dataset(tmp_path):
    mesh_dir = tmp_path / "meshes"
    mesh_dir.mkdir()
    records, samples, canonical = [], [], {}
    rng = np.random.default_rng(0)
    for instance, (category, mesh) in _meshes().items():
        path = mesh_dir / f"{instance}.obj"
        mesh.export(path)
        matrix = canonical_matrix(mesh.bounds[0], mesh.bounds[1], "y")
        records.append(MeshRecord(instance, category, "test", "CC0-1.0", "", f"meshes/{instance}.obj",
                                  len(mesh.faces), False, "test", tuple(map(tuple, matrix))))
        canonical[instance] = mesh.copy().apply_transform(matrix)
        image = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
        mask = np.zeros((48, 48), np.uint8)
        mask[10:38, 12:30] = 255
        info = SampleInfo("image", f"{instance}-img0", category, instance, "test", "CC0-1.0", "test")
        samples.append(Sample(info, image[None], mask[None]))
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(manifest, records)
    write_shards(samples, tmp_path / "shards", "test", per_shard=2)
    # Method "good": the canonical meshes under an arbitrary similarity; "blobs": spheres, one missing, one empty.
    good, blobs = tmp_path / "good", tmp_path / "blobs"
    good.mkdir()
    blobs.mkdir()
    moved = trimesh.transformations.compose_matrix(scale=[1.3] * 3, angles=[0.3, -0.8, 2.0], translate=[0.1, 0, -0.2])
    for instance, mesh in canonical.items():
        mesh.copy().apply_transform(moved).export(good / f"{instance}-img0.ply")
    trimesh.creation.icosphere(3, 0.4).export(blobs / "chair-1-img0.ply")
    (blobs / "lamp-1-img0.ply").write_text(EMPTY_PLY)
    return {"root": tmp_path, "manifest": manifest, "shards": str(tmp_path / "shards"), "good": good, "blobs": blobs}


def test_evaluate_scores_every_sample_and_reports_failures(dataset, tmp_path):
    cfg = eval_config("tiny")
    out = tmp_path / "results"
    good = mesh_dir_predictor(dataset["good"], "good", seen_categories=["chair"])
    path = evaluate(dataset["shards"], dataset["manifest"], good, "iou", cfg, out, preset="tiny", show_progress=False)
    rows = read_results([path])
    assert [r["key"] for r in rows] == ["chair-1-img0", "lamp-1-img0", "lamp-2-img0"]
    assert all(r["status"] == "ok" and r["iou"] > 0.9 for r in rows)
    assert [r["seen"] for r in rows] == [True, False, False]
    zero_shot = evaluate(dataset["shards"], dataset["manifest"], good, "iou", cfg, tmp_path / "zs", subset="unseen",
                         show_progress=False)
    assert [r["key"] for r in read_results([zero_shot])] == ["lamp-1-img0", "lamp-2-img0"]
    blobs = mesh_dir_predictor(dataset["blobs"], "blobs")
    rows = {r["key"]: r for r in read_results([evaluate(dataset["shards"], dataset["manifest"], blobs, "chamfer",
                                                         cfg, out, show_progress=False)])}
    assert rows["chair-1-img0"]["status"] == "ok" and rows["chair-1-img0"]["chamfer_l1"] > 0.01
    assert rows["lamp-1-img0"]["status"] == "empty" and "empty" in rows["lamp-1-img0"]["error"]
    assert rows["lamp-2-img0"]["status"] == "failed" and "no predicted mesh" in rows["lamp-2-img0"]["error"]
    iou_rows = {r["key"]: r for r in read_results([evaluate(dataset["shards"], dataset["manifest"], blobs, "iou",
                                                            cfg, out, show_progress=False)])}
    assert iou_rows["lamp-1-img0"]["iou"] == 0.0 and iou_rows["lamp-1-img0"]["status"] == "empty"


def test_rerun_resumes_and_result_lines_are_valid(dataset, tmp_path):
    cfg = eval_config("tiny")
    good = mesh_dir_predictor(dataset["good"], "good")
    out = tmp_path / "results"
    path = evaluate(dataset["shards"], dataset["manifest"], good, "chamfer", cfg, out, show_progress=False)
    first = path.read_text()
    assert evaluate(dataset["shards"], dataset["manifest"], good, "chamfer", cfg, out, show_progress=False) == path
    assert path.read_text() == first  # nothing recomputed: identical rows, timings included
    for line in first.splitlines():
        row = json.loads(line)
        assert row["format"] == "ss3d-eval-result" and row["version"] == 1 and row["metric"] == "chamfer"
    changed = evaluate(dataset["shards"], dataset["manifest"], good, "chamfer", eval_config("cpu"), out,
                       show_progress=False)
    assert changed.read_text() != first  # other settings: rows recomputed


def test_table_compares_methods_per_category(dataset, tmp_path):
    cfg = eval_config("tiny")
    out = tmp_path / "results"
    files = [evaluate(dataset["shards"], dataset["manifest"], p, "iou", cfg, out, show_progress=False)
             for p in (mesh_dir_predictor(dataset["good"], "good", ["chair"]),
                       mesh_dir_predictor(dataset["blobs"], "blobs"))]
    rows = read_results(files)
    table = build_table(rows, "iou")
    assert table.labels == ["good", "blobs"] and table.categories == ["chair", "lamp"]
    lamp_good = [r["iou"] for r in rows if r["label"] == "good" and r["category"] == "lamp"]
    assert table.values["lamp"]["good"] == (pytest.approx(np.mean(lamp_good)), 2)
    assert table.values["lamp"]["blobs"] == (0.0, 1)   # the empty prediction counts 0; the missing one fails
    assert table.failed == {"blobs": 1}
    assert table.summary["mean"]["good"] == pytest.approx((table.values["chair"]["good"][0] + np.mean(lamp_good)) / 2)
    assert table.summary["mean (zero-shot)"]["good"] == pytest.approx(np.mean(lamp_good))
    text = to_markdown(table)
    assert "| lamp |" in text and "\u2020" in text and "| failed | 0 | 1 |" in text
    with pytest.raises(Ss3dError, match="twice"):
        build_table(rows + rows, "iou")


def test_report_is_one_self_contained_html_file(dataset, tmp_path):
    cfg = eval_config("tiny")
    out = tmp_path / "results"
    files = [evaluate(dataset["shards"], dataset["manifest"], p, "chamfer", cfg, out, show_progress=False)
             for p in (mesh_dir_predictor(dataset["good"], "good"), mesh_dir_predictor(dataset["blobs"], "blobs"))]
    page = build_report(files, dataset["shards"], dataset["manifest"], tmp_path / "r.html", size=64).read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    # 3 samples x (input + 2 ground-truth views) + good x 3 x 2 views + blobs x 1 x 2 views
    assert len(images) == 3 * 3 + 6 + 2
    assert "no predicted mesh" in page and "empty prediction" in page
    assert "http" not in page and "<script" not in page


def test_bad_input_is_refused_clearly(dataset, tmp_path):
    with pytest.raises(Ss3dError, match="--label"):
        make_predictors([], [str(dataset["good"]), str(dataset["blobs"])], ["one"], "tiny")
    with pytest.raises(Ss3dError, match="labels must differ"):
        make_predictors([], [str(dataset["good"]), str(dataset["good"])], [], "tiny")
    with pytest.raises(Ss3dError, match="no such prediction folder"):
        mesh_dir_predictor(tmp_path / "nowhere", "x")
    with pytest.raises(Ss3dError, match="nothing to evaluate"):
        make_predictors([], [], [], "tiny")
    with pytest.raises(Ss3dError, match="training categories are unknown"):
        evaluate(dataset["shards"], dataset["manifest"], mesh_dir_predictor(dataset["good"], "g"), "iou",
                 eval_config("tiny"), tmp_path, subset="unseen", show_progress=False)
    with pytest.raises(Ss3dError, match="no such manifest"):
        evaluate(dataset["shards"], tmp_path / "none.jsonl", mesh_dir_predictor(dataset["good"], "g"), "iou",
                 eval_config("tiny"), tmp_path, show_progress=False)


def test_cli_iou_table_report(dataset, tmp_path):
    runner = CliRunner()
    out = tmp_path / "res"
    common = ["--shards", dataset["shards"], "--manifest", str(dataset["manifest"]), "--out", str(out),
              "--preset", "tiny"]
    result = runner.invoke(app, ["iou", *common, "--pred-dir", str(dataset["good"]), "--pred-dir",
                                 str(dataset["blobs"]), "--label", "good", "--label", "blobs"])
    assert result.exit_code == 0, result.output
    assert result_path(out, "good", "iou").is_file() and result_path(out, "blobs", "iou").is_file()
    md = tmp_path / "t.md"
    result = runner.invoke(app, ["table", str(result_path(out, "good", "iou")), str(result_path(out, "blobs", "iou")),
                                 "--markdown", str(md)])
    assert result.exit_code == 0, result.output
    assert "| chair |" in md.read_text()
    html_path = tmp_path / "r.html"
    result = runner.invoke(app, ["report", str(result_path(out, "good", "iou")), "--shards", dataset["shards"],
                                 "--manifest", str(dataset["manifest"]), "--out", str(html_path), "--preset", "tiny"])
    assert result.exit_code == 0, result.output
    assert html_path.read_text().startswith("<!DOCTYPE html>")
    result = runner.invoke(app, ["iou", *common, "--pred-dir", str(dataset["good"]), "--label", "a", "--label", "b"])
    assert result.exit_code == 2 and "error" in result.output
    result = runner.invoke(app, ["table", str(tmp_path / "missing.jsonl")])
    assert result.exit_code == 2 and "no such result file" in result.output


def test_unreadable_test_samples_are_failed_rows_not_a_smaller_mean(dataset, tmp_path):
    shard = tmp_path / "shards" / "test-000001.tar"  # holds lamp-2 alone
    shard.write_bytes(shard.read_bytes()[:1800])  # cut after its first member
    runner = CliRunner()
    out = tmp_path / "res"
    common = ["--shards", dataset["shards"], "--manifest", str(dataset["manifest"]), "--out", str(out),
              "--preset", "tiny", "--pred-dir", str(dataset["good"]), "--label", "good"]
    result = runner.invoke(app, ["iou", *common])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "1 unreadable test sample(s) counted as failed rows (1 unreadable tar data)" in said
    rows = {r["key"]: r for r in read_results([result_path(out, "good", "iou")])}
    assert len(rows) == 3 and rows["chair-1-img0"]["status"] == "ok"
    [lost] = [r for r in rows.values() if r["status"] == "failed"]
    # the shard's index still names the category of the sample that vanished, so its category row counts it
    assert lost["category"] == "lamp" and lost["error"].startswith("unreadable test sample: unreadable tar data")
    table = build_table(list(rows.values()), "iou")
    assert table.failed == {"good": 1} and table.values["lamp"]["good"][1] == 1
    result = runner.invoke(app, ["iou", *common, "--max-bad", "0"])
    assert result.exit_code == 2 and result.output.startswith("error: more than 0 corrupt shard samples skipped")


@pytest.mark.slow
def test_checkpoint_predictions_through_the_real_network(dataset, tmp_path):
    from ss3d_model.reconstruct import init_checkpoint

    checkpoint = tmp_path / "init.safetensors"
    init_checkpoint("tiny", checkpoint)
    out = tmp_path / "res"
    runner = CliRunner()
    common = ["--shards", dataset["shards"], "--manifest", str(dataset["manifest"]), "--out", str(out)]
    # An untrained network's density never reaches the preset's level: every sample is an empty prediction.
    result = runner.invoke(app, ["iou", *common, "--checkpoint", str(checkpoint), "--preset", "tiny"])
    assert result.exit_code == 0, result.output
    rows = read_results([result_path(out, "init", "iou")])
    assert [(r["status"], r["iou"], r["seen"]) for r in rows] == [("empty", 0.0, False)] * 3
    assert all("no surface" in r["error"] for r in rows)
    # At a level inside its noise the same network yields real (if meaningless) surfaces, scored end to end and
    # kept as meshes for the report.
    low = tmp_path / "low.toml"
    low.write_text('[preset]\ninherit = "tiny"\n[extract]\ndensity_threshold = 0.04\n')
    result = runner.invoke(app, ["chamfer", *common, "--checkpoint", str(checkpoint), "--preset", "tiny",
                                 "--extract-preset", str(low), "--label", "noise", "--limit", "2"])
    assert result.exit_code == 0, result.output
    rows = read_results([result_path(out, "noise", "chamfer")])
    assert len(rows) == 2 and {r["status"] for r in rows} <= {"ok", "empty"}
    scored = [r for r in rows if r["status"] == "ok"]
    assert scored and all(r["chamfer_l1"] > 0 and 0 <= r["fscore"]["0.05"] <= 1 for r in scored)
    assert all((out / "noise-meshes" / f"{r['key']}.ply").is_file() for r in scored)
    result = runner.invoke(app, ["iou", *common, "--checkpoint", str(checkpoint), "--preset", "tiny",
                                 "--subset", "seen"])
    assert result.exit_code == 2 and "seen categories" in result.output


def test_multi_view_samples_use_the_chosen_view(tmp_path):
    from ss3d_eval.predict import iter_test_items

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (2, 16, 16, 3), dtype=np.uint8)
    masks = np.full((2, 16, 16), 255, np.uint8)
    cams = np.repeat(np.eye(4, dtype=np.float32)[None], 2, 0)
    k = np.repeat(np.array([[20, 0, 8], [0, 20, 8], [0, 0, 1]], np.float32)[None], 2, 0)
    info = SampleInfo("views", "inst-a", "chair", "inst-a", "test", "CC0-1.0", "test")
    write_shards([Sample(info, images, masks, k, cams)], tmp_path, "views")
    [item] = list(iter_test_items(str(tmp_path), view=1))
    assert (item.image == images[1]).all()
    with pytest.raises(Ss3dError, match="has 2 views"):
        list(iter_test_items(str(tmp_path), view=2))


def test_numeric_options_are_checked_first(dataset, tmp_path):
    runner = CliRunner()
    common = ["--shards", dataset["shards"], "--manifest", str(dataset["manifest"]), "--out", str(tmp_path / "res"),
              "--preset", "tiny", "--pred-dir", str(dataset["good"])]
    for args, message in ((["--limit", "-1"], "--limit must be >= 1"), (["--limit", "0"], "--limit must be >= 1"),
                          (["--view", "-1"], "--view must be >= 0"), (["--max-bad", "-1"], "--max-bad must be >= 0")):
        result = runner.invoke(app, ["chamfer", *common, *args])
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "res").exists()
    result = runner.invoke(app, ["report", str(tmp_path / "x.jsonl"), "--shards", dataset["shards"], "--manifest",
                                 str(dataset["manifest"]), "--view", "-2"])
    assert result.exit_code == 2 and "--view must be >= 0" in result.output, result.output
    result = runner.invoke(app, ["table", str(tmp_path / "x.jsonl"), "--digits", "-1"])
    assert result.exit_code == 2 and "--digits must be >= 0" in result.output, result.output


def test_nothing_evaluated_is_a_failure(dataset, tmp_path):
    from ss3d_model.checkpoint import load_checkpoint, save_checkpoint
    from ss3d_model.reconstruct import init_checkpoint

    runner = CliRunner()
    out = tmp_path / "res"
    common = ["--shards", dataset["shards"], "--out", str(out), "--preset", "tiny"]
    # A checkpoint whose tensors do not fit its architecture is refused before any sample is scored.
    init_checkpoint("tiny", tmp_path / "init.safetensors")
    tensors, meta = load_checkpoint(tmp_path / "init.safetensors")
    name = min(tensors)
    tensors["renamed." + name] = tensors.pop(name)
    save_checkpoint(tmp_path / "renamed.safetensors", tensors, meta)
    result = runner.invoke(app, ["iou", *common, "--manifest", str(dataset["manifest"]), "--checkpoint",
                                 str(tmp_path / "renamed.safetensors")])
    assert result.exit_code == 2 and "tensors do not match the model config" in result.output, result.output
    assert not out.exists()
    # A manifest without the test instances: every row fails; the rows are written, and the run exits non-zero.
    other = tmp_path / "other.jsonl"
    write_manifest(other, [MeshRecord("vase-9", "vase", "test", "CC0-1.0", "", "meshes/chair-1.obj", 10, False,
                                      "test", tuple(map(tuple, np.eye(4))))])
    result = runner.invoke(app, ["iou", *common, "--manifest", str(other), "--pred-dir", str(dataset["good"]),
                                 "--label", "good"])
    assert result.exit_code == 2 and "good: all 3 samples failed, nothing was evaluated" in result.output, \
        result.output
    assert "not in the mesh manifest" in result.output  # the hint quotes the first error
    rows = read_results([result_path(out, "good", "iou")])
    assert len(rows) == 3 and {r["status"] for r in rows} == {"failed"}
