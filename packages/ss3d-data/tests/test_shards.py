import contextlib
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


def _member_headers(shard) -> dict[str, int]:
    """Member name -> byte offset of its own header (after any PAX header in front of it)."""
    with tarfile.open(shard) as tar:
        return {m.name: m.offset_data - 512 for m in tar.getmembers()}


def test_truncated_shard_loses_only_what_was_cut_and_counts_it_against_the_index(tmp_path):
    write_shards([_views_sample(f"t{i}") for i in range(4)], tmp_path, "t", per_shard=10)
    shard = tmp_path / "t-000000.tar"
    data = shard.read_bytes()
    cut = _member_headers(shard)["t2.rgb001.png"] + 700  # inside t2's second image
    shard.write_bytes(data[:cut])
    skips = SkipCounter(max_bad=10)
    assert [s.info.key for s in iter_samples([str(shard)], skips)] == ["t0", "t1"]
    # t2 is named (its meta.json survived) and blamed on the cut; t3 vanished whole: the index says it existed
    assert [(r.key, r.kind) for r in skips.records] == [("t2", "unreadable tar data"), (None, "missing from shard")]
    assert "truncated tar member 't2.rgb001.png'" in skips.records[0].reason
    assert "holds 3 of the 4 samples its index lists" in skips.records[1].reason
    assert skips.records[1].category == "chair"  # the index's per-category counts name what was lost
    assert skips.summary() == "2 skipped (1 unreadable tar data, 1 missing from shard)"


@pytest.mark.parametrize("damage", ["garbled", "zeroed"])
def test_a_damaged_header_mid_shard_costs_one_sample_not_the_rest(tmp_path, damage):
    write_shards([_views_sample(f"d{i}", category=("chair", "mug")[i % 2]) for i in range(5)], tmp_path, "d",
                 per_shard=10)
    shard = tmp_path / "d-000000.tar"
    data = bytearray(shard.read_bytes())
    at = _member_headers(shard)["d1.mask002.png"]
    data[at:at + 512] = b"\xa7" * 512 if damage == "garbled" else bytes(512)
    shard.write_bytes(bytes(data))
    # a stream reader (the usual way to read a tar shard) stops at the damage and never sees d2-d4
    streamed = []
    with tarfile.open(shard, "r|") as tar, contextlib.suppress(tarfile.TarError):
        for member in tar:
            streamed.append(member.name)
    assert streamed and not any(name.startswith(("d2.", "d3.", "d4.")) for name in streamed)
    skips = SkipCounter(max_bad=10)
    assert [s.info.key for s in iter_samples([str(shard)], skips)] == ["d0", "d2", "d3", "d4"]
    [record] = skips.records
    assert (record.key, record.category, record.kind) == ("d1", "mug", "unreadable tar data")
    assert "damaged tar header at bytes" in record.reason and "missing mask of view 2" in record.reason


def test_whole_samples_lost_to_damage_are_counted_with_or_without_an_index(tmp_path):
    write_shards([_views_sample(f"w{i}") for i in range(3)], tmp_path, "w", per_shard=10)
    shard = tmp_path / "w-000000.tar"
    headers = _member_headers(shard)
    data = bytearray(shard.read_bytes())
    for name, at in headers.items():
        if name.startswith("w1."):
            data[at:at + 512] = bytes(512)
    shard.write_bytes(bytes(data))
    skips = SkipCounter(max_bad=10)
    assert [s.info.key for s in iter_samples([str(shard)], skips)] == ["w0", "w2"]
    assert [r.kind for r in skips.records] == ["missing from shard"]
    (tmp_path / "w.index.json").unlink()
    skips = SkipCounter(max_bad=10)
    assert [s.info.key for s in iter_samples([str(shard)], skips)] == ["w0", "w2"]
    assert skips.skipped >= 1 and {r.kind for r in skips.records} == {"unreadable tar data"}


def test_sample_folder_round_trip(tmp_path):
    from ss3d_data import read_sample_dir, write_sample_dir

    s = _views_sample("folder1")
    path = write_sample_dir(s, tmp_path)
    assert path == tmp_path / "folder1" and (path / "cameras.json").is_file()
    back = read_sample_dir(path)
    np.testing.assert_array_equal(back.images, s.images)
    np.testing.assert_array_equal(back.cam2world, s.cam2world)
    assert [p.name for p in tmp_path.iterdir()] == ["folder1"]
