"""Each image-collection layout on small fixture files made here, and the errors for bad inputs."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from ss3d_data import Ss3dError
from ss3d_data.layouts import load_item, read_layout


def _image(path: Path, size=(40, 30), colour=(200, 30, 30), fmt=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format=fmt)
    return path


def _mask(path: Path, size=(40, 30), empty=False, binary=False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros(size[::-1], np.uint8)
    if not empty:
        m[5:20, 10:30] = 1 if binary else 255
    Image.fromarray(m).save(path)
    return path


def _load_all(items):
    return [load_item(i) for i in items]


def test_user_folder_with_masks_beside_or_in_masks_subfolder(tmp_path):
    _image(tmp_path / "Mugs" / "a.jpg")
    _mask(tmp_path / "Mugs" / "a.mask.png")
    _image(tmp_path / "Mugs" / "b.png")
    _mask(tmp_path / "Mugs" / "masks" / "b.png")
    items = read_layout("folder", tmp_path)
    assert [(i.key, i.category) for i in items] == [("folder-mug-a", "mug"), ("folder-mug-b", "mug")]
    samples = _load_all(items)
    assert samples[0].images.shape == (1, 30, 40, 3) and samples[0].masks[0, 10, 15] == 255
    assert samples[1].info.kind == "image" and samples[1].intrinsics is None


def test_bad_inputs_give_clear_errors(tmp_path):
    _image(tmp_path / "cup" / "nomask.jpg")
    _image(tmp_path / "cup" / "small.jpg")
    _mask(tmp_path / "cup" / "small.mask.png", size=(20, 15))
    _image(tmp_path / "cup" / "blank.jpg")
    _mask(tmp_path / "cup" / "blank.mask.png", empty=True)
    (tmp_path / "cup" / "broken.jpg").write_bytes(b"not a jpeg")
    _mask(tmp_path / "cup" / "broken.mask.png")
    items = {i.key.split("-")[-1]: i for i in read_layout("folder", tmp_path)}
    for name, message in (("nomask", "missing mask"), ("small", "is 20x15 but the image is 40x30"),
                          ("blank", "is empty"), ("broken", "not a readable image")):
        with pytest.raises(Ss3dError, match=message):
            load_item(items[name])
    with pytest.raises(Ss3dError, match="no such collection folder"):
        read_layout("folder", tmp_path / "nope")
    with pytest.raises(Ss3dError, match="unknown collection layout"):
        read_layout("imagenet", tmp_path)


def test_cub_layout_keeps_its_train_test_split(tmp_path):
    rels = ["001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg",
            "002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg"]
    for rel in rels:
        _image(tmp_path / "images" / rel)
        _mask(tmp_path / "segmentations" / Path(rel).with_suffix(".png"))
    (tmp_path / "images.txt").write_text("".join(f"{i + 1} {r}\n" for i, r in enumerate(rels)))
    (tmp_path / "train_test_split.txt").write_text("1 1\n2 0\n")
    items = read_layout("cub", tmp_path)
    assert [(i.category, i.split) for i in items] == [("bird", "train"), ("bird", "test")]
    assert _load_all(items)[1].info.extra["class"] == "002.Laysan_Albatross"


def test_pascal3d_layout_with_mat_annotations_and_mask_folder(tmp_path):
    def annotate(sub, name, classes):
        objects = np.zeros((len(classes),), dtype=[("class", "O"), ("bbox", "O")])
        for k, cls in enumerate(classes):
            objects[k] = (cls, np.array([1.0, 2.0, 30.0, 25.0]))
        path = tmp_path / "Annotations" / sub / f"{name}.mat"
        path.parent.mkdir(parents=True, exist_ok=True)
        savemat(path, {"record": {"filename": f"{name}.JPEG", "objects": objects}})

    _image(tmp_path / "Images" / "car_imagenet" / "n0001.JPEG", fmt="JPEG")
    annotate("car_imagenet", "n0001", ["car"])
    _image(tmp_path / "Images" / "car_pascal" / "2008_0001.jpg")
    annotate("car_pascal", "2008_0001", ["person"])  # no car: skipped
    _image(tmp_path / "Images" / "aeroplane_imagenet" / "n0002.JPEG", fmt="JPEG")
    annotate("aeroplane_imagenet", "n0002", ["aeroplane", "aeroplane"])
    masks = tmp_path / "seg"
    _mask(masks / "car_imagenet" / "n0001.png")
    _mask(masks / "aeroplane_imagenet" / "n0002.png")
    items = read_layout("pascal3d", tmp_path, masks=masks)
    assert [(i.category, i.key) for i in items] == [("aeroplane", "pascal3d-aeroplane_imagenet-n0002"),
                                                    ("car", "pascal3d-car_imagenet-n0001")]
    samples = _load_all(items)
    assert samples[0].info.extra["boxes"] == [[1.0, 2.0, 30.0, 25.0]] * 2


def test_co3d_layout_splits_per_sequence(tmp_path):
    for seq in ("110_13051_23361", "189_20393_38136"):
        for f in range(3):
            _image(tmp_path / "teddybear" / seq / "images" / f"frame{f + 1:06d}.jpg")
            _mask(tmp_path / "teddybear" / seq / "masks" / f"frame{f + 1:06d}.png", binary=True)
    items = read_layout("co3d", tmp_path, every=2)
    assert len(items) == 4 and {i.category for i in items} == {"teddybear"}
    by_seq = {}
    for i in items:
        by_seq.setdefault(i.instance_id, set()).add(i.split)
    assert all(len(s) == 1 for s in by_seq.values()) and len(by_seq) == 2
    assert _load_all(items)[0].masks.max() == 255  # 0/1 masks are scaled to 0/255


def test_openimages_layout_resizes_masks_and_filters_categories(tmp_path):
    _image(tmp_path / "images" / "0a1b.jpg", size=(60, 40))
    _image(tmp_path / "images" / "0c2d.jpg", size=(60, 40))
    _mask(tmp_path / "masks" / "0a1b_m0k4j_1a2b.png", size=(30, 20))
    _mask(tmp_path / "masks" / "0c2d_m01yrx_3c4d.png", size=(30, 20))
    (tmp_path / "classes.csv").write_text("LabelName,DisplayName\n/m/0k4j,Car\n/m/01yrx,Cat\n")
    (tmp_path / "masks.csv").write_text(
        "MaskPath,ImageID,LabelName,BoxID,BoxXMin,BoxXMax,BoxYMin,BoxYMax,PredictedIoU,Clicks\n"
        "0a1b_m0k4j_1a2b.png,0a1b,/m/0k4j,1a2b,0.1,0.9,0.1,0.9,0.8,\n"
        "0c2d_m01yrx_3c4d.png,0c2d,/m/01yrx,3c4d,0.1,0.9,0.1,0.9,0.8,\n")
    items = read_layout("openimages", tmp_path, categories=["cars"])
    assert [(i.category, i.key) for i in items] == [("car", "oi-0a1b_m0k4j_1a2b")]
    sample = load_item(items[0])
    assert sample.masks.shape == (1, 40, 60)
    assert load_item(items[0], max_side=30).images.shape == (1, 20, 30, 3)
