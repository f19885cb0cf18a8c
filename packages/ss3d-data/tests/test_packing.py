"""Packing sample folders and collections into real shards, reading them back per rank/worker, inspecting."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from ss3d_data import Sample, SampleInfo, SkipCounter, Ss3dError, iter_samples, resolve_shards, write_sample_dir
from ss3d_data.cli import app
from ss3d_data.layouts import read_layout
from ss3d_data.packing import inspect_shards, pack_collection, pack_sample_folders
from ss3d_data.shards import select_shards
from ss3d_data.sidecar import read_cameras, write_cameras


def _sample(key: str, kind: str, category: str, instance: str, views: int = 1, size: int = 12) -> Sample:
    rng = np.random.default_rng(len(key))
    images = rng.integers(0, 255, (views, size, size, 3), dtype=np.uint8)
    masks = np.zeros((views, size, size), np.uint8)
    masks[:, 3:9, 3:9] = 255
    info = SampleInfo(kind, key, category, instance, "procedural", "CC0-1.0", "train")
    if kind == "image":
        return Sample(info, images, masks)
    k = np.tile(np.array([[10.0, 0, 6], [0, 10.0, 6], [0, 0, 1]], np.float32), (views, 1, 1))
    return Sample(info, images, masks, k, np.tile(np.eye(4, dtype=np.float32), (views, 1, 1)))


def _folders(root: Path) -> None:
    for i in range(3):
        write_sample_dir(_sample(f"v{i}", "views", "cup", f"v{i}", views=2), root)
    for i in range(5):
        write_sample_dir(_sample(f"img{i}", "image", "bowl" if i < 2 else "vase", f"img{i}"), root)
    cam = (np.array([[10.0, 0, 6], [0, 10, 6], [0, 0, 1]]), np.eye(4))
    write_cameras(root / "cameras.jsonl", {f"img{i}": cam for i in range(5)})


def test_sample_folders_become_views_and_per_category_shards_with_sidecars(tmp_path):
    _folders(tmp_path / "render")
    report = pack_sample_folders(tmp_path / "render", tmp_path / "shards", "coll", per_shard=2)
    assert report.shard_sets == {"coll-bowl": 2, "coll-vase": 3, "coll-views": 3} and report.skipped == 0
    names = sorted(p.name for p in (tmp_path / "shards").iterdir())
    assert "coll-views-000001.tar" in names and "coll-vase-000001.tar" in names
    assert set(read_cameras(tmp_path / "shards" / "coll-bowl.cameras.jsonl")) == {"img0", "img1"}
    back = list(iter_samples(resolve_shards(str(tmp_path / "shards" / "coll-views-*.tar"))))
    assert [s.info.key for s in back] == ["v0", "v1", "v2"] and back[0].num_views == 2
    again = pack_sample_folders(tmp_path / "render", tmp_path / "shards", "coll", per_shard=2)
    assert sorted(again.kept) == ["coll-bowl", "coll-vase", "coll-views"]


def test_a_corrupt_sample_folder_is_skipped_and_counted_or_stops_the_run(tmp_path):
    _folders(tmp_path / "render")
    (tmp_path / "render" / "img3" / "rgb000.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(Ss3dError, match="img3 image 0 is not a readable image"):
        pack_sample_folders(tmp_path / "render", tmp_path / "a", "coll")
    report = pack_sample_folders(tmp_path / "render", tmp_path / "b", "coll", max_bad=1)
    assert report.skipped == 1 and report.shard_sets["coll-vase"] == 2


def test_a_corrupt_shard_sample_is_skipped_when_reading(tmp_path):
    _folders(tmp_path / "render")
    pack_sample_folders(tmp_path / "render", tmp_path / "shards", "coll", per_shard=10)
    tar = tmp_path / "shards" / "coll-vase-000000.tar"
    data = bytearray(tar.read_bytes())
    start = data.find(b"\x89PNG", 1024)  # corrupt the first image payload inside the tar
    data[start:start + 64] = b"\0" * 64
    tar.write_bytes(bytes(data))
    skips = SkipCounter(max_bad=1)
    assert len(list(iter_samples([str(tar)], skips))) == 2 and skips.skipped == 1
    with pytest.raises(Ss3dError, match="more than 0 corrupt"):
        list(iter_samples([str(tar)], SkipCounter(max_bad=0)))


def test_ranks_and_workers_read_disjoint_shards_covering_the_set(tmp_path):
    shards = [f"s-{i:06d}.tar" for i in range(7)]
    seen = []
    for rank in range(2):
        for worker in range(2):
            seen += select_shards(shards, rank, 2, worker, 2)
    assert sorted(seen) == shards and len(seen) == len(set(seen))
    assert select_shards(shards, 1, 2, 0, 2) == ["s-000002.tar", "s-000006.tar"]
    assert select_shards(shards[:1], 0, 1, 1, 2) == []
    with pytest.raises(Ss3dError, match="cannot feed 3 ranks"):
        select_shards(shards[:2], 0, 3)
    with pytest.raises(Ss3dError, match="outside"):
        select_shards(shards, 2, 2)
    _folders(tmp_path / "render")
    pack_sample_folders(tmp_path / "render", tmp_path / "shards", "coll", per_shard=1)
    real = resolve_shards(str(tmp_path / "shards" / "coll-vase-*.tar"))
    keys = [s.info.key for r in range(3) for s in iter_samples(real, rank=r, world_size=3)]
    assert sorted(keys) == ["img2", "img3", "img4"]


def test_collection_packing_and_contact_sheet(tmp_path):
    for cat in ("mug", "bird"):
        (tmp_path / "coll" / cat).mkdir(parents=True)
        for j in range(2):
            Image.new("RGB", (50, 40), (30 * j, 100, 200)).save(tmp_path / "coll" / cat / f"{j}.png")
            mask = np.zeros((40, 50), np.uint8)
            mask[10:30, 10:40] = 255
            Image.fromarray(mask).save(tmp_path / "coll" / cat / f"{j}.mask.png")
    report = pack_collection(read_layout("folder", tmp_path / "coll"), tmp_path / "shards", "mine", max_side=25)
    assert report.shard_sets == {"mine-bird": 2, "mine-mug": 2}
    result = inspect_shards(resolve_shards(tmp_path / "shards"), tmp_path / "sheet.png", per_category=3, thumb=32)
    assert sum(result.counts.values()) == 4 and result.views == 4
    sheet = np.asarray(Image.open(tmp_path / "sheet.png"))
    assert sheet.shape[0] == 2 * 36 + 4 and (sheet[..., 0] > sheet[..., 1] + 50).any()  # red mask tint drawn
    assert next(iter_samples(resolve_shards(tmp_path / "shards"))).images.shape == (1, 20, 25, 3)


def test_cli_end_to_end_on_procedural_meshes_and_folders(tmp_path):
    runner = CliRunner()
    meshes, manifest = tmp_path / "meshes", tmp_path / "manifest.jsonl"
    result = runner.invoke(app, ["meshes", "procedural", "--out", str(meshes), "--categories", "2", "--instances",
                                 "2", "--seed", "3"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["meshes", "build", "--source", f"procedural:{meshes}", "--out", str(manifest),
                                 "--preset", "tiny"])
    assert result.exit_code == 0, result.output
    assert len(manifest.read_text().splitlines()) == 4
    assert json.loads(manifest.with_name("manifest.report.json").read_text())["records"] == 4
    _folders(tmp_path / "render")
    result = runner.invoke(app, ["shard", "folders", str(tmp_path / "render"), "--out", str(tmp_path / "shards"),
                                 "--preset", "tiny"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "shards").glob("synthetic-vase-*.tar"))) == 1  # tiny: 4 per shard, 3 vases
    result = runner.invoke(app, ["inspect", str(tmp_path / "shards"), "--sheet", str(tmp_path / "s.png")])
    assert result.exit_code == 0 and (tmp_path / "s.png").is_file()
    result = runner.invoke(app, ["validate", str(tmp_path / "shards")])
    assert result.exit_code == 0 and "8 valid samples" in result.output
    result = runner.invoke(app, ["shard", "images", "cub", str(tmp_path / "missing"), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "no such collection folder" in result.output
    result = runner.invoke(app, ["meshes", "build", "--source", "nothing:x", "--out", str(manifest)])
    assert result.exit_code == 2 and "unknown mesh source" in result.output


def test_dataloader_workers_each_read_their_share_once(tmp_path):
    """webdataset's own worker splitting must not split a reader's share a second time inside DataLoader workers."""
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, IterableDataset, get_worker_info

    _folders(tmp_path / "render")
    pack_sample_folders(tmp_path / "render", tmp_path / "shards", "coll", per_shard=1)
    shards = resolve_shards(tmp_path / "shards")  # 8 single-sample shards

    class Keys(IterableDataset):
        def __iter__(self):
            info = get_worker_info()
            for s in iter_samples(shards, worker=info.id, num_workers=info.num_workers):
                yield s.info.key

    keys = list(DataLoader(Keys(), batch_size=None, num_workers=2))
    assert sorted(keys) == sorted(p.name for p in (tmp_path / "render").iterdir() if p.is_dir())
    assert torch.utils.data.get_worker_info() is None


def test_truncated_shard_is_counted_not_fatal_within_max_bad(tmp_path):
    _folders(tmp_path / "render")
    pack_sample_folders(tmp_path / "render", tmp_path / "shards", "coll", per_shard=10)
    tar = tmp_path / "shards" / "coll-vase-000000.tar"
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    skips = SkipCounter(max_bad=5)
    good = list(iter_samples([str(tar)], skips))
    assert len(good) < 3 and skips.skipped >= 1


def test_cli_packs_a_user_folder_collection(tmp_path):
    (tmp_path / "coll" / "Teapots").mkdir(parents=True)
    Image.new("RGB", (30, 20), (10, 200, 10)).save(tmp_path / "coll" / "Teapots" / "t1.jpg")
    mask = np.zeros((20, 30), np.uint8)
    mask[5:15, 5:25] = 255
    Image.fromarray(mask).save(tmp_path / "coll" / "Teapots" / "t1.mask.png")
    Image.new("RGB", (30, 20)).save(tmp_path / "coll" / "Teapots" / "t2.jpg")  # no mask
    runner = CliRunner()
    args = ["shard", "images", "folder", str(tmp_path / "coll"), "--out", str(tmp_path / "shards"), "--prefix", "mine"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "missing mask" in result.output
    result = runner.invoke(app, [*args, "--max-bad", "1"])
    assert result.exit_code == 0 and "1 bad samples skipped" in result.output
    assert json.loads((tmp_path / "shards" / "mine-teapot.index.json").read_text())["samples"] == 1


def test_a_file_that_is_not_a_tar_archive_is_refused_as_a_shard(tmp_path):
    (tmp_path / "README.md").write_text("# not a shard\n")
    with pytest.raises(Ss3dError, match="not a tar shard"):
        resolve_shards(str(tmp_path / "README.md"))
