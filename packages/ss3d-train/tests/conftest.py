"""Small real shards for the ss3d-train tests, made by an exact ray caster of analytic shapes.

Shapes live in the canonical frame inside [-0.5, 0.5]^3: an axis-aligned box with one colour per face and an
ellipsoid coloured by its normal. Cameras come from ``ss3d_model.look_at`` / ``intrinsics_matrix``; images are
written through ``ss3d_data.write_shards`` (real tar shards) and collection cameras through the sidecar writer.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ss3d_data import Sample, SampleInfo, write_cameras, write_shards
from ss3d_data.occupancy import HALF_SIZE, Occupancy
from ss3d_model import intrinsics_matrix, look_at, pixel_rays

FACE_COLOURS = np.array([[230, 40, 40], [40, 200, 200], [40, 200, 40], [200, 40, 200], [40, 40, 230],
                         [220, 220, 40]], dtype=np.float64)  # +X, -X, +Y, -Y, +Z, -Z


def cast(shape: dict, intrinsics: np.ndarray, cam2world: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact ray casting of one analytic shape -> rgb [size, size, 3] uint8 (black background), mask uint8."""
    ys, xs = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    pixels = torch.from_numpy(np.stack([xs, ys], -1).reshape(-1, 2).astype(np.float32) + 0.5)
    o, d = pixel_rays(torch.from_numpy(intrinsics).float(), torch.from_numpy(cam2world).float(), pixels)
    o, d = o.double().numpy(), d.double().numpy()
    half = np.asarray(shape["half"], dtype=np.float64)
    rgb = np.zeros((size * size, 3))
    if shape["kind"] == "box":
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = (-half - o) / d, (half - o) / d
        t_near = np.nanmax(np.minimum(t1, t2), axis=1)
        t_far = np.nanmin(np.maximum(t1, t2), axis=1)
        hit = (t_near < t_far) & (t_far > 0)
        axis = np.nanargmax(np.minimum(t1, t2), axis=1)
        point = o + d * t_near[:, None]
        sign = np.sign(point[np.arange(len(point)), axis])
        face = axis * 2 + (sign < 0)
        rgb[hit] = FACE_COLOURS[face[hit]]
    else:  # ellipsoid (x/a)^2 + (y/b)^2 + (z/c)^2 = 1, coloured by its normal
        os_, ds = o / half, d / half
        a, b, c = (ds * ds).sum(1), 2 * (os_ * ds).sum(1), (os_ * os_).sum(1) - 1
        disc = b * b - 4 * a * c
        hit = disc > 0
        t = (-b - np.sqrt(np.where(hit, disc, 0))) / (2 * a)
        hit &= t > 0
        normal = (o + d * t[:, None]) / half**2
        normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
        rgb[hit] = (normal[hit] * 0.5 + 0.5) * 220 + 20
    mask = np.where(hit, 255, 0).astype(np.uint8).reshape(size, size)
    return rgb.reshape(size, size, 3).astype(np.uint8), mask


SHAPES = {
    "box": {"kind": "box", "half": (0.42, 0.25, 0.18)},
    "ball": {"kind": "ellipsoid", "half": (0.45, 0.3, 0.22)},
}


def random_camera(rng: np.random.Generator, focal: float, size: int, distance: float = 2.6,
                  elevation_deg: float = 60.0) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    elev = math.radians(rng.uniform(-elevation_deg, elevation_deg))
    azim = rng.uniform(-math.pi, math.pi)
    c2w = look_at(torch.tensor(elev), torch.tensor(azim), torch.tensor(distance)).double().numpy()
    return intrinsics_matrix(focal, size).double().numpy(), c2w, (elev, azim)


def analytic_occupancy(shape: dict, resolution: int) -> Occupancy:
    """The exact solid of an analytic shape at the voxel centres of an occupancy grid."""
    axis = -HALF_SIZE + (np.arange(resolution) + 0.5) * 2 * HALF_SIZE / resolution
    centres = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1) / np.asarray(shape["half"])
    inside = np.abs(centres).max(-1) < 1 if shape["kind"] == "box" else (centres ** 2).sum(-1) < 1
    return Occupancy(inside, HALF_SIZE)


def make_views_shards(out: Path, prefix: str, instances: int, views: int, size: int = 48, focal: float = 90.0,
                      per_shard: int = 2, seed: int = 0, occupancy_resolution: int = 0) -> list[Path]:
    """``views`` shards: instance i is a box or an ellipsoid (alternating), ``views`` random cameras each (and its
    exact occupancy grid when ``occupancy_resolution`` > 0)."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(instances):
        category = ("box", "ball")[i % 2]
        imgs, masks, ks, c2ws = [], [], [], []
        for _ in range(views):
            k, c2w, _ = random_camera(rng, focal, size)
            img, msk = cast(SHAPES[category], k, c2w, size)
            imgs.append(img), masks.append(msk), ks.append(k), c2ws.append(c2w)
        info = SampleInfo(kind="views", key=f"{prefix}-{i:03d}", category=category, instance_id=f"{category}{i}",
                          source="analytic", licence="CC0")
        occupancy = analytic_occupancy(SHAPES[category], occupancy_resolution) if occupancy_resolution else None
        samples.append(Sample(info, np.stack(imgs), np.stack(masks), np.stack(ks).astype(np.float32),
                              np.stack(c2ws).astype(np.float32), occupancy))
    return write_shards(samples, out, prefix, per_shard=per_shard)


def make_image_shards(out: Path, prefix: str, category: str, images: int, size: int = 48, focal: float = 90.0,
                      per_shard: int = 2, seed: int = 1, elevation_deg: float = 60.0) -> list[Path]:
    """``image`` shards of one category with their true cameras in ``<prefix>.cameras.jsonl`` (sidecar)."""
    rng = np.random.default_rng(seed)
    samples, rows = [], []
    for i in range(images):
        k, c2w, _ = random_camera(rng, focal, size, elevation_deg=elevation_deg)
        img, msk = cast(SHAPES[category], k, c2w, size)
        key = f"{prefix}-{i:03d}"
        info = SampleInfo(kind="image", key=key, category=category, instance_id=f"{category}-{i}",
                          source="analytic", licence="CC0")
        samples.append(Sample(info, img[None], msk[None]))
        rows.append((key, k, c2w))
    paths = write_shards(samples, out, prefix, per_shard=per_shard)
    write_cameras(out / f"{prefix}.cameras.jsonl", rows)
    return paths


@pytest.fixture(scope="session")
def views_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("views")
    make_views_shards(out, "synth", instances=8, views=4)
    return out


@pytest.fixture(scope="session")
def occupancy_views_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("views-occupancy")
    make_views_shards(out, "synth", instances=8, views=4, occupancy_resolution=24)
    return out


@pytest.fixture(scope="session")
def collection_dirs(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("collections")
    dirs = {}
    for seed, category in enumerate(("box", "ball")):
        folder = out / category
        make_image_shards(folder, category, category, images=4, seed=10 + seed)
        dirs[category] = folder
    return dirs


SMALL_PRESET = """# ss3d-train tests: tiny, with a smaller encoder and image, so a step takes a fraction of a second.
[preset]
inherit = "tiny"

[model]
encoder_arch = "resnet18"
input_size = 32
hidden = 16

[volume]
samples_per_ray = 12

[data]
supervision_size = 24

[pretrain]
batch_size = 2
supervision_views = 2
rays_per_view = 48
epochs = 2
lr = 1e-3
checkpoint_every = 3

[selftrain]
batch_size = 2
hypotheses = 4
camera_epochs = 1
joint_epochs = 1
camera_steps_per_step = 2
rays_per_hypothesis = 32
checkpoint_every = 3

[distill]
batch_size = 2
points_per_image = 256
epochs = 2
lr = 1e-3
checkpoint_every = 3
"""


@pytest.fixture(scope="session")
def small_preset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("preset") / "small.toml"
    path.write_text(SMALL_PRESET)
    return path


def preset_with(base: Path, folder: Path, **sections: dict) -> Path:
    """A preset inheriting ``base`` with extra overrides ({section: {key: value}})."""
    lines = ["[preset]", f'inherit = "{base}"']
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {str(v).lower()}" if isinstance(v, bool)
                  else f"{k} = {v!r}" for k, v in values.items()]
    path = folder / "override.toml"
    path.write_text("\n".join(lines).replace("'", '"') + "\n")
    return path


@pytest.fixture
def override_preset():
    """``override_preset(base, folder, section={key: value})`` -> path of a preset overriding ``base``."""
    return preset_with


@pytest.fixture
def make_collection():
    """``make_collection(folder, prefix, category, images=, seed=, elevation_deg=)``: image shards + sidecar."""
    return make_image_shards
