import json
from pathlib import Path

import numpy as np
import pytest
import trimesh

from ss3d_data import Ss3dError
from ss3d_data.config import DataConfig
from ss3d_data.manifest import read_manifest
from ss3d_data.meshes import assign_split, build_manifest, normalise_category, report_path
from ss3d_data.procedural import BUILDERS, generate, make_instance
from ss3d_data.sources import scan_folder, scan_shapenet, scan_source


def test_splits_are_deterministic_per_instance_and_follow_the_fractions():
    ids = [f"inst{i}" for i in range(4000)]
    first = [assign_split(i) for i in ids]
    assert first == [assign_split(i) for i in reversed(ids)][::-1]  # order-independent
    counts = {s: first.count(s) / len(ids) for s in ("train", "val", "test")}
    assert abs(counts["train"] - 0.8) < 0.03 and abs(counts["val"] - 0.1) < 0.02
    assert {assign_split(i, (0.0, 0.0, 1.0)) for i in ids[:50]} == {"test"}
    assert [assign_split(i, salt="other") for i in ids] != first
    with pytest.raises(Ss3dError, match="sum"):
        assign_split("x", (0.5, 0.1, 0.1))


@pytest.mark.parametrize(("raw", "expected"), [("Chairs", "chair"), ("Coffee Cups", "coffee_cup"),
                                               ("ChineseDragon", "chinese_dragon"), ("Benches", "bench"),
                                               ("Bookshelves", "bookshelf"), ("Glass", "glass"), ("bus", "bus"),
                                               ("Butterflies", "butterfly"), ("Boxes", "box")])
def test_category_names_are_normalised(raw, expected):
    assert normalise_category(raw) == expected


def test_procedural_meshes_are_deterministic_given_the_seed(tmp_path):
    a = generate(tmp_path / "a", categories=3, instances=2, seed=5)
    b = generate(tmp_path / "b", categories=3, instances=2, seed=5)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    other = make_instance("cup", seed=6, index=0)
    assert not np.allclose(trimesh.load(a[0]).vertices[: len(other.vertices)], other.vertices)
    assert sorted({p.parent.name for p in a}) == sorted(list(BUILDERS)[:3])
    for category in BUILDERS:  # every builder gives a coloured, non-degenerate mesh
        mesh = make_instance(category, 0, 0)
        assert mesh.area > 0 and mesh.visual.kind == "vertex"


def test_procedural_manifest_is_canonical_and_split_deterministically(tmp_path):
    generate(tmp_path / "meshes", categories=4, instances=3, seed=1)
    out = tmp_path / "manifest.jsonl"
    report = build_manifest(scan_source(f"procedural:{tmp_path / 'meshes'}"), out)
    records = read_manifest(out)
    assert report.records == 12 and report.skipped == [] and len(records) == 12
    assert report.categories == {"bottle": 3, "cup": 3, "lamp": 3, "table": 3}
    assert all(r.source == "procedural" and r.licence == "CC0-1.0" for r in records)
    assert [r.split for r in records] == [assign_split(r.instance_id) for r in records]
    for record in records:
        mesh = trimesh.load(record.resolve(out))
        assert not record.path.startswith("/")  # below the manifest's folder: relative
        mesh.apply_transform(record.matrix())
        np.testing.assert_allclose(mesh.bounds.mean(0), 0, atol=1e-6)
        assert abs((mesh.bounds[1] - mesh.bounds[0]).max() - 1) < 1e-6
    first = out.read_text()
    build_manifest(scan_source(f"procedural:{tmp_path / 'meshes'}"), out)
    assert out.read_text() == first


def _write_obj(folder: Path, name: str, textured: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    # a tall box in Y (the OBJ up axis): 1 x 3 x 1
    box = trimesh.creation.box(extents=(1, 3, 1))
    lines = ["mtllib m.mtl", "usemtl mat"] + [f"v {x} {y} {z}" for x, y, z in box.vertices]
    lines += [f"vt {u} {v}" for u, v in ((0, 0), (1, 0), (1, 1))]
    lines += [f"f {a + 1}/1 {b + 1}/2 {c + 1}/3" for a, b, c in box.faces]
    (folder / f"{name}.obj").write_text("\n".join(lines) + "\n")
    mtl = "newmtl mat\nKd 0.8 0.8 0.8\n" + ("map_Kd tex.png\n" if textured else "")
    (folder / "m.mtl").write_text(mtl)
    if textured:
        from PIL import Image

        Image.new("RGB", (4, 4), (200, 10, 10)).save(folder / "tex.png")
    return folder / f"{name}.obj"


def test_folder_source_with_obj_mtl_textures_and_y_up(tmp_path):
    root = tmp_path / "mine"
    _write_obj(root / "Chairs" / "a1", "model", textured=True)
    _write_obj(root / "Chairs" / "a2", "model", textured=False)
    (root / "Balls").mkdir()
    trimesh.creation.icosphere().export(root / "Balls" / "b1.stl")
    out = tmp_path / "m.jsonl"
    build_manifest(scan_folder(root), out)
    records = {r.instance_id: r for r in read_manifest(out)}
    assert set(records) == {"folder-chair-a1", "folder-chair-a2", "folder-ball-b1"}
    assert records["folder-chair-a1"].textured and not records["folder-chair-a2"].textured
    # Y-up source: the box's long side (file Y) becomes canonical Z
    corners = np.array([[0.5, 1.5, 0.5, 1.0], [-0.5, -1.5, -0.5, 1.0]]) @ records["folder-chair-a1"].matrix().T
    np.testing.assert_allclose(np.abs(corners[:, 2]), 0.5, atol=1e-9)
    np.testing.assert_allclose(np.abs(corners[:, :2]), 1 / 6, atol=1e-9)


def test_bad_meshes_are_skipped_with_reasons(tmp_path):
    root = tmp_path / "bad"
    (root / "thing").mkdir(parents=True)
    trimesh.creation.box().export(root / "thing" / "good.ply")
    (root / "thing" / "garbage.off").write_text("this is not a mesh\n")
    (root / "thing" / "empty.off").write_text("OFF\n0 0 0\n")
    (root / "thing" / "flat.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n2 0 0\n3 0 1 2\n")
    huge = trimesh.creation.box(extents=(1e8, 1, 1))
    huge.export(root / "thing" / "huge.ply")
    out = tmp_path / "m.jsonl"
    build_manifest(scan_folder(root), out, DataConfig())
    assert [r.instance_id for r in read_manifest(out)] == ["folder-thing-good"]
    reasons = {s["instance_id"]: s["reason"] for s in json.loads(report_path(out).read_text())["skipped"]}
    assert set(reasons) == {"folder-thing-garbage", "folder-thing-empty", "folder-thing-flat", "folder-thing-huge"}
    assert "zero surface area" in reasons["folder-thing-flat"] or "empty" in reasons["folder-thing-flat"]
    assert "absurd size" in reasons["folder-thing-huge"]


def test_shapenet_layout_with_synset_names(tmp_path):
    for synset, model in (("03001627", "abc"), ("02876657", "def")):
        _write_obj(tmp_path / synset / model / "models", "model_normalized", textured=False)
    candidates = list(scan_shapenet(tmp_path))
    assert [(c.category, c.instance_id, c.up_axis) for c in candidates] == [
        ("bottle", "shapenet-02876657-def", "y"), ("chair", "shapenet-03001627-abc", "y")]
    (tmp_path / "taxonomy.json").write_text(json.dumps([{"synsetId": "03001627", "name": "Chairs,seat"}]))
    assert {c.category for c in scan_shapenet(tmp_path)} == {"chair", "synset_02876657"}
    with pytest.raises(Ss3dError, match="model_normalized"):
        list(scan_shapenet(tmp_path / "03001627"))


def test_off_files_with_polygons_comments_and_face_colours_are_read(tmp_path):
    # a unit cube written as six quads, with a comment and integer face colours (trimesh's own reader refuses it)
    text = "OFF\n# cube\n8 6 0\n" + "".join(f"{x} {y} {z}\n" for x in (0, 1) for y in (0, 1) for z in (0, 1))
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    text += "".join(f"4 {a} {b} {c} {d} 255 0 0\n" for a, b, c, d in quads)
    (tmp_path / "box").mkdir()
    (tmp_path / "box" / "cube.off").write_text(text)
    out = tmp_path / "m.jsonl"
    report = build_manifest(scan_folder(tmp_path), out)
    assert report.skipped == [] and read_manifest(out)[0].faces == 12


def test_textures_are_detected_in_glb_parts(tmp_path):
    from PIL import Image

    textured = trimesh.creation.box()
    textured.visual = trimesh.visual.TextureVisuals(uv=np.random.default_rng(0).random((8, 2)),
                                                    image=Image.new("RGB", (4, 4), (255, 0, 0)))
    (tmp_path / "toy").mkdir()
    trimesh.Scene([textured, trimesh.creation.icosphere()]).export(tmp_path / "toy" / "two_parts.glb")
    trimesh.creation.box().export(tmp_path / "toy" / "plain.glb")
    out = tmp_path / "m.jsonl"
    build_manifest(scan_folder(tmp_path), out)
    assert {r.instance_id: r.textured for r in read_manifest(out)} == {"folder-toy-two_parts": True,
                                                                       "folder-toy-plain": False}
