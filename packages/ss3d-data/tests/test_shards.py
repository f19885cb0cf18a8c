import io
import json
import tarfile

import numpy as np
import pytest

from ss3d_data import Sample, SampleInfo, ShardFormatError, SkipCounter, Ss3dError, iter_samples, write_shards
from ss3d_data.schema import decode_sample, encode_sample


def _views_sample(key: str, views: int = 3, size: int = 16, category: str = "chair") -> Sample:
    rng = np.random.default_rng(abs(hash(key)) % 2**32)
    images = rng.integers(0, 255, (views, size, size, 3), dtype=np.uint8)
    masks = np.zeros((views, size, size), np.uint8)
    masks[:, 4:12, 4:12] = 255
    intr = np.tile(np.array([[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]], np.float32), (views, 1, 1))
    c2w = np.tile(np.eye(4, dtype=np.float32), (views, 1, 1))
    c2w[:, :3, 3] = rng.normal(size=(views, 3))
    info = SampleInfo("views", key, category, key, "procedural", "CC0-1.0", "train")
    return Sample(info, images, masks, intr, c2w)


def test_views_sample_round_trip_through_a_real_shard(tmp_path):
    samples = [_views_sample(f"inst{i}", category="chair" if i % 2 else "mug") for i in range(5)]
    paths = write_shards(samples, tmp_path, "synth", per_shard=2)
    assert [p.name for p in paths] == ["synth-000000.tar", "synth-000001.tar", "synth-000002.tar"]
    index = json.loads((tmp_path / "synth.index.json").read_text())
    assert index["samples"] == 5
    back = list(iter_samples([str(p) for p in paths]))
    assert [s.info.key for s in back] == [s.info.key for s in samples]
    for a, b in zip(samples, back):
        assert a.info == b.info
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_array_equal(a.intrinsics, b.intrinsics)
        np.testing.assert_array_equal(a.cam2world, b.cam2world)


def test_image_sample_must_not_carry_cameras():
    s = _views_sample("x", views=1)
    info = SampleInfo("image", "x", "bird", "x", "cub", "unknown", "train")
    with pytest.raises(ShardFormatError, match="must not carry cameras"):
        encode_sample(Sample(info, s.images, s.masks, s.intrinsics, s.cam2world))
    encode_sample(Sample(info, s.images, s.masks))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.pop("mask001.png"), "missing mask of view 1"),
        (lambda r: r.__setitem__("meta.json", b"{"), "not valid JSON"),
        (lambda r: r.__setitem__("rgb000.png", b"garbage"), "not a readable image"),
        (lambda r: r.__setitem__("occupancy.json", b'{"resolution": 4, "half_size": 0.5, "bits": "AA=="}'),
         "occupancy.json: 1 bytes of bits for a 4"),
        (lambda r: r.__setitem__("meta.json", r["meta.json"].replace(b'"version": 2', b'"version": 9')), "version 9"),
    ],
)
def test_malformed_samples_are_rejected_with_a_clear_message(mutate, message):
    raw = encode_sample(_views_sample("bad"))
    mutate(raw)
    with pytest.raises(ShardFormatError, match=message):
        decode_sample(raw)


def test_empty_mask_and_size_mismatch_rejected():
    s = _views_sample("e")
    s.masks[1] = 0
    with pytest.raises(ShardFormatError, match="mask of view 1 is empty"):
        encode_sample(s)
    s = _views_sample("m")
    s.masks = s.masks[:, :8]
    with pytest.raises(ShardFormatError, match="masks must be uint8"):
        encode_sample(s)


def test_corrupt_sample_is_skipped_and_counted(tmp_path):
    write_shards([_views_sample(f"ok{i}") for i in range(3)], tmp_path, "s", per_shard=10)
    shard = tmp_path / "s-000000.tar"
    # rewrite the shard with one sample's image replaced by garbage bytes
    members = []
    with tarfile.open(shard) as tar:
        for m in tar.getmembers():
            data = tar.extractfile(m).read()
            if m.name == "ok1.rgb000.png":
                data = b"\x89PNG broken"
            members.append((m.name, data))
    with tarfile.open(shard, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    skips = SkipCounter(max_bad=5)
    keys = [s.info.key for s in iter_samples([str(shard)], skips)]
    assert keys == ["ok0", "ok2"]
    assert skips.skipped == 1 and "ok1" in skips.reasons[0]
    with pytest.raises(Ss3dError, match="more than 0 corrupt"):
        list(iter_samples([str(shard)], SkipCounter(max_bad=0)))


def test_truncated_shard_is_skipped_not_fatal(tmp_path):
    write_shards([_views_sample(f"t{i}") for i in range(4)], tmp_path, "t", per_shard=10)
    shard = tmp_path / "t-000000.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) * 2 // 3])
    skips = SkipCounter(max_bad=10)
    got = list(iter_samples([str(shard)], skips))
    assert 1 <= len(got) < 4
    assert skips.skipped >= 1


def test_sample_folder_round_trip(tmp_path):
    from ss3d_data import read_sample_dir, write_sample_dir

    s = _views_sample("folder1")
    path = write_sample_dir(s, tmp_path)
    assert path == tmp_path / "folder1" and (path / "cameras.json").is_file()
    back = read_sample_dir(path)
    np.testing.assert_array_equal(back.images, s.images)
    np.testing.assert_array_equal(back.cam2world, s.cam2world)
    assert [p.name for p in tmp_path.iterdir()] == ["folder1"]
