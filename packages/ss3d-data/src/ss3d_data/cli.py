"""``ss3d-data``: mesh manifests, shards, and the contracts behind them."""

from __future__ import annotations

import json
from collections import Counter
from typing import Annotated

import typer
from rich.table import Table

from ss3d_data.clikit import console, make_app
from ss3d_data.presets import available_presets, load_preset
from ss3d_data.shards import SkipCounter, iter_samples, resolve_shards

app = make_app("ss3d-data", "Build and check ss3d training data: mesh manifests and webdataset shards.")


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
    table = Table("kind", "category", "split", "samples")
    for (kind, category, split), n in sorted(counts.items()):
        table.add_row(kind, category, split, str(n))
    console.print(table)
    console.print(f"{sum(counts.values())} valid samples, {skips.skipped} skipped")


def main() -> None:
    app()
