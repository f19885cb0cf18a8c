"""``ss3d-render``: render meshes with Blender (bpy): synthetic multi-view sets and in-the-wild style collections."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ss3d_data.clikit import console, make_app
from ss3d_data.errors import Ss3dError
from ss3d_render.jobs import RenderSummary

app = make_app(
    "ss3d-render",
    "Render meshes with Blender (bpy): synthetic multi-view sets and in-the-wild style image collections.",
)

ManifestOpt = Annotated[Path, typer.Option("--manifest", help="Mesh manifest (JSON lines, ss3d-mesh-manifest v1).")]
OutOpt = Annotated[Path, typer.Option("--out", help="Output folder: one sample folder per key (resumable).")]
PresetOpt = Annotated[
    str,
    typer.Option(
        "--preset", envvar="SS3D_PRESET", help="Preset name or .toml path (its render section sets the sizes)."
    ),
]
ShardIndexOpt = Annotated[
    int, typer.Option("--shard-index", help="This process's index: renders instances i with i % n == index.")
]
NumShardsOpt = Annotated[int, typer.Option("--num-shards", help="Number of processes sharing the manifest (n).")]
SeedOpt = Annotated[
    int | None, typer.Option("--seed", help="Base seed (default: the seed of the preset's render section).")
]
LimitOpt = Annotated[int | None, typer.Option("--limit", help="Render at most this many of this process's instances.")]
CategoriesOpt = Annotated[
    str | None, typer.Option("--categories", help="Comma-separated categories to render (default: all).")
]


def _split(categories: str | None) -> list[str] | None:
    return [c.strip() for c in categories.split(",") if c.strip()] if categories else None


def _report(summary: RenderSummary, what: str) -> None:
    """The run's one summary line (Blender's own output is in the log it names)."""
    log = f"; Blender's output: {summary.log}" if summary.log is not None else ""
    console.print(
        f"{what}: {summary.rendered} of {summary.assigned} meshes rendered ({summary.views} images), "
        f"{summary.skipped} already present, {len(summary.failed)} failed, "
        f"{summary.textures_unresolved} textures unresolved; {summary.seconds:.1f} s "
        f"({summary.views_per_second:.1f} images/s){log}",
        soft_wrap=True,
    )
    if summary.failed and summary.rendered == 0 and summary.skipped == 0:
        hint = f"every failure is listed in {summary.log}" if summary.log is not None else None
        raise Ss3dError(f"every instance failed; first: {summary.failed[0]}", hint=hint)


@app.command("views")
def views_command(
    manifest: ManifestOpt,
    out: OutOpt,
    preset: PresetOpt = "paper",
    shard_index: ShardIndexOpt = 0,
    num_shards: NumShardsOpt = 1,
    seed: SeedOpt = None,
    limit: LimitOpt = None,
    categories: CategoriesOpt = None,
) -> None:
    """Synthetic multi-view renders: one 'views' sample folder per instance (RGB, mask, cameras)."""
    from ss3d_render.views import render_views  # imports bpy: only when a command runs

    summary = render_views(manifest, out, preset, shard_index, num_shards, seed, limit, _split(categories))
    _report(summary, "views")


@app.command("collection")
def collection_command(
    manifest: ManifestOpt,
    out: OutOpt,
    preset: PresetOpt = "paper",
    categories: CategoriesOpt = None,
    background: Annotated[
        bool, typer.Option("--background/--no-background", help="Composite a random procedural background.")
    ] = False,
    degrade: Annotated[
        bool, typer.Option("--degrade/--no-degrade", help="Make masks approximate (erode/dilate, noisy boundary).")
    ] = False,
    shard_index: ShardIndexOpt = 0,
    num_shards: NumShardsOpt = 1,
    seed: SeedOpt = None,
    limit: LimitOpt = None,
    views_per_instance: Annotated[
        int | None, typer.Option(help="Images per instance (default: the preset's collection_views_per_instance).")
    ] = None,
) -> None:
    """In-the-wild style collection: 'image' samples without cameras; true cameras in <out>/cameras.jsonl."""
    from ss3d_render.collection import render_collection

    summary = render_collection(
        manifest, out, preset, _split(categories), background, degrade, shard_index, num_shards, seed, limit,
        views_per_instance,
    )
    _report(summary, "collection")


@app.command("sidecar")
def sidecar_command(
    out: Annotated[Path, typer.Option("--out", help="A collection folder written by `ss3d-render collection`.")],
) -> None:
    """Rebuild <out>/cameras.jsonl from the per-image camera files (after a parallel array job)."""
    from ss3d_render.collection import rebuild_sidecar

    if not out.is_dir():
        raise Ss3dError(f"{out}: no such folder")
    console.print(f"wrote {rebuild_sidecar(out)}")


def main() -> None:
    app()
