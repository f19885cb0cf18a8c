"""``ss3d-train``: pretrain / selftrain / distill, each a thin wrapper over an importable function.

The same commands run single-process or under ``torchrun`` (``torchrun --nproc_per_node=N -m ss3d_train pretrain
...``): ranks come from torchrun's environment, only rank 0 writes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ss3d_data.clikit import console, make_app
from ss3d_data.errors import Ss3dError
from ss3d_train.run import RunOptions

app = make_app("ss3d-train", "Train ss3d: pretrain on synthetic views, selftrain category experts, distill one "
                             "unified model (torchrun DDP).")

PresetOpt = Annotated[str, typer.Option("--preset", help="Preset name (paper, cpu, tiny) or a .toml path; default "
                                                          "$SS3D_PRESET or cpu.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Run folder: checkpoints, config.json, metrics.jsonl.")]
NameOpt = Annotated[str, typer.Option("--name", help="Stem of the final checkpoint (default: the stage name).")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue the run in --out from last.safetensors.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of initialisation, data order and ray sampling.")]
WorkersOpt = Annotated[int, typer.Option("--workers", help="DataLoader worker processes per rank.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
StopOpt = Annotated[int, typer.Option("--stop-after", help="Stop after this many steps (checkpointed); 0 = run to "
                                                            "the end. Resume later with --resume.")]
EpochsOpt = Annotated[int, typer.Option("--epochs", help="Override the preset's epoch count (0 = preset).")]
NonFiniteOpt = Annotated[int, typer.Option("--max-nonfinite", help="NaN/Inf losses in a row tolerated before "
                                                                    "the run stops.")]
MicroOpt = Annotated[int, typer.Option("--micro-batch", help="Render/decode this many images of a batch at a time, "
                                                              "recomputing their activations in the backward pass: "
                                                              "same update, less memory, ~1/3 more decoder "
                                                              "compute (0 = whole batch).")]
BudgetOpt = Annotated[float, typer.Option("--memory-budget", help="GB a step may use: picks the largest "
                                                                  "--micro-batch whose estimate fits (0 = off).")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="fp32, or bf16 autocast of the forward passes.")]


MAX_SEED = 2**32 - 1
MaxBadOpt = Annotated[int, typer.Option("--max-bad", help="Unreadable shard samples tolerated per epoch (each is "
                                                          "skipped and counted by reason); more stop the run.")]


def _options(out: Path, preset: str | None, name: str, resume: bool, seed: int, workers: int, device: str,
             stop_after: int, epochs: int, max_nonfinite: int, max_bad: int = 10, micro_batch: int = 0,
             memory_budget: float = 0.0, precision: str = "fp32", **extra: object) -> RunOptions:
    negative = [f"{flag} {value}" for flag, value in (("--seed", seed), ("--workers", workers),
                                                        ("--stop-after", stop_after), ("--epochs", epochs),
                                                        ("--max-nonfinite", max_nonfinite), ("--max-bad", max_bad),
                                                        ("--micro-batch", micro_batch),
                                                        ("--memory-budget", memory_budget))
                if not value >= 0]  # also catches a nan budget
    if negative:
        raise Ss3dError(f"{', '.join(negative)}: must not be negative")
    if seed > MAX_SEED:  # seeds feed torch.manual_seed(seed * 1000 + rank), which needs a 64-bit integer
        raise Ss3dError(f"--seed {seed}: must be at most {MAX_SEED}")
    return RunOptions(out=out, preset=preset or os.environ.get("SS3D_PRESET", "cpu"), name=name, resume=resume,
                      seed=seed, workers=workers, device=device, stop_after=stop_after, epochs=epochs,
                      max_nonfinite=max_nonfinite, max_bad=max_bad, micro_batch=micro_batch,
                      memory_budget_gb=memory_budget, precision=precision,
                      extra={k: str(v) for k, v in extra.items()})


def _done(path: Path) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        console.print(f"[green]wrote[/green] {path}")


@app.command("pretrain")
def pretrain_command(
    shards: Annotated[list[str], typer.Argument(help="'views' shards: folders, globs or .tar files.")],
    out: OutOpt,
    init: Annotated[Path | None, typer.Option("--init", help="Start from this checkpoint (e.g. from ss3d-model "
                                                              "init); default: a fresh network from the preset.")]
    = None,
    preset: PresetOpt = None, name: NameOpt = "", resume: ResumeOpt = False, seed: SeedOpt = 0,
    workers: WorkersOpt = 0, device: DeviceOpt = "auto", stop_after: StopOpt = 0, epochs: EpochsOpt = 0,
    max_nonfinite: NonFiniteOpt = 5, max_bad: MaxBadOpt = 10, micro_batch: MicroOpt = 0,
    memory_budget: BudgetOpt = 0.0, precision: PrecisionOpt = "fp32",
) -> None:
    """Pretrain on synthetic multi-view renders (mask + colour rendering loss)."""
    from ss3d_train.pretrain import pretrain

    options = _options(out, preset, name, resume, seed, workers, device, stop_after, epochs, max_nonfinite, max_bad,
                       micro_batch, memory_budget, precision,
                       shards=shards, init=init)
    _done(pretrain(shards, options, init=init))


@app.command("selftrain")
def selftrain_command(
    shards: Annotated[list[str], typer.Argument(help="'image' shards of one category (folders, globs, .tar).")],
    init: Annotated[Path, typer.Option("--init", help="The pretrained checkpoint to start from.")],
    out: OutOpt,
    category: Annotated[str | None, typer.Option("--category", help="Train this category only (needed when the "
                                                                     "shards hold several).")] = None,
    preset: PresetOpt = None, name: NameOpt = "", resume: ResumeOpt = False, seed: SeedOpt = 0,
    workers: WorkersOpt = 0, device: DeviceOpt = "auto", stop_after: StopOpt = 0,
    max_nonfinite: NonFiniteOpt = 5, max_bad: MaxBadOpt = 10, micro_batch: MicroOpt = 0,
    memory_budget: BudgetOpt = 0.0, precision: PrecisionOpt = "fp32",
) -> None:
    """Self-train one category expert with multi-hypothesis cameras (cameras-only phase, then joint)."""
    from ss3d_train.selftrain import selftrain

    options = _options(out, preset, name, resume, seed, workers, device, stop_after, 0, max_nonfinite, max_bad,
                       micro_batch, memory_budget, precision,
                       shards=shards, init=init, category=category)
    _done(selftrain(shards, init, options, category=category))


def parse_experts(items: list[str]) -> dict[str, str]:
    """``["chair=a.safetensors", ...]`` -> {"chair": "a.safetensors"}; malformed or repeated entries are errors."""
    experts: dict[str, str] = {}
    for item in items:
        category, sep, path = item.partition("=")
        if not sep or not category or not path:
            raise Ss3dError(f"--expert {item!r} must look like CATEGORY=CHECKPOINT")
        if category in experts:
            raise Ss3dError(f"--expert names category {category!r} twice")
        experts[category] = path
    return experts


@app.command("distill")
def distill_command(
    out: OutOpt,
    expert: Annotated[list[str], typer.Option("--expert", help="CATEGORY=CHECKPOINT of one category expert; "
                                                                "repeat for each category.")],
    collections: Annotated[list[str], typer.Option("--collections", help="'image' shards of the experts' "
                                                                          "categories; repeat.")],
    synthetic: Annotated[Path | None, typer.Option("--synthetic", help="The synthetic-only (pretrained) model; "
                                                                       "it teaches the synthetic shards.")] = None,
    synthetic_shards: Annotated[list[str] | None, typer.Option("--synthetic-shards", help="'views' shards taught "
                                                                                         "by --synthetic; repeat.")]
    = None,
    init: Annotated[Path | None, typer.Option("--init", help="The student's starting weights (e.g. the synthetic-"
                                                              "only model); default: a fresh network from the "
                                                              "preset.")] = None,
    preset: PresetOpt = None, name: NameOpt = "", resume: ResumeOpt = False, seed: SeedOpt = 0,
    workers: WorkersOpt = 0, device: DeviceOpt = "auto", stop_after: StopOpt = 0, epochs: EpochsOpt = 0,
    max_nonfinite: NonFiniteOpt = 5, max_bad: MaxBadOpt = 10, micro_batch: MicroOpt = 0,
    memory_budget: BudgetOpt = 0.0, precision: PrecisionOpt = "fp32",
) -> None:
    """Distil all category experts (and the synthetic-only model) into one unified student. A pixel-aligned student
    (its --init or preset has [model] pixel_features > 0) needs a pixel-aligned --synthetic model and asks each
    expert through the camera it self-trained for each image (read from the expert's .state.safetensors)."""
    from ss3d_train.distill import distill

    options = _options(out, preset, name, resume, seed, workers, device, stop_after, epochs, max_nonfinite, max_bad,
                       micro_batch, memory_budget, precision,
                       expert=expert, collections=collections, synthetic=synthetic,
                       synthetic_shards=synthetic_shards, init=init)
    _done(distill(collections, parse_experts(expert), options, synthetic=synthetic,
                  synthetic_shards=synthetic_shards, init=init))


def main() -> None:
    app()
