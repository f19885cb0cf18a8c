"""Backgrounds, mask degradation, process split, per-instance seeds and the render config (no Blender)."""

import numpy as np
import pytest

from ss3d_data.config import render_config
from ss3d_data.errors import Ss3dError
from ss3d_data.manifest import MeshRecord
from ss3d_render.imaging import BACKGROUND_KINDS, composite, degrade_mask, random_background
from ss3d_render.jobs import assigned_records, instance_rng, premultiply


def _disc(size=64, radius=20):
    ys, xs = np.mgrid[0:size, 0:size]
    return (((xs - size / 2) ** 2 + (ys - size / 2) ** 2 <= radius**2) * 255).astype(np.uint8)


def test_backgrounds_cover_every_kind_and_are_reproducible():
    kinds = set()
    for seed in range(30):
        image, info = random_background(np.random.default_rng(seed), 32)
        again, _ = random_background(np.random.default_rng(seed), 32)
        np.testing.assert_array_equal(image, again)
        assert image.shape == (32, 32, 3) and image.min() >= 0 and image.max() <= 255
        kinds.add(info["kind"])
    assert kinds == set(BACKGROUND_KINDS)


def test_composite_keeps_the_object_and_fills_the_background():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)
    rgba[0, 1] = (255, 0, 0, 128)
    out = composite(rgba, np.full((4, 4, 3), 100.0, dtype=np.float32))
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[1, 1]) == (100, 100, 100)
    assert tuple(out[0, 1]) == (178, 50, 50)


def test_premultiply_puts_the_object_over_black():
    rgba = np.array([[[200, 100, 50, 255], [200, 100, 50, 0]]], dtype=np.uint8)
    rgb, mask = premultiply(rgba)
    assert tuple(rgb[0, 0]) == (200, 100, 50) and tuple(rgb[0, 1]) == (0, 0, 0)
    assert mask.tolist() == [[255, 0]]


def test_degraded_mask_is_approximate_but_close():
    mask = _disc()
    changed = 0
    for seed in range(10):
        degraded, info = degrade_mask(mask, np.random.default_rng(seed), max_radius_px=3)
        assert set(np.unique(degraded)) <= {0, 255}
        a, b = mask >= 128, degraded >= 128
        iou = (a & b).sum() / (a | b).sum()
        assert 0.6 < iou <= 1.0
        changed += int(iou < 1.0)
        assert info["operation"] in ("erode", "dilate")
    assert changed >= 8


def _records(n):
    eye = tuple(tuple(float(i == j) for j in range(4)) for i in range(4))
    return [MeshRecord(f"m{i}", "c", "procedural", "CC0-1.0", "", f"m{i}.obj", 1, False, "train", eye)
            for i in range(n)]


def test_process_split_is_a_partition_by_index_modulo():
    records = _records(10)
    parts = [assigned_records(records, i, 3) for i in range(3)]
    assert [r.instance_id for r in parts[1]] == ["m1", "m4", "m7"]
    assert sorted(r.instance_id for p in parts for r in p) == sorted(r.instance_id for r in records)
    with pytest.raises(Ss3dError):
        assigned_records(records, 3, 3)
    with pytest.raises(Ss3dError):
        assigned_records(records, 0, 0)


def test_instance_rng_depends_on_seed_instance_and_stream_only():
    def draw(*args):
        return instance_rng(*args).random(4)

    np.testing.assert_array_equal(draw(0, "chair-1", "views"), draw(0, "chair-1", "views"))
    assert not np.array_equal(draw(0, "chair-1", "views"), draw(1, "chair-1", "views"))
    assert not np.array_equal(draw(0, "chair-1", "views"), draw(0, "chair-2", "views"))
    assert not np.array_equal(draw(0, "chair-1", "views"), draw(0, "chair-1", "collection"))


@pytest.mark.parametrize("preset", ["paper", "cpu", "tiny"])
def test_every_preset_has_a_valid_render_section(preset):
    config = render_config(preset)
    assert config.views_per_instance >= 1 and config.image_size >= 8
    # the nearest camera still sees the whole unit box's inscribed sphere (radius 0.5)
    half_fov = np.arctan(config.image_size / 2 / config.focal_px)
    assert np.arcsin(0.5 / config.distance_range[0]) < half_fov


def test_paper_render_numbers():
    config = render_config("paper")
    assert config.views_per_instance == 20 and config.elevation_deg == (-75.0, 75.0)
    assert config.azimuth_deg == (0.0, 360.0) and config.cycles_samples == 16
