"""``ss3d-render collection`` with real renders: image samples without cameras, cameras only in the sidecar,
backgrounds behind the object, approximate masks, vertex colours, category selection."""

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ss3d_data.errors import Ss3dError
from ss3d_data.schema import read_sample_dir
from ss3d_data.sidecar import read_cameras
from ss3d_render.cameras import sphere_silhouette
from ss3d_render.cli import app

pytestmark = pytest.mark.blender


def test_collection_with_background_and_degraded_masks(mixed_manifest: Path, test_preset: Path, tmp_path: Path):
    from ss3d_render.collection import render_collection

    out = tmp_path / "collection"
    summary = render_collection(mixed_manifest, out, preset=str(test_preset), background=True, degrade=True)
    assert summary.rendered == 2 and not summary.failed
    cameras = read_cameras(out / "cameras.jsonl")
    assert sorted(cameras) == ["box", "capsule"]
    for key, (intrinsics, cam2world) in cameras.items():
        assert intrinsics.shape == (3, 3) and cam2world.shape == (4, 4)
        sample = read_sample_dir(out / key)
        assert sample.info.kind == "image" and sample.intrinsics is None and sample.cam2world is None
        assert not (out / key / "cameras.json").exists()
        assert sample.info.extra["background"]["kind"] and "degrade" in sample.info.extra
        assert set(np.unique(sample.masks)) <= {0, 255}
        # the RGB is not pre-masked: background pixels far from the object carry the backdrop
        corner = sample.images[0][:8, :8].astype(int)
        assert sample.masks[0][:8, :8].max() == 0 or corner.sum() > 0
    assert any(read_sample_dir(out / k).images[0][read_sample_dir(out / k).masks[0] == 0].max() > 0
               for k in ("box", "capsule"))


def test_vertex_colours_categories_and_sidecar_only_cameras(mixed_manifest: Path, test_preset: Path, tmp_path: Path,
                                                            kit):
    from ss3d_render.collection import render_collection

    out = tmp_path / "collection"
    summary = render_collection(mixed_manifest, out, preset=str(test_preset), categories=["capsule"])
    assert summary.rendered == 1 and sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "blender.log", "cameras.jsonl", "capsule"]
    sample = read_sample_dir(out / "capsule")
    inside = sample.images[0][sample.masks[0] >= 250].astype(np.float64).mean(0)
    assert kit.VERTEX_RGB[2] > kit.VERTEX_RGB[0]
    assert inside[2] > inside[0] and inside[2] > inside[1], inside
    # without --background the object sits on black
    assert sample.images[0][sample.masks[0] == 0].max() == 0
    again = render_collection(mixed_manifest, out, preset=str(test_preset), categories=["capsule"])
    assert again.rendered == 0 and again.skipped == 1
    assert len((out / "cameras.jsonl").read_text().splitlines()) == 1
    with pytest.raises(Ss3dError, match="not in the manifest"):
        render_collection(mixed_manifest, out, preset=str(test_preset), categories=["giraffe"])


def test_cli_collection(mixed_manifest: Path, test_preset: Path, tmp_path: Path):
    out = tmp_path / "c"
    result = CliRunner().invoke(app, ["collection", "--manifest", str(mixed_manifest), "--out", str(out), "--preset",
                                      str(test_preset), "--categories", "box", "--background", "--degrade"])
    assert result.exit_code == 0, result.output
    assert (out / "box" / "meta.json").is_file() and (out / "cameras.jsonl").is_file()
    (out / "cameras.jsonl").unlink()
    result = CliRunner().invoke(app, ["sidecar", "--out", str(out)])
    assert result.exit_code == 0 and list(read_cameras(out / "cameras.jsonl")) == ["box"]


def test_sidecar_camera_is_the_true_camera(sphere_manifest: Path, test_preset: Path, tmp_path: Path, kit):
    """Rolled, focal-jittered collection cameras: the sphere's mask must match its projection through the sidecar."""
    from ss3d_render.collection import render_collection

    out = tmp_path / "collection"
    render_collection(sphere_manifest, out, preset=str(test_preset))
    intrinsics, cam2world = read_cameras(out / "cameras.jsonl")["sphere"]
    sample = read_sample_dir(out / "sphere")
    expected = sphere_silhouette(kit.SPHERE_CENTER, kit.SPHERE_RADIUS, intrinsics, cam2world, 96, 96)
    rendered = sample.masks[0] >= 128
    assert (expected & rendered).sum() / (expected | rendered).sum() > 0.99
