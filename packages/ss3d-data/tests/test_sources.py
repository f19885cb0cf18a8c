"""Debian mesh sources on small archives that mimic the real package layouts; the real fetch is marked slow."""

import io
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
import trimesh

from ss3d_data import Ss3dError
from ss3d_data.manifest import read_manifest
from ss3d_data.meshes import build_manifest
from ss3d_data.sources import (
    fetch_source,
    libcgal_category,
    parse_properties,
    scan_libcgal,
    scan_source,
    scan_sweethome3d,
    sweethome3d_category,
    unpack_libcgal,
    unpack_sweethome3d,
)

_OBJ_BOX = trimesh.creation.box(extents=(0.4, 0.9, 0.5))


def _obj_text() -> str:
    lines = ["mtllib model.mtl", "usemtl wood"] + [f"v {x} {y} {z}" for x, y, z in _OBJ_BOX.vertices]
    return "\n".join(lines + [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in _OBJ_BOX.faces]) + "\n"


def _sh3f(path: Path, licence: str, models: list[tuple[str, str, str]]) -> None:
    """A furniture catalogue zip like Debian's: properties + /<folder>/<model>/<model>.obj (+ mtl, texture)."""
    props = ["# PluginFurnitureCatalog.properties", "id=Test", "name=Test catalogue", f"license={licence}", ""]
    with zipfile.ZipFile(path, "w") as archive:
        for n, (model, name, creator) in enumerate(models, start=1):
            props += [f"id#{n}=Test#{model}", f"name#{n}={name}", f"category#{n}=Living room",
                      f"model#{n}=/test/{model}/{model}.obj", f"creator#{n}={creator}", "multiPartModel#1=true", ""]
            archive.writestr(f"test/{model}/{model}.obj", _obj_text())
            archive.writestr(f"test/{model}/model.mtl", "newmtl wood\nKd 1 1 1\nmap_Kd wood.png\n")
            buf = io.BytesIO()
            from PIL import Image

            Image.new("RGB", (2, 2), (120, 80, 40)).save(buf, format="PNG")
            archive.writestr(f"test/{model}/wood.png", buf.getvalue())
        archive.writestr("PluginFurnitureCatalog.properties", "\n".join(props).encode("latin-1"))
        archive.writestr("LICENSE.TXT", licence)


def test_properties_parser_handles_escapes_and_continuations():
    text = "# c\n! c\nname#1=Caf\\u00e9 chair\nlong=a \\\n   b\nkey\\:x = y\nempty=\n"
    assert parse_properties(text) == {"name#1": "Café chair", "long": "a b", "key:x": "y", "empty": ""}


@pytest.mark.parametrize(("name", "category"), [("Office chairs", "chair"), ("Sitting female", "person"),
                                                ("Bedside table", "table"), ("Couch", "sofa"), ("Tulips", "plant"),
                                                ("Concept Sedan 01", "car"), ("Rounded RJ45 plug", "plug"),
                                                ("Double window 3 panes", "window"), ("Convertible sofa BZ", "sofa"),
                                                ("Horse", "animal"), ("Clothes horse", "drying_rack"),
                                                ("Rocking horse", "toy"), ("Roasted chicken", "food"),
                                                ("Chest of drawers", "cabinet"), ("Logs", "log")])
def test_sweethome3d_categories_from_names(name, category):
    assert sweethome3d_category(name) == category


def test_every_alias_key_survives_normalisation():
    """The aliases are looked up after the head noun is normalised (singular, lower case, ``_``-joined): a key in
    any other form can never match."""
    from ss3d_data.meshes import _SINGULAR, normalise_category, singular
    from ss3d_data.sources import SH3D_ALIASES

    assert [k for k in SH3D_ALIASES if normalise_category(k) != k] == []
    # irregular plurals are looked up one lower-case word at a time
    assert [k for k in _SINGULAR if not k.isalpha() or not k.islower() or singular(k) != _SINGULAR[k]] == []


def test_sweethome3d_fixture_catalogues_to_manifest(tmp_path):
    furniture = tmp_path / "usr/share/sweethome3d/furniture"
    furniture.mkdir(parents=True)
    _sh3f(furniture / "BlendSwap-CC-0.sh3f", "Public domain", [("armchair", "Armchair", "Absfrm"),
                                                               ("chair2", "Chair", "Someone")])
    _sh3f(furniture / "Scopia.sh3f", "Creative Commons Attribution 3.0 Unported license", [("lamp", "Desk lamp", "")])
    root = unpack_sweethome3d(furniture, tmp_path / "cache" / "sweethome3d")
    candidates = list(scan_sweethome3d(root))
    assert [(c.instance_id, c.category, c.licence) for c in candidates] == [
        ("sh3d-BlendSwap-CC-0-armchair", "armchair", "CC0-1.0"), ("sh3d-BlendSwap-CC-0-chair2", "chair", "CC0-1.0"),
        ("sh3d-Scopia-lamp", "lamp", "CC-BY-3.0")]
    assert candidates[0].attribution.startswith("Armchair by Absfrm")
    out = tmp_path / "m.jsonl"
    report = build_manifest(candidates, out)
    assert report.skipped == [] and all(r.textured for r in read_manifest(out))
    assert scan_source(f"sweethome3d:{root}")[0].up_axis == "y"


def test_libcgal_fixture_archive_to_candidates(tmp_path):
    data = tmp_path / "data.tar.gz"
    with tarfile.open(data, "w:gz") as tar:
        for name in ("bunny00.off", "elephant-with-holes.off", "ChineseDragon-10kv.off", "README"):
            payload = trimesh.exchange.off.export_off(trimesh.creation.icosphere(1)).encode()
            info = tarfile.TarInfo(f"data/meshes/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    root = unpack_libcgal(data, tmp_path / "cache" / "libcgal")
    got = [(c.instance_id, c.category, c.source) for c in scan_libcgal(root)]
    assert got == [("cgal-ChineseDragon-10kv", "chinese_dragon", "libcgal-demo"),
                   ("cgal-bunny00", "bunny", "libcgal-demo"),
                   ("cgal-elephant-with-holes", "elephant", "libcgal-demo")]
    assert libcgal_category("3torus") == "torus"


def test_missing_caches_and_unknown_sources_are_clear_errors(tmp_path):
    with pytest.raises(Ss3dError, match="no unpacked Sweet Home 3D"):
        list(scan_sweethome3d(tmp_path))
    with pytest.raises(Ss3dError, match="unknown mesh source"):
        scan_source("thingiverse:x")
    with pytest.raises(Ss3dError, match="needs a folder"):
        scan_source("folder")
    with pytest.raises(Ss3dError, match="unknown fetchable source"):
        fetch_source("shapenet", tmp_path)


def _apt_download_works(tmp_path: Path) -> bool:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        return False
    probe = subprocess.run(["apt-get", "download", "--print-uris", "libcgal-demo"], capture_output=True, text=True,
                           cwd=tmp_path)
    return probe.returncode == 0 and "libcgal-demo" in probe.stdout


@pytest.mark.slow
def test_real_libcgal_fetch_and_build(tmp_path):
    if not _apt_download_works(tmp_path):
        pytest.skip("apt-get download is not possible on this machine")
    root = fetch_source("libcgal", tmp_path / "cache")
    candidates = list(scan_libcgal(root))
    assert len(candidates) > 100 and {"bunny", "cow", "elephant"} <= {c.category for c in candidates}
    report = build_manifest([c for c in candidates if c.category in ("bunny", "cow", "elephant")], tmp_path / "m.jsonl")
    assert report.records >= 3


@pytest.mark.slow
def test_real_sweethome3d_fetch(tmp_path):
    if not _apt_download_works(tmp_path):
        pytest.skip("apt-get download is not possible on this machine")
    candidates = list(scan_sweethome3d(fetch_source("sweethome3d", tmp_path / "cache")))
    assert len(candidates) == 820
    categories = {c.category for c in candidates}
    assert {"chair", "table", "lamp", "sofa", "bed", "bottle"} <= categories
    report = build_manifest([c for c in candidates if c.category == "bottle"], tmp_path / "m.jsonl")
    assert report.records >= 8
