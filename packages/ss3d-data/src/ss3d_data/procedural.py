"""Procedural meshes (``ss3d-data meshes procedural``): small categorised objects built from trimesh primitives
with random proportions and per-category structure, coloured per part with vertex colours, so that the whole
pipeline can run with no download. Deterministic given the seed: instance ``j`` of category ``c`` uses its own
generator seeded from (seed, c, j), so adding categories or instances never changes existing ones.

Output: ``OUT/<category>/<category>_NNN.ply`` (Z-up) and ``OUT/source.json`` (source, licence, up axis), a
``folder`` source for ``ss3d-data meshes build --source procedural:OUT``.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ss3d_data.atomic import atomic_write_bytes, atomic_write_text
from ss3d_data.errors import Ss3dError


def _trimesh():
    import trimesh  # heavy import, only when generating

    return trimesh


def _part(mesh, rgb: np.ndarray):
    colour = np.concatenate([np.clip(rgb, 0, 1) * 255, [255]]).astype(np.uint8)
    mesh.visual.vertex_colors = np.tile(colour, (len(mesh.vertices), 1))
    return mesh


def _at(mesh, xyz):
    mesh.apply_translation(xyz)
    return mesh


def _colour(rng: np.random.Generator) -> np.ndarray:
    hue = rng.uniform(0, 1)
    base = np.array([abs(hue * 6 - 3) - 1, 2 - abs(hue * 6 - 2), 2 - abs(hue * 6 - 4)])
    return 0.25 + 0.6 * np.clip(base, 0, 1) * rng.uniform(0.6, 1.0)


def _cylinder(r, h, z0, rgb, sections=24):
    t = _trimesh()
    return _part(_at(t.creation.cylinder(radius=r, height=h, sections=sections), (0, 0, z0 + h / 2)), rgb)


def _box(extents, centre, rgb):
    return _part(_at(_trimesh().creation.box(extents=extents), centre), rgb)


def _sphere(r, centre, rgb, scale=(1, 1, 1)):
    mesh = _trimesh().creation.icosphere(subdivisions=2, radius=r)
    mesh.apply_scale(scale)
    return _part(_at(mesh, centre), rgb)


def _lathe(radii: np.ndarray, heights: np.ndarray, rgb, sections=32):
    """A surface of revolution through profile points (radius, height) around Z."""
    profile = np.column_stack([radii, heights])
    return _part(_trimesh().creation.revolve(profile, sections=sections), rgb)


def cup(rng):
    r, h = rng.uniform(0.25, 0.4), rng.uniform(0.5, 0.9)
    body = _cylinder(r, h, 0, _colour(rng))
    handle = _trimesh().creation.torus(major_radius=h * 0.25, minor_radius=0.04 + 0.02 * rng.uniform())
    handle.apply_transform(_trimesh().transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
    return [body, _part(_at(handle, (r, 0, h / 2)), _colour(rng))]


def table(rng):
    w, d, h = rng.uniform(0.8, 1.6), rng.uniform(0.5, 1.0), rng.uniform(0.5, 0.9)
    top_t, leg = rng.uniform(0.04, 0.1), rng.uniform(0.04, 0.08)
    wood, legs = _colour(rng), _colour(rng)
    parts = [_box((w, d, top_t), (0, 0, h - top_t / 2), wood)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(_box((leg, leg, h - top_t), (sx * (w / 2 - leg), sy * (d / 2 - leg), (h - top_t) / 2), legs))
    return parts


def chair(rng):
    w, seat_h, back_h = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.5), rng.uniform(0.3, 0.6)
    leg, t = rng.uniform(0.03, 0.06), 0.05
    seat, legs = _colour(rng), _colour(rng)
    parts = [_box((w, w, t), (0, 0, seat_h), seat), _box((w, t, back_h), (0, w / 2 - t / 2, seat_h + back_h / 2), seat)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(_box((leg, leg, seat_h), (sx * (w / 2 - leg), sy * (w / 2 - leg), seat_h / 2), legs))
    return parts


def lamp(rng):
    base_r, pole_h, shade_r = rng.uniform(0.15, 0.3), rng.uniform(0.6, 1.4), rng.uniform(0.2, 0.4)
    shade = _lathe(np.array([0.01, shade_r, shade_r * rng.uniform(0.4, 0.7), 0.01]),
                   np.array([0.0, 0.0, 0.3, 0.3]) + pole_h, _colour(rng))
    return [_cylinder(base_r, 0.05, 0, _colour(rng)), _cylinder(0.025, pole_h, 0.05, _colour(rng)), shade]


def bottle(rng):
    r, h, neck = rng.uniform(0.12, 0.22), rng.uniform(0.5, 0.8), rng.uniform(0.04, 0.07)
    radii = np.array([0.001, r, r, neck, neck, 0.001])
    heights = np.array([0, 0, h, h + 0.12, h + 0.3, h + 0.3])
    return [_lathe(radii, heights, _colour(rng))]


def vase(rng):
    heights = np.linspace(0, rng.uniform(0.6, 1.2), 8)
    radii = 0.15 + 0.15 * np.abs(np.sin(np.linspace(0, np.pi * rng.uniform(0.8, 1.6), 8) + rng.uniform(0, 1)))
    return [_lathe(np.concatenate([[0.001], radii, [0.001]]), np.concatenate([[0], heights, [heights[-1]]]),
                   _colour(rng))]


def mushroom(rng):
    stem_r, stem_h, cap_r = rng.uniform(0.05, 0.12), rng.uniform(0.2, 0.5), rng.uniform(0.2, 0.4)
    cap = _sphere(cap_r, (0, 0, stem_h), _colour(rng), scale=(1, 1, rng.uniform(0.4, 0.8)))
    return [_cylinder(stem_r, stem_h, 0, np.array([0.9, 0.85, 0.7])), cap]


def dumbbell(rng):
    bar_l, bar_r, ball_r = rng.uniform(0.5, 0.9), rng.uniform(0.03, 0.06), rng.uniform(0.12, 0.22)
    metal, ends = _colour(rng), _colour(rng)
    bar = _trimesh().creation.cylinder(radius=bar_r, height=bar_l, sections=16)
    bar.apply_transform(_trimesh().transformations.rotation_matrix(np.pi / 2, [0, 1, 0]))
    return [_part(_at(bar, (0, 0, ball_r)), metal), _sphere(ball_r, (-bar_l / 2, 0, ball_r), ends),
            _sphere(ball_r, (bar_l / 2, 0, ball_r), ends)]


def snowman(rng):
    r1 = rng.uniform(0.25, 0.35)
    r2, r3 = r1 * rng.uniform(0.6, 0.8), r1 * rng.uniform(0.4, 0.55)
    white = np.array([0.95, 0.95, 0.97])
    z2, z3 = r1 * 2 + r2 * 0.8, r1 * 2 + r2 * 1.8 + r3 * 0.8
    return [_sphere(r1, (0, 0, r1), white), _sphere(r2, (0, 0, z2), white), _sphere(r3, (0, 0, z3), white),
            _cylinder(r3 * 0.8, r3 * 0.8, z3 + r3 * 0.7, _colour(rng))]


def bowl(rng):
    r, h = rng.uniform(0.3, 0.5), rng.uniform(0.15, 0.3)
    radii = np.array([0.001, r * 0.5, r, r * 0.92, r * 0.45, 0.001])
    heights = np.array([0, 0, h, h, 0.04, 0.04])
    return [_lathe(radii, heights, _colour(rng))]


BUILDERS: dict[str, Callable[[np.random.Generator], list]] = {
    "cup": cup, "table": table, "lamp": lamp, "bottle": bottle, "chair": chair, "vase": vase,
    "mushroom": mushroom, "dumbbell": dumbbell, "snowman": snowman, "bowl": bowl,
}


def instance_rng(seed: int, category: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(category.encode()), index])


def make_instance(category: str, seed: int, index: int):
    """One procedural mesh (a ``trimesh.Trimesh`` with vertex colours, Z-up) of ``category``."""
    if category not in BUILDERS:
        raise Ss3dError(f"no procedural category {category!r}", hint=f"choose from {', '.join(BUILDERS)}")
    parts = BUILDERS[category](instance_rng(seed, category, index))
    return _trimesh().util.concatenate(parts)


def generate(out: str | os.PathLike[str], categories: int = 8, instances: int = 4, seed: int = 0) -> list[Path]:
    """Write ``instances`` meshes for each of the first ``categories`` procedural categories under ``out``.
    Existing files are kept (a killed run resumes); returns every mesh path."""
    if not 1 <= categories <= len(BUILDERS):
        raise Ss3dError(f"--categories must be 1..{len(BUILDERS)}, got {categories}")
    if instances < 1:
        raise Ss3dError(f"--instances must be at least 1, got {instances}")
    root = Path(out)
    paths = []
    for category in list(BUILDERS)[:categories]:
        for j in range(instances):
            path = root / category / f"{category}_{j:03d}.ply"
            if not path.is_file():
                atomic_write_bytes(path, make_instance(category, seed, j).export(file_type="ply"))
            paths.append(path)
    info = {"source": "procedural", "licence": "CC0-1.0", "up_axis": "z", "seed": seed,
            "attribution": "generated by ss3d-data meshes procedural"}
    atomic_write_text(root / "source.json", json.dumps(info, indent=2, sort_keys=True) + "\n")
    return paths
