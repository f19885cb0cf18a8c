"""Occupancy labels: computed from a real mesh file through its manifest matrix, stored in real shards."""

import numpy as np
import pytest
import trimesh

from ss3d_data import Sample, SampleInfo, Ss3dError, iter_samples, write_sample_dir
from ss3d_data.manifest import MeshRecord, write_manifest
from ss3d_data.occupancy import Occupancy, mesh_occupancy
from ss3d_data.packing import occupancy_labeller, pack_sample_folders
from ss3d_data.schema import ShardFormatError, decode_sample, encode_sample


def _box_file(tmp_path, extents=(2.0, 1.0, 0.5)):
    path = tmp_path / "box.obj"
    trimesh.creation.box(extents).export(path)
    return path


def test_box_solid_in_the_canonical_frame_follows_the_matrix(tmp_path):
    path = _box_file(tmp_path)
    matrix = np.diag([0.5, 0.5, 0.5, 1.0])  # file units -> canonical: the box becomes 1 x 0.5 x 0.25
    occ = mesh_occupancy(path, matrix, 44)
    points = np.array([[0.0, 0.0, 0.0], [0.45, 0.2, 0.1], [0.0, 0.0, 0.2], [0.0, 0.3, 0.0], [0.54, 0, 0]])
    assert occ.lookup(points).tolist() == [True, True, False, False, False]
    volume = occ.grid.sum() * occ.voxel ** 3
    assert volume == pytest.approx(1.0 * 0.5 * 0.25, rel=0.15)


def test_samples_are_labelled_consistently_and_concentrate_near_the_surface(tmp_path):
    occ = mesh_occupancy(_box_file(tmp_path), np.diag([0.5, 0.5, 0.5, 1.0]), 32)
    points, labels = occ.sample(4000, 0.5, np.random.default_rng(0))
    assert points.shape == (4000, 3) and labels.dtype == np.float32
    np.testing.assert_array_equal(labels, occ.lookup(points))
    # The box holds 1/16 of the grid's volume; near-surface sampling puts far more of the labels inside.
    assert 0.2 < labels.mean() < 0.6
    near = points[:2000]
    distance_to_surface = np.min(np.abs(np.abs(near) - [0.5, 0.25, 0.125]), axis=1)
    assert np.median(distance_to_surface) < 2 * occ.voxel


def test_occupancy_round_trips_through_shards_written_from_a_manifest(tmp_path):
    path = _box_file(tmp_path)
    record = MeshRecord("boxy", "box", "procedural", "CC0-1.0", "", str(path), 12, False, "train",
                        tuple(map(tuple, np.diag([0.5, 0.5, 0.5, 1.0]))))
    write_manifest(tmp_path / "m.jsonl", [record])
    images = np.zeros((2, 8, 8, 3), np.uint8)
    masks = np.full((2, 8, 8), 255, np.uint8)
    cams = np.tile(np.eye(3, dtype=np.float32), (2, 1, 1)), np.tile(np.eye(4, dtype=np.float32), (2, 1, 1))
    info = SampleInfo("views", "boxy", "box", "boxy", "procedural", "CC0-1.0")
    write_sample_dir(Sample(info, images, masks, *cams), tmp_path / "render")
    label = occupancy_labeller(tmp_path / "m.jsonl", 16)
    pack_sample_folders(tmp_path / "render", tmp_path / "shards", "s", label=label)
    (sample,) = iter_samples([str(p) for p in sorted((tmp_path / "shards").glob("*.tar"))])
    assert sample.occupancy is not None and sample.occupancy.resolution == 16
    np.testing.assert_array_equal(sample.occupancy.grid, mesh_occupancy(path, record.matrix(), 16).grid)
    other = Sample(SampleInfo("views", "ghost", "box", "ghost", "procedural", "CC0-1.0"), images, masks, *cams)
    with pytest.raises(Ss3dError, match="ghost is not in"):
        label(other)


def test_image_samples_refuse_occupancy_and_version_one_samples_still_read():
    occ = Occupancy(np.ones((4, 4, 4), bool), 0.5)
    info = SampleInfo("image", "img", "box", "img", "cub", "unknown")
    with pytest.raises(ShardFormatError, match="must not carry occupancy"):
        encode_sample(Sample(info, np.zeros((1, 8, 8, 3), np.uint8), np.full((1, 8, 8), 255, np.uint8),
                             occupancy=occ))
    raw = encode_sample(Sample(info, np.zeros((1, 8, 8, 3), np.uint8), np.full((1, 8, 8), 255, np.uint8)))
    raw["meta.json"] = raw["meta.json"].replace(b'"version": 2', b'"version": 1')
    assert decode_sample(raw).occupancy is None
