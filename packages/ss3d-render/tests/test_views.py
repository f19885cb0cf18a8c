"""``ss3d-render views`` end to end with real Cycles renders: the silhouette of a sphere must match its analytic
projection through the SAVED cameras, textures must show, runs resume and split across processes."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ss3d_data.schema import read_sample_dir
from ss3d_render.cameras import sphere_silhouette
from ss3d_render.cli import app

pytestmark = pytest.mark.blender


def test_sphere_mask_matches_the_projection_through_the_saved_cameras(sphere_manifest: Path, test_preset: Path,
                                                                      tmp_path: Path, kit):
    from ss3d_render.views import render_views

    out = tmp_path / "views"
    summary = render_views(sphere_manifest, out, preset=str(test_preset))
    assert summary.rendered == 1 and summary.views == 3 and not summary.failed
    sample = read_sample_dir(out / "sphere")
    assert sample.info.kind == "views" and sample.info.category == "ball" and sample.info.attribution == "tests"
    assert sample.images.shape == (3, 96, 96, 3)
    assert sample.info.extra["renderer"] == "blender-cycles" and sample.info.extra["cycles_samples"] == 8
    for view in range(sample.num_views):
        expected = sphere_silhouette(kit.SPHERE_CENTER, kit.SPHERE_RADIUS, sample.intrinsics[view].astype(np.float64),
                                     sample.cam2world[view].astype(np.float64), 96, 96)
        rendered = sample.masks[view] >= 128
        iou = (expected & rendered).sum() / (expected | rendered).sum()
        assert iou > 0.99, f"view {view}: IoU {iou:.4f}"
        # the background is black (the paper's inputs are masked to zero)
        assert sample.images[view][~rendered & (sample.masks[view] == 0)].max() == 0


def test_textured_obj_shows_its_texture_not_its_diffuse_colour(mixed_manifest: Path, test_preset: Path,
                                                               tmp_path: Path, kit):
    from ss3d_render.views import render_views

    summary = render_views(mixed_manifest, tmp_path / "views", preset=str(test_preset), categories=["box"])
    assert summary.rendered == 1 and sorted(p.name for p in (tmp_path / "views").iterdir()) == ["blender.log", "box"]
    sample = read_sample_dir(tmp_path / "views" / "box")
    inside = sample.images[sample.masks >= 250].astype(np.float64)
    red, green, blue = inside.mean(0)
    assert kit.TEXTURE_RGB[0] > kit.TEXTURE_RGB[1] and kit.MTL_KD[1] > kit.MTL_KD[0]
    assert red > 2 * green and red > 2 * blue, (red, green, blue)


def test_a_texture_whose_file_is_missing_gives_way_to_the_diffuse_colour(mixed_manifest: Path, test_preset: Path,
                                                                          tmp_path: Path, kit):
    # Sweet Home 3D's MTL files name some textures by a path on their author's disk; Cycles would render those magenta
    from ss3d_render.views import render_views

    (tmp_path / "paint.png").unlink()
    summary = render_views(mixed_manifest, tmp_path / "views", preset=str(test_preset), categories=["box"])
    assert summary.rendered == 1 and summary.textures_unresolved == 1
    sample = read_sample_dir(tmp_path / "views" / "box")
    red, green, blue = sample.images[sample.masks >= 250].astype(np.float64).mean(0)
    assert kit.MTL_KD == (0.0, 1.0, 0.0)
    assert green > 2 * red and green > 2 * blue, (red, green, blue)


def test_resume_split_and_determinism(tmp_path: Path, test_preset: Path, kit):
    from ss3d_data.manifest import write_manifest
    from ss3d_render.views import render_views

    path, mesh, matrix = kit.sphere_file(tmp_path)
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(manifest, [kit.record(f"s{i}", path, mesh, matrix) for i in range(3)])
    out = tmp_path / "out"
    first = render_views(manifest, out, preset=str(test_preset), shard_index=1, num_shards=2)
    assert first.rendered == 1 and sorted(p.name for p in out.iterdir()) == ["blender-1-of-2.log", "s1"]
    again = render_views(manifest, out, preset=str(test_preset), shard_index=1, num_shards=2)
    assert again.rendered == 0 and again.skipped == 1
    # the same instance renders identically in another run and another process split
    other = tmp_path / "other"
    render_views(manifest, other, preset=str(test_preset), num_shards=1, limit=2)
    a, b = read_sample_dir(out / "s1"), read_sample_dir(other / "s1")
    np.testing.assert_array_equal(a.cam2world, b.cam2world)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.images, b.images)
    # different instances get different cameras
    assert not np.allclose(read_sample_dir(other / "s0").cam2world, a.cam2world)


def test_cli_views_and_bad_input(sphere_manifest: Path, test_preset: Path, tmp_path: Path):
    runner = CliRunner()
    result = runner.invoke(app, ["views", "--manifest", str(sphere_manifest), "--out", str(tmp_path / "o"),
                                 "--preset", str(test_preset)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "sphere" / "cameras.json").is_file()
    bad = runner.invoke(app, ["views", "--manifest", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")])
    assert bad.exit_code == 2 and "no such manifest" in bad.output
    bad = runner.invoke(app, ["views", "--manifest", str(sphere_manifest), "--out", str(tmp_path / "o"),
                              "--shard-index", "2", "--num-shards", "2"])
    assert bad.exit_code == 2 and "--shard-index" in bad.output


def test_textured_glb_shows_its_texture(tmp_path: Path, test_preset: Path, kit):
    import trimesh
    from PIL import Image

    from ss3d_data.manifest import canonical_matrix, write_manifest
    from ss3d_render.views import render_views

    box = trimesh.creation.box(extents=[1.0, 2.0, 1.5])
    uv = np.tile([[0.5, 0.5]], (len(box.vertices), 1))
    texture = Image.fromarray(np.full((8, 8, 3), kit.TEXTURE_RGB, dtype=np.uint8))
    box.visual = trimesh.visual.TextureVisuals(uv=uv, image=texture)
    path = tmp_path / "box.glb"
    box.export(path)
    matrix = canonical_matrix(box.bounds[0], box.bounds[1], up_axis="y")
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(manifest, [kit.record("glb", path, box, matrix, textured=True)])
    render_views(manifest, tmp_path / "views", preset=str(test_preset))
    sample = read_sample_dir(tmp_path / "views" / "glb")
    red, green, blue = sample.images[sample.masks >= 250].astype(np.float64).mean(0)
    assert red > 2 * green and red > 2 * blue, (red, green, blue)


def test_an_unreadable_mesh_is_skipped_and_reported_while_the_rest_render(sphere_manifest: Path, test_preset: Path,
                                                                          tmp_path: Path, kit):
    from ss3d_data.manifest import read_manifest, write_manifest
    from ss3d_render.views import render_views

    (tmp_path / "broken.obj").write_text("this is not a mesh\n")
    sphere = read_manifest(sphere_manifest)[0]
    broken = dataclasses.replace(sphere, instance_id="broken", path="broken.obj")
    write_manifest(sphere_manifest, [broken, sphere])
    out = tmp_path / "views"
    summary = render_views(sphere_manifest, out, preset=str(test_preset))
    assert summary.rendered == 1 and summary.views == 3
    assert len(summary.failed) == 1 and summary.failed[0].startswith("broken: ")
    assert sorted(p.name for p in out.iterdir()) == ["blender.log", "sphere"]  # nothing half-written for "broken"
