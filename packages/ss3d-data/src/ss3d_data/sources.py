"""Mesh sources: fetching the offline Debian mesh libraries and scanning each source layout into candidates.

Sources (``ss3d-data meshes build --source NAME[:PATH]``):

- ``sweethome3d`` : Debian ``sweethome3d-furniture``; fetched with ``apt-get download`` + ``dpkg-deb -x``, the
  ``.sh3f`` catalogues (zips) unpacked to ``<cache>/sweethome3d/<catalogue>/``. Category from the model's name
  (its head noun, singular, with a few aliases: "Sitting female" -> person), licence per catalogue, author per model.
- ``libcgal``     : Debian ``libcgal-demo``; ``data.tar.gz`` unpacked to ``<cache>/libcgal/``; every OFF file under
  ``data/meshes`` is one instance, category = the file's name stem ("bunny00" -> bunny).
- ``folder:DIR``  : ``DIR/<category>/<instance>/<mesh>`` or ``DIR/<category>/<instance>.<ext>`` (OBJ+MTL, GLB, GLTF,
  PLY, OFF, STL). An optional ``DIR/source.json`` gives ``source``, ``licence``, ``attribution``, ``up_axis``.
- ``shapenet:DIR``: ShapeNetCore ``DIR/<synset>/<model_id>/models/model_normalized.obj``; category names from the
  synset map (``DIR/taxonomy.json`` when present, else the built-in map of common synsets).
- ``procedural:DIR``: a folder written by ``ss3d-data meshes procedural`` (a ``folder`` with its ``source.json``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from ss3d_data.errors import Ss3dError
from ss3d_data.meshes import MESH_SUFFIXES, MeshCandidate, normalise_category
from ss3d_data.schema import make_key

DEFAULT_CACHE = Path("shards/cache")
SH3D_PACKAGE = "sweethome3d-furniture"
CGAL_PACKAGE = "libcgal-demo"

# Head nouns of Sweet Home 3D model names that name the same kind of object. Keys are written as
# normalise_category leaves a head noun (singular, lower case), or they could never match (a test checks).
SH3D_ALIASES = {
    "female": "person", "male": "person", "boy": "person", "girl": "person", "man": "person", "woman": "person",
    "couch": "sofa", "bookcase": "bookshelf", "shelf": "bookshelf", "light": "lamp", "lamppost": "lamp",
    "spotlight": "lamp", "lantern": "lamp", "chandelier": "lamp", "ficus": "plant", "yucca": "plant", "tulip": "plant",
    "orchid": "plant", "bamboo": "plant", "spathiphyllum": "plant", "flower": "plant", "lily": "plant",
    "cactus": "plant", "hedge": "plant", "tree": "plant", "mug": "cup", "sedan": "car", "beetle": "car",
    "focus": "car", "leon": "car", "fridge": "refrigerator", "dustbin": "trashcan", "bin": "trashcan",
    "can": "trashcan", "bike": "motorbike", "scooter": "motorbike", "bank": "bench", "cat": "animal",
    "horse": "animal", "deer": "animal", "bulldog": "animal", "chicken": "animal", "wardrobe": "cabinet",
    "cupboard": "cabinet", "drawer": "cabinet", "dresser": "cabinet", "vanity": "cabinet", "crib": "bed",
    "futon": "sofa", "desk": "table", "jar": "vase", "pottery": "vase", "flacon": "bottle", "stool": "chair",
    "i_mac": "computer", "i_book": "laptop", "i_phone": "phone", "peugeot": "car", "scenic": "car",
    "yamaha": "motorbike",
    "right": "sign", "ahead": "sign", "pine": "plant", "maple": "plant", "poplar": "plant", "cypress": "plant",
    "beech": "plant", "acacia": "plant", "bush": "plant", "blossom": "plant", "conditioning": "air_conditioner",
}
# Two-word names whose head noun alone would file them wrongly (a clothes horse is not an animal).
SH3D_COMPOUNDS = {"clothes horse": "drying_rack", "rocking horse": "toy", "roasted chicken": "food"}
SH3D_LICENCES = {"public domain": "CC0-1.0", "creative commons attribution 3.0": "CC-BY-3.0"}
# ShapeNetCore v2 synsets of the common categories (a taxonomy.json in the dataset folder overrides this).
SHAPENET_SYNSETS = {
    "02691156": "airplane", "02747177": "trashcan", "02773838": "bag", "02801938": "basket", "02808440": "bathtub",
    "02818832": "bed", "02828884": "bench", "02843684": "birdhouse", "02871439": "bookshelf", "02876657": "bottle",
    "02880940": "bowl", "02924116": "bus", "02933112": "cabinet", "02942699": "camera", "02946921": "can",
    "02954340": "cap", "02958343": "car", "02992529": "cellphone", "03001627": "chair", "03046257": "clock",
    "03085013": "keyboard", "03207941": "dishwasher", "03211117": "display", "03261776": "earphone",
    "03325088": "faucet", "03337140": "file_cabinet", "03467517": "guitar", "03513137": "helmet", "03593526": "jar",
    "03624134": "knife", "03636649": "lamp", "03642806": "laptop", "03691459": "loudspeaker", "03710193": "mailbox",
    "03759954": "microphone", "03761084": "microwave", "03790512": "motorbike", "03797390": "mug",
    "03928116": "piano", "03938244": "pillow", "03948459": "pistol", "03991062": "pot", "04004475": "printer",
    "04074963": "remote", "04090263": "rifle", "04099429": "rocket", "04225987": "skateboard", "04256520": "sofa",
    "04330267": "stove", "04379243": "table", "04401088": "telephone", "04460130": "tower", "04468005": "train",
    "04530566": "vessel", "04554684": "washer",
}


def _run(cmd: list[str], cwd: Path) -> None:
    try:
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise Ss3dError(f"`{cmd[0]}` is not installed", hint="these sources need a Debian-like system") from None
    except subprocess.CalledProcessError as err:
        last = (err.stderr or err.stdout or "").strip().splitlines()[-1:] or ["no output"]
        raise Ss3dError(f"`{' '.join(cmd)}` failed: {last[0]}") from None


def download_deb(package: str, cache: Path) -> Path:
    """``apt-get download PACKAGE`` into ``cache/debs`` (no root needed) and return the .deb path."""
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        _run(["apt-get", "download", package], debs)
        found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        raise Ss3dError(f"apt-get download {package} produced no .deb file")
    return found[-1]


def _extract_deb(deb: Path, into: Path) -> None:
    _run(["dpkg-deb", "-x", str(deb), str(into)], into)


def _publish(tmp: Path, final: Path) -> None:
    """Move a completely unpacked folder into place (so a half-unpacked cache is never used)."""
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)


def unpack_sweethome3d(furniture_dir: Path, target: Path) -> Path:
    """Unzip every ``*.sh3f`` catalogue of ``furniture_dir`` into ``target/<catalogue>/``; returns ``target``."""
    catalogues = sorted(furniture_dir.glob("*.sh3f"))
    if not catalogues:
        raise Ss3dError(f"{furniture_dir}: no .sh3f furniture catalogues")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".sweethome3d.tmp-", dir=target.parent))
    for catalogue in catalogues:
        try:
            with zipfile.ZipFile(catalogue) as archive:
                archive.extractall(tmp / catalogue.stem)
        except zipfile.BadZipFile:
            shutil.rmtree(tmp, ignore_errors=True)
            raise Ss3dError(f"{catalogue}: not a zip archive") from None
    _publish(tmp, target)
    return target


def unpack_libcgal(data_tar: Path, target: Path) -> Path:
    """Extract the OFF meshes of CGAL's ``data.tar.gz`` into ``target/meshes/``; returns ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".libcgal.tmp-", dir=target.parent))
    (tmp / "meshes").mkdir()
    try:
        with tarfile.open(data_tar) as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if member.isfile() and member.name.lower().endswith(".off") and "meshes" in parts:
                    handle = tar.extractfile(member)
                    (tmp / "meshes" / Path(member.name).name).write_bytes(handle.read())  # type: ignore[union-attr]
    except tarfile.TarError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise Ss3dError(f"{data_tar}: not a readable tar archive ({err})") from None
    _publish(tmp, target)
    return target


def fetch_source(name: str, cache: str | os.PathLike[str] = DEFAULT_CACHE) -> Path:
    """Download and unpack a Debian mesh source into the cache; returns its folder. Already unpacked: no work."""
    cache_path = Path(cache).resolve()
    if name == "sweethome3d":
        target = cache_path / "sweethome3d"
        if target.is_dir():
            return target
        deb = download_deb(SH3D_PACKAGE, cache_path)
        with tempfile.TemporaryDirectory(dir=cache_path) as tmp:
            _extract_deb(deb, Path(tmp))
            return unpack_sweethome3d(Path(tmp) / "usr/share/sweethome3d/furniture", target)
    if name == "libcgal":
        target = cache_path / "libcgal"
        if target.is_dir():
            return target
        deb = download_deb(CGAL_PACKAGE, cache_path)
        with tempfile.TemporaryDirectory(dir=cache_path) as tmp:
            _extract_deb(deb, Path(tmp))
            tars = sorted(Path(tmp).glob("usr/share/doc/*/data.tar.gz"))
            if not tars:
                raise Ss3dError(f"{deb.name}: no data.tar.gz under usr/share/doc")
            return unpack_libcgal(tars[0], target)
    raise Ss3dError(f"unknown fetchable source {name!r}", hint="choose sweethome3d or libcgal")


def parse_properties(text: str) -> dict[str, str]:
    """A Java .properties file (key=value lines, # comments, backslash continuations, \\uXXXX escapes)."""
    out: dict[str, str] = {}
    logical: list[str] = []
    buffer = ""
    for raw in text.splitlines():
        line = raw.lstrip() if not buffer else raw.strip()
        if not buffer and (not line or line[0] in "#!"):
            continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            buffer += line[:-1]
            continue
        logical.append(buffer + line)
        buffer = ""
    for line in logical:
        match = re.match(r"((?:\\.|[^=:\s])+)\s*[=:]?\s*(.*)$", line)
        if match:
            key, value = match.groups()
            value = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), value)
            out[key.replace("\\", "")] = value.replace("\\:", ":").replace("\\=", "=").strip()
    return out


def sweethome3d_category(name: str) -> str:
    """Category of a Sweet Home 3D model from its display name: the head noun of the name's first phrase (cut at
    "with", "under", " - ", "("), leaving out words with digits, the word after a count ("3 panes") and short
    all-capital model codes; singular, through the aliases ("Double door with panes" -> door, "Rounded RJ45 plug"
    -> plug, "Convertible sofa BZ" -> sofa)."""
    phrase = re.split(r"\s(?:with|under|-)\s|\(", f" {name} ")[0] or name
    kept, after_count = [], False
    for token in phrase.split():
        if re.search(r"\d", token):
            after_count = token.isdigit()
            continue
        if not after_count:
            kept.append(token)
        after_count = False
    words = re.findall(r"[^\W\d_]+", " ".join(kept))
    if len(words) > 1:
        words = [w for w in words if not (w.isupper() and len(w) <= 4)] or words
    if not words:
        raise Ss3dError(f"cannot categorise model name {name!r}")
    head = normalise_category(words[-1])
    last_two = " ".join(words[-2:]).lower()
    if len(words) > 1 and last_two in SH3D_COMPOUNDS:
        return SH3D_COMPOUNDS[last_two]
    if len(words) > 1 and head in ("seat", "unit", "model", "set"):
        head = normalise_category(words[-2])
    return SH3D_ALIASES.get(head, head)


def _sh3d_licence(text: str) -> str:
    low = text.lower()
    for needle, spdx in SH3D_LICENCES.items():
        if needle in low:
            return spdx
    return text.strip() or "unknown"


def scan_sweethome3d(root: str | os.PathLike[str]) -> Iterator[MeshCandidate]:
    """Candidates from unpacked catalogues ``root/<catalogue>/PluginFurnitureCatalog.properties`` + model files."""
    root_path = Path(root)
    catalogues = sorted(p.parent for p in root_path.glob("*/PluginFurnitureCatalog.properties"))
    if not catalogues:
        raise Ss3dError(f"{root_path}: no unpacked Sweet Home 3D catalogues",
                        hint="run `ss3d-data meshes fetch sweethome3d` first")
    for folder in catalogues:
        props = parse_properties((folder / "PluginFurnitureCatalog.properties").read_text(encoding="latin-1"))
        licence = _sh3d_licence(props.get("license", ""))
        numbers = sorted(int(k.split("#")[1]) for k in props if k.startswith("model#"))
        for n in numbers:
            model = props[f"model#{n}"].lstrip("/")
            name = props.get(f"name#{n}", Path(model).stem)
            creator = props.get(f"creator#{n}", "")
            attribution = f"{name} by {creator}" if creator else name
            attribution += f" ({folder.name} catalogue, Debian {SH3D_PACKAGE}; {props.get('license', licence)})"
            yield MeshCandidate(
                path=folder / model,
                instance_id=make_key("sh3d", folder.name, Path(model).stem),
                category=sweethome3d_category(name),
                source="sweethome3d-furniture",
                licence=licence,
                attribution=attribution,
                up_axis="y",  # Sweet Home 3D models are Y-up OBJ files
            )


def libcgal_category(stem: str) -> str:
    """Category of a CGAL demo mesh from its file stem: the first alphabetic word ("bunny00" -> bunny,
    "elephant-with-holes" -> elephant, "ChineseDragon-10kv" -> chinese_dragon)."""
    words = [w for w in re.split(r"[^A-Za-z]+", stem) if w]
    if not words:
        raise Ss3dError(f"cannot categorise mesh file {stem!r}")
    return normalise_category(words[0])


# The CGAL demo meshes come from many scanners and modellers, mostly Y-up; these are Z-up (measured: the human
# figure's height runs along file Z).
LIBCGAL_UP_AXES = {"man": "z"}


def scan_libcgal(root: str | os.PathLike[str], up_axis: str = "y") -> Iterator[MeshCandidate]:
    """Candidates from ``root/meshes/*.off`` (an unpacked ``libcgal-demo``); ``up_axis`` unless listed in
    ``LIBCGAL_UP_AXES``."""
    meshes = sorted((Path(root) / "meshes").glob("*.off"))
    if not meshes:
        raise Ss3dError(f"{root}: no OFF meshes under meshes/", hint="run `ss3d-data meshes fetch libcgal` first")
    for path in meshes:
        yield MeshCandidate(path=path, instance_id=make_key("cgal", path.stem), category=libcgal_category(path.stem),
                            source="libcgal-demo", licence="GPL-3.0-or-later",
                            attribution=f"{path.name} from the CGAL demo data (Debian {CGAL_PACKAGE})",
                            up_axis=LIBCGAL_UP_AXES.get(path.stem, up_axis))


def _mesh_in(folder: Path) -> Path | None:
    """The main mesh file of an instance folder: by format preference, then shortest path."""
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MESH_SUFFIXES]
    if not files:
        return None
    return min(files, key=lambda p: (MESH_SUFFIXES.index(p.suffix.lower()), len(p.parts), str(p)))


def read_source_info(root: Path) -> dict[str, str]:
    info_path = root / "source.json"
    if not info_path.is_file():
        return {}
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise Ss3dError(f"{info_path}: not JSON ({err})") from None
    if not isinstance(info, dict):
        raise Ss3dError(f"{info_path}: must hold a JSON object")
    return {k: str(v) for k, v in info.items()}


def scan_folder(root: str | os.PathLike[str], source: str = "folder", licence: str = "unknown",
                up_axis: str | None = None) -> Iterator[MeshCandidate]:
    """Candidates from ``root/<category>/<instance>/...`` or ``root/<category>/<instance>.<ext>``."""
    root_path = Path(root)
    if not root_path.is_dir():
        raise Ss3dError(f"{root_path}: no such mesh folder")
    info = read_source_info(root_path)
    source = info.get("source", source)
    licence = info.get("licence", licence)
    up = up_axis or info.get("up_axis", "y")
    for category_dir in sorted(p for p in root_path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        category = normalise_category(category_dir.name)
        for entry in sorted(category_dir.iterdir()):
            if entry.name.startswith("."):
                continue
            path = _mesh_in(entry) if entry.is_dir() else (entry if entry.suffix.lower() in MESH_SUFFIXES else None)
            if path is None:
                continue
            yield MeshCandidate(path=path, instance_id=make_key(source, category, entry.stem if entry.is_file()
                                                                else entry.name),
                                category=category, source=source, licence=licence,
                                attribution=info.get("attribution", ""), up_axis=up)


def shapenet_synsets(root: Path) -> dict[str, str]:
    """Synset id -> category name: ``root/taxonomy.json`` (ShapeNet's list of {synsetId, name}) or the built-in map."""
    taxonomy = root / "taxonomy.json"
    if not taxonomy.is_file():
        return dict(SHAPENET_SYNSETS)
    try:
        entries = json.loads(taxonomy.read_text(encoding="utf-8"))
        return {e["synsetId"]: normalise_category(e["name"].split(",")[0]) for e in entries}
    except (ValueError, KeyError, TypeError) as err:
        raise Ss3dError(f"{taxonomy}: not a ShapeNet taxonomy ({err})") from None


def scan_shapenet(root: str | os.PathLike[str]) -> Iterator[MeshCandidate]:
    """Candidates from ShapeNetCore: ``root/<synset>/<model_id>/models/model_normalized.obj`` (Y-up)."""
    root_path = Path(root)
    synsets = shapenet_synsets(root_path)
    found = False
    for synset_dir in sorted(p for p in root_path.iterdir() if p.is_dir() and re.fullmatch(r"\d{8}", p.name)):
        category = synsets.get(synset_dir.name, f"synset_{synset_dir.name}")
        for model in sorted(synset_dir.glob("*/models/model_normalized.obj")):
            found = True
            model_id = model.parent.parent.name
            yield MeshCandidate(path=model, instance_id=make_key("shapenet", synset_dir.name, model_id),
                                category=category, source="shapenet-core", licence="ShapeNet-terms-of-use",
                                attribution=f"ShapeNetCore {synset_dir.name}/{model_id}", up_axis="y")
    if not found:
        raise Ss3dError(f"{root_path}: no <synset>/<model>/models/model_normalized.obj files")


def scan_source(spec: str, cache: str | os.PathLike[str] = DEFAULT_CACHE) -> list[MeshCandidate]:
    """Candidates of one ``--source`` spec: ``sweethome3d``, ``libcgal``, ``folder:DIR``, ``shapenet:DIR``,
    ``procedural:DIR`` (the Debian sources read the cache, fetching first if needed)."""
    kind, _, arg = spec.partition(":")
    if kind in ("sweethome3d", "libcgal"):
        root = Path(arg) if arg else fetch_source(kind, cache)
        return list(scan_sweethome3d(root) if kind == "sweethome3d" else scan_libcgal(root))
    if not arg:
        raise Ss3dError(f"source {spec!r} needs a folder: {kind}:DIR")
    if kind == "folder":
        return list(scan_folder(arg))
    if kind == "procedural":
        return list(scan_folder(arg, source="procedural", licence="CC0-1.0", up_axis="z"))
    if kind == "shapenet":
        return list(scan_shapenet(arg))
    raise Ss3dError(f"unknown mesh source {kind!r}", hint="use sweethome3d, libcgal, folder:DIR, shapenet:DIR, "
                    "procedural:DIR")


