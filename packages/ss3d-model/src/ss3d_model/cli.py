"""``ss3d-model``: inspect checkpoints and reconstruct meshes from images."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from ss3d_data.clikit import make_app
from ss3d_model.checkpoint import load_checkpoint

app = make_app("ss3d-model", "The ss3d reconstruction model: inspect checkpoints, reconstruct meshes from images.")


@app.command("info")
def info_command(checkpoint: Annotated[Path, typer.Argument(help="An ss3d checkpoint (.safetensors).")]) -> None:
    """Validate a checkpoint and print its metadata and parameter count as JSON."""
    tensors, meta = load_checkpoint(checkpoint)
    summary = {**asdict(meta), "tensors": len(tensors), "parameters": int(sum(t.numel() for t in tensors.values()))}
    typer.echo(json.dumps(summary, indent=2, sort_keys=True))


def main() -> None:
    app()
