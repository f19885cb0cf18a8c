"""``ss3d-data``: mesh manifests, shards, and the contracts behind them.

Commands are thin wrappers: the work lives in :mod:`ss3d_data.sources`, :mod:`ss3d_data.meshes`,
:mod:`ss3d_data.procedural`, :mod:`ss3d_data.layouts` and :mod:`ss3d_data.packing`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ss3d_data.clikit import Ss3dApp, console, make_app, progress
from ss3d_data.presets import available_presets, load_preset
from ss3d_data.shards import SkipCounter, iter_samples, resolve_shards

app = make_app("ss3d-data", "Build and check ss3d training data: mesh manifests and webdataset shards.")
meshes_app = Ss3dApp(help="Mesh sources and manifests.", no_args_is_help=True)
shard_app = Ss3dApp(help="Pack sample folders or image collections into shards.", no_args_is_help=True)
app.add_typer(meshes_app, name="meshes")
app.add_typer(shard_app, name="shard")

PresetOption = Annotated[str, typer.Option("--preset", envvar="SS3D_PRESET", help="Preset name or .toml path.")]
CacheOption = Annotated[Path, typer.Option(help="Folder for downloaded and unpacked sources (never in git).")]
MaxBadOption = Annotated[int, typer.Option(help="Skip and count up to this many bad samples (0: stop at the first).")]


@app.command("preset")
def preset_command(
    name: Annotated[str, typer.Argument(help="Preset name or path to a .toml file.")] = "",
) -> None:
    """Print a preset (all sections, inheritance resolved), or list the available presets."""
    if not name:
        for preset_name in available_presets():
            console.print(f"{preset_name}: {load_preset(preset_name).sections['preset'].get('description', '')}")
        return
    typer.echo(json.dumps(load_preset(name).sections, indent=2))


@app.command("validate")
def validate_command(
    shards: Annotated[list[str], typer.Argument(help="Shard files, folders or globs.")],
    max_bad: Annotated[int, typer.Option(help="Stop after this many corrupt samples.")] = 0,
) -> None:
    """Decode every sample of SHARDS against the shard contract; print counts per kind, category and split."""
    skips = SkipCounter(max_bad=max_bad)
    counts: Counter[tuple[str, str, str]] = Counter()
    for sample in iter_samples(resolve_shards(shards), skips):
        counts[(sample.info.kind, sample.info.category, sample.info.split)] += 1
    _print_counts(counts)
    console.print(f"{sum(counts.values())} valid samples, {skips.summary()}")
    _print_first_skip(skips)


def _print_first_skip(skips: SkipCounter) -> None:
    if skips.records:
        console.print(f"[yellow]first skipped:[/yellow] {skips.records[0].reason}")


def _print_counts(counts: dict[tuple[str, str, str], int]) -> None:
    table = Table("kind", "category", "split", "samples")
    for (kind, category, split), n in sorted(counts.items()):
        table.add_row(kind, category, split, str(n))
    console.print(table)


@app.command("inspect")
def inspect_command(
    shards: Annotated[list[str], typer.Argument(help="Shard files, folders or globs.")],
    sheet: Annotated[Path | None, typer.Option(help="Write a contact sheet PNG (masks overlaid in red).")] = None,
    per_category: Annotated[int, typer.Option(help="Samples per category on the contact sheet.")] = 6,
    max_bad: MaxBadOption = 0,
) -> None:
    """Counts per kind/category/split, and optionally a contact sheet of samples with their masks."""
    from ss3d_data.packing import inspect_shards

    result = inspect_shards(resolve_shards(shards), sheet, max_bad, per_category)
    _print_counts(result.counts)
    console.print(f"{sum(result.counts.values())} samples ({result.views} views), {result.skips.summary()}")
    _print_first_skip(result.skips)
    if result.sheet:
        console.print(f"contact sheet: {result.sheet}")


@meshes_app.command("fetch")
def fetch_command(
    source: Annotated[str, typer.Argument(help="sweethome3d or libcgal (Debian packages, via apt-get download).")],
    cache: CacheOption = Path("shards/cache"),
) -> None:
    """Download and unpack a Debian mesh source into the cache."""
    from ss3d_data.sources import fetch_source

    console.print(f"{source}: {fetch_source(source, cache)}")


@meshes_app.command("procedural")
def procedural_command(
    out: Annotated[Path, typer.Option(help="Output folder (<category>/<category>_NNN.ply + source.json).")],
    categories: Annotated[int, typer.Option(
        help="Number of procedural categories (first N of the built-in list).")] = 8,
    instances: Annotated[int, typer.Option(help="Meshes per category.")] = 4,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same meshes.")] = 0,
) -> None:
    """Generate small categorised meshes from primitives (no download needed)."""
    from ss3d_data.procedural import generate

    paths = generate(out, categories, instances, seed)
    console.print(f"{len(paths)} meshes in {out}; build a manifest with --source procedural:{out}")


@meshes_app.command("build")
def build_command(
    source: Annotated[list[str], typer.Option(help="sweethome3d | libcgal | folder:DIR | shapenet:DIR | "
                                                   "procedural:DIR (repeatable).")],
    out: Annotated[Path, typer.Option(help="Manifest to write (JSON lines); a .report.json goes beside it.")],
    cache: CacheOption = Path("shards/cache"),
    preset: PresetOption = "paper",
) -> None:
    """Scan mesh sources, check and normalise every mesh, and write one manifest with deterministic splits."""
    from ss3d_data.config import data_config
    from ss3d_data.meshes import build_manifest, report_path
    from ss3d_data.sources import scan_source

    candidates = [c for spec in source for c in scan_source(spec, cache)]
    with progress() as bar:
        task = bar.add_task("meshes", total=len(candidates), status="")
        report = build_manifest(candidates, out, data_config(preset),
                                lambda done, total, name: bar.update(task, completed=done, status=name[-24:]))
    table = Table("category", "meshes")
    for category, n in sorted(report.categories.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(category, str(n))
    console.print(table)
    console.print(f"{report.records} meshes in {out} ({', '.join(f'{k} {v}' for k, v in report.splits.items())}); "
                  f"{len(report.skipped)} skipped, reasons in {report_path(out)}")


@meshes_app.command("select")
def select_command(
    manifest: Annotated[Path, typer.Option(help="Manifest to select from.")],
    out: Annotated[Path, typer.Option(help="Manifest to write.")],
    categories: Annotated[str, typer.Option(help="Comma-separated categories to keep (default: all).")] = "",
    max_train: Annotated[int, typer.Option(help="At most this many train instances per category (-1: all).")] = -1,
    max_val: Annotated[int, typer.Option(help="At most this many val instances per category (-1: all).")] = -1,
    max_test: Annotated[int, typer.Option(help="At most this many test instances per category (-1: all).")] = -1,
    allow_missing: Annotated[bool, typer.Option(help="Warn, not fail, when a category has no instance left.")] = False,
    exclude: Annotated[str, typer.Option(help="Comma-separated categories to leave out (e.g. every category "
                                              "held out from pretraining).")] = "",
) -> None:
    """Write a deterministic subset of a manifest: some categories, capped per category and split."""
    from ss3d_data.manifest import read_manifest, select_records, write_manifest

    records = read_manifest(manifest)
    caps = {split: cap for split, cap in (("train", max_train), ("val", max_val), ("test", max_test)) if cap >= 0}
    wanted = [c.strip() for c in categories.split(",") if c.strip()] or None
    excluded = [c.strip() for c in exclude.split(",") if c.strip()]
    chosen = select_records(records, wanted, caps, allow_missing=allow_missing, exclude=excluded)
    if wanted and allow_missing:
        for category in sorted(set(wanted) - {r.category for r in chosen}):
            console.print(f"[yellow]warning:[/yellow] no instances of {category} left in {out}")
    # paths stay valid: relative paths are re-anchored on the new manifest's folder
    rebased = [r if Path(r.path).is_absolute() else replace(r, path=str(r.resolve(manifest).resolve())) for r in chosen]
    write_manifest(out, rebased)
    counts = Counter((r.category, r.split) for r in chosen)
    table = Table("category", "train", "val", "test")
    for category in sorted({c for c, _ in counts}):
        table.add_row(category, *(str(counts[(category, s)]) for s in ("train", "val", "test")))
    console.print(table)
    console.print(f"{len(chosen)} of {len(records)} meshes in {out}")


@shard_app.command("folders")
def shard_folders_command(
    root: Annotated[Path, typer.Argument(help="Folder of sample folders (ss3d-render output).")],
    out: Annotated[Path, typer.Option(help="Output folder for the shards.")],
    prefix: Annotated[str, typer.Option(help="Shard name prefix.")] = "synthetic",
    per_shard: Annotated[int | None, typer.Option(help="Samples per shard (default: the preset's).")] = None,
    max_bad: MaxBadOption = 0,
    manifest: Annotated[Path | None, typer.Option(
        help="Mesh manifest of the rendered instances: views samples get occupancy labels when the preset's "
             "[data] occupancy_resolution is above 0.")] = None,
    preset: PresetOption = "paper",
) -> None:
    """Pack sample folders: views by instance into <prefix>-views-*, images per category into <prefix>-<cat>-*."""
    from ss3d_data.config import data_config
    from ss3d_data.packing import occupancy_labeller, pack_sample_folders

    config = data_config(preset)
    label = occupancy_labeller(manifest, config.occupancy_resolution) \
        if manifest is not None and config.occupancy_resolution > 0 else None
    report = pack_sample_folders(root, out, prefix, per_shard or config.per_shard, max_bad, label)
    _print_pack(report)


@shard_app.command("images")
def shard_images_command(
    layout: Annotated[str, typer.Argument(help="folder | cub | pascal3d | co3d | openimages")],
    root: Annotated[Path, typer.Argument(help="The collection's root folder.")],
    out: Annotated[Path, typer.Option(help="Output folder for the shards.")],
    prefix: Annotated[str, typer.Option(help="Shard name prefix (a set per category: <prefix>-<category>).")] = "",
    masks: Annotated[Path | None, typer.Option(help="pascal3d: mask folder (<subset>/<name>.png).")] = None,
    every: Annotated[int, typer.Option(help="co3d: keep every N-th frame of each sequence.")] = 1,
    category: Annotated[list[str] | None, typer.Option(help="Keep only these categories (repeatable).")] = None,
    per_shard: Annotated[int | None, typer.Option(help="Samples per shard (default: the preset's).")] = None,
    max_side: Annotated[int | None, typer.Option(
        help="Downscale longer sides to this (default: the preset's).")] = None,
    max_bad: MaxBadOption = 0,
    preset: PresetOption = "paper",
) -> None:
    """Pack an image collection with masks (no cameras) into one shard set per category."""
    from ss3d_data.config import data_config
    from ss3d_data.layouts import read_layout
    from ss3d_data.packing import pack_collection

    config = data_config(preset)
    items = read_layout(layout, root, config.split_fractions, masks, every, category or (), config.split_salt)
    report = pack_collection(items, out, prefix or layout, per_shard or config.per_shard, max_bad,
                             config.collection_max_side if max_side is None else max_side)
    _print_pack(report)


def _print_pack(report) -> None:
    for name, n in sorted(report.shard_sets.items()):
        console.print(f"{name}: {n} samples" + (" (kept, index existed)" if name in report.kept else ""))
    if report.skipped:
        console.print(f"[yellow]{report.skipped} bad samples skipped[/yellow]; first: {report.reasons[0]}")


def main() -> None:
    app()
