"""``ss3d-model``: inspect checkpoints, initialise them, and reconstruct meshes from images."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from ss3d_data.clikit import console, make_app, progress
from ss3d_model.checkpoint import load_checkpoint

app = make_app("ss3d-model", "The ss3d reconstruction model: inspect checkpoints, reconstruct meshes from images.")

PresetOpt = Annotated[str, typer.Option("--preset", envvar="SS3D_PRESET",
                                        help="Preset name or .toml path ([model] for init; [extract] for meshes).")]


@app.command("info")
def info_command(checkpoint: Annotated[Path, typer.Argument(help="An ss3d checkpoint (.safetensors).")]) -> None:
    """Validate a checkpoint and print its metadata and parameter count as JSON."""
    tensors, meta = load_checkpoint(checkpoint)
    summary = {**asdict(meta), "tensors": len(tensors), "parameters": int(sum(t.numel() for t in tensors.values()))}
    typer.echo(json.dumps(summary, indent=2, sort_keys=True))


@app.command("init")
def init_command(
    out: Annotated[Path, typer.Option("--out", help="Checkpoint to write (.safetensors).")],
    preset: PresetOpt = "paper",
    imagenet: Annotated[Path | None, typer.Option(
        "--imagenet", help="torchvision ResNet weights (.pth); default: torchvision's cache if present.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random initialisation.")] = 0,
) -> None:
    """Write a freshly initialised checkpoint (stage "init"): the start of pretraining and of distilled students."""
    from ss3d_model.reconstruct import init_checkpoint

    meta = init_checkpoint(preset, out, imagenet, seed)
    console.print(f"wrote {out} (preset {meta.preset}, encoder {meta.encoder_init})")


@app.command("reconstruct")
def reconstruct_command(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Trained ss3d checkpoint (.safetensors).")],
    image: Annotated[list[Path], typer.Option(
        "--image", help="Segmented RGB(A) image, or a folder of them; repeat for several (batch mode).")],
    out: Annotated[Path, typer.Option(
        "--out", help="Mesh file (.glb/.obj/.ply) for one image; a folder in batch mode.")],
    mask: Annotated[Path | None, typer.Option(
        "--mask", help="8-bit mask (255 = object); a folder of <stem>.png in batch mode. Default: the alpha.")] = None,
    turntable: Annotated[Path | None, typer.Option(
        "--turntable", help="Also write a PNG with a few views of the mesh (a folder in batch mode).")] = None,
    mesh_format: Annotated[str, typer.Option("--format", help="Mesh format in batch mode: glb, obj or ply.")] = "glb",
    threshold: Annotated[float | None, typer.Option(
        "--threshold", help="Density level of the surface (default: the preset's [extract] density_threshold).")
    ] = None,
    compile_decoder: Annotated[bool, typer.Option(
        "--compile/--no-compile", help="torch.compile the decoder: faster per point, but the first run in a fresh "
        "cache compiles for about a minute; worth it for batches.")] = False,
    preset: Annotated[str | None, typer.Option(
        "--preset", envvar="SS3D_PRESET", help="Preset whose [extract] settings mesh the field (default: those the "
        "checkpoint was trained with).")] = None,
) -> None:
    """Reconstruct a coloured mesh from each segmented image (the paper's input preprocessing, then extraction)."""
    from ss3d_model.reconstruct import (
        inference_settings,
        load_for_inference,
        load_image_and_mask,
        plan_jobs,
        reconstruct_mesh,
        write_mesh,
        write_png,
    )
    from ss3d_model.turntable import turntable as turntable_views

    jobs = plan_jobs(image, mask, out, turntable, mesh_format)
    network, meta, compiled = load_for_inference(checkpoint, compile_decoder)
    extract, mask_threshold = inference_settings(meta, preset)
    if compile_decoder and not compiled:
        console.print("[yellow]torch.compile is unavailable here; using the eager decoder[/yellow]")
    with progress() as bar:
        task = bar.add_task("reconstruct", total=len(jobs), status="")
        for job in jobs:
            start = time.perf_counter()
            rgb, msk = load_image_and_mask(job.image, job.mask)
            mesh = reconstruct_mesh(network, rgb, msk, extract, mask_threshold, threshold)
            write_mesh(mesh, job.out)
            if job.turntable is not None:
                write_png(turntable_views(mesh), job.turntable)
            bar.update(task, advance=1, status=f"{job.out.name}: {len(mesh.faces)} faces, "
                                               f"{time.perf_counter() - start:.2f} s")
    console.print(f"wrote {len(jobs)} mesh{'es' if len(jobs) != 1 else ''}")


def main() -> None:
    app()
