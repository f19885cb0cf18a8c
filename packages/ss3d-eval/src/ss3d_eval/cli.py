"""``ss3d-eval``: Evaluate ss3d reconstructions: IoU, Chamfer and F-score after alignment; tables and an HTML report."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import typer

from ss3d_data.atomic import atomic_write_text
from ss3d_data.clikit import at_least, console, make_app
from ss3d_data.errors import Ss3dError
from ss3d_data.shards import skip_kind
from ss3d_eval.config import eval_config
from ss3d_eval.evaluate import UNREADABLE, evaluate, read_results
from ss3d_eval.predict import MeshDirPredictor, make_predictors
from ss3d_eval.report import build_report
from ss3d_eval.table import build_table, margins, margins_markdown, score_names, summary_json, to_markdown, to_rich

app = make_app("ss3d-eval", "Evaluate ss3d reconstructions: IoU, Chamfer and F-score after alignment; tables and an "
                            "HTML report.")

ShardsOpt = Annotated[str, typer.Option("--shards", help="Test shards: a folder, a glob or a .tar file.")]
ManifestOpt = Annotated[Path, typer.Option("--manifest", help="Mesh manifest with the ground-truth meshes.")]
CheckpointOpt = Annotated[Optional[list[Path]], typer.Option(
    "--checkpoint", help="Checkpoint to evaluate (repeat for a side-by-side comparison).")]
PredDirOpt = Annotated[Optional[list[Path]], typer.Option(
    "--pred-dir", help="Folder of predicted meshes named <sample key>.ply/.obj/... (repeatable).")]
LabelOpt = Annotated[Optional[list[str]], typer.Option(
    "--label", help="Name of each method, one per --checkpoint then --pred-dir (default: file/folder name).")]
SeenOpt = Annotated[Optional[str], typer.Option(
    "--seen-categories",
    help="For --pred-dir: comma-separated categories the method was trained on (zero-shot split).")]
OutOpt = Annotated[Path, typer.Option("--out", help="Folder for the <label>.<metric>.jsonl result files.")]
PresetOpt = Annotated[str, typer.Option("--preset", envvar="SS3D_PRESET", help=(
    "Preset name or TOML path: the [eval] sizes (checkpoints are meshed with the [extract] settings they were "
    "trained with)."))]
ViewOpt = Annotated[int, typer.Option("--view", help="Which view of a multi-view test sample is the input (from 0).")]
LimitOpt = Annotated[int | None, typer.Option("--limit", help="Evaluate only the first N samples (N >= 1).")]
NoAlignOpt = Annotated[bool, typer.Option("--no-align", help="Score in the canonical frame, without alignment.")]
SaveOpt = Annotated[bool, typer.Option("--save-meshes/--no-save-meshes",
                                       help="Keep predicted meshes in <out>/<label>-meshes/ (for the report).")]
SubsetOpt = Annotated[str, typer.Option(
    "--subset", help="all, seen or unseen: only categories the method was (not) trained on (zero-shot).")]
ExtractPresetOpt = Annotated[Optional[str], typer.Option(
    "--extract-preset", help="Preset whose [extract] settings mesh the checkpoints (default: the settings each "
    "checkpoint was trained with).")]
EllipsoidOpt = Annotated[bool, typer.Option(
    "--ellipsoid", help="Also score the floor: an ellipsoid fitted to each input mask (label 'ellipsoid').")]
MaxBadOpt = Annotated[int, typer.Option("--max-bad", help="Corrupt shard samples tolerated before stopping.")]


def run_metric(metric: str, shards: str, manifest: Path, checkpoints: list[Path] | None, pred_dirs: list[Path] | None,
               labels: list[str] | None, seen_categories: str | None, out: Path, preset: str, view: int,
               limit: int | None, no_align: bool, save_meshes: bool, max_bad: int, subset: str = "all",
               ellipsoid: bool = False, extract_preset: str | None = None) -> list[Path]:
    """Evaluate every method under ``metric``; print the comparison table; return the result files. Refuses (after
    writing the rows) a run in which some method failed on every sample: nothing of it was evaluated."""
    _check_sampling(view, limit)
    at_least("--max-bad", max_bad, 0)
    cfg = eval_config(preset)
    seen = [c.strip() for c in seen_categories.split(",") if c.strip()] if seen_categories is not None else None
    predictors = make_predictors([str(c) for c in checkpoints or []], [str(d) for d in pred_dirs or []],
                                 labels or [], preset, seen, ellipsoid, extract_preset)
    files = []
    for predictor in predictors:
        keep = save_meshes or not isinstance(predictor, MeshDirPredictor)  # the report shows computed meshes
        files.append(evaluate(shards, manifest, predictor, metric, cfg, out, preset=preset, view=view,
                              aligned=not no_align, limit=limit, save_meshes=keep, max_bad=max_bad,
                              subset=subset))
        console.print(f"wrote {files[-1]}")
    rows = read_results(files)
    for name in score_names(rows)[:2]:
        typer.echo("")
        console.print(to_rich(build_table(rows, name)))
    _report_unreadable([r for r in rows if r["label"] == predictors[0].label])
    for predictor, path in zip(predictors, files):
        own = [r for r in rows if r["label"] == predictor.label]
        if all(r["status"] == "failed" for r in own):
            raise Ss3dError(f"{predictor.label}: all {len(own)} samples failed, nothing was evaluated (rows in {path})",
                            hint=f"the first error: {own[0]['error']}" if own else None)
    return files


def _report_unreadable(rows: list[dict]) -> None:
    """One line naming the test samples that could not be read (each is a failed row of every method)."""
    reasons = [r["error"].removeprefix(UNREADABLE) for r in rows if str(r.get("error") or "").startswith(UNREADABLE)]
    if reasons:
        kinds = Counter(skip_kind(reason) for reason in reasons)
        console.print(f"[yellow]{len(reasons)} unreadable test sample(s)[/yellow] counted as failed rows ("
                      + ", ".join(f"{n} {kind}" for kind, n in kinds.most_common()) + f"); first: {reasons[0]}")


def _check_sampling(view: int, limit: int | None) -> None:
    at_least("--view", view, 0)
    at_least("--limit", limit, 1)  # 0 would select no sample at all


@app.command()
def iou(shards: ShardsOpt, manifest: ManifestOpt, out: OutOpt = Path("results"), checkpoint: CheckpointOpt = None,
        pred_dir: PredDirOpt = None, label: LabelOpt = None, seen_categories: SeenOpt = None,
        preset: PresetOpt = "paper", view: ViewOpt = 0, limit: LimitOpt = None, no_align: NoAlignOpt = False,
        save_meshes: SaveOpt = False, max_bad: MaxBadOpt = 10, subset: SubsetOpt = "all",
        ellipsoid: EllipsoidOpt = False, extract_preset: ExtractPresetOpt = None) -> None:
    """Volumetric IoU of each prediction against its ground-truth mesh, after alignment."""
    run_metric("iou", shards, manifest, checkpoint, pred_dir, label, seen_categories, out, preset, view, limit,
               no_align, save_meshes, max_bad, subset, ellipsoid, extract_preset)


@app.command()
def chamfer(shards: ShardsOpt, manifest: ManifestOpt, out: OutOpt = Path("results"), checkpoint: CheckpointOpt = None,
            pred_dir: PredDirOpt = None, label: LabelOpt = None, seen_categories: SeenOpt = None,
            preset: PresetOpt = "paper", view: ViewOpt = 0, limit: LimitOpt = None, no_align: NoAlignOpt = False,
            save_meshes: SaveOpt = False, max_bad: MaxBadOpt = 10, subset: SubsetOpt = "all",
            ellipsoid: EllipsoidOpt = False, extract_preset: ExtractPresetOpt = None) -> None:
    """Chamfer distance and F-scores of each prediction against its ground-truth mesh or point cloud, after
    alignment."""
    run_metric("chamfer", shards, manifest, checkpoint, pred_dir, label, seen_categories, out, preset, view, limit,
               no_align, save_meshes, max_bad, subset, ellipsoid, extract_preset)


def write_tables(files: list[Path], markdown: Path | None, json_path: Path | None, digits: int,
                 margin_over: str | None = None) -> str:
    """Tables (one per score) of the rows in ``files``, and with ``margin_over`` each method's margin over that
    label (e.g. the ``ellipsoid`` floor) with bootstrap intervals; optionally saved as Markdown and JSON. Returns
    Markdown."""
    rows = read_results(files)
    tables = [build_table(rows, name) for name in score_names(rows)]
    text = "\n".join(to_markdown(t, digits) for t in tables)
    if margin_over is not None:
        found = [m for name in score_names(rows)[:2] for m in margins(rows, name, margin_over)]
        text += "\n" + margins_markdown(found, digits)
        typer.echo(margins_markdown(found, digits))
    if markdown is not None:
        atomic_write_text(markdown, text)
    if json_path is not None:
        atomic_write_text(json_path, summary_json(tables))
    for t in tables:
        console.print(to_rich(t, digits))
    return text


@app.command()
def table(
    files: Annotated[list[Path], typer.Argument(help="Result files (.jsonl) of any methods and metrics.")],
    markdown: Annotated[Optional[Path], typer.Option(
        "--markdown", help="Also write the tables as Markdown here.")] = None,
    json_path: Annotated[Optional[Path], typer.Option(
        "--json", help="Also write the table values as JSON here.")] = None,
    digits: Annotated[int, typer.Option("--digits", help="Decimals shown.")] = 3,
    margin_over: Annotated[Optional[str], typer.Option(
        "--margin-over", help="Also each method's margin over this label (e.g. ellipsoid), with 95% "
        "paired-bootstrap intervals.")] = None,
) -> None:
    """Per-category and mean tables, one column per method (as the paper's tables 2-4)."""
    at_least("--digits", digits, 0)
    write_tables(files, markdown, json_path, digits, margin_over)


@app.command()
def report(
    results: Annotated[list[Path], typer.Argument(help="Result files (.jsonl) to show side by side.")],
    shards: ShardsOpt,
    manifest: ManifestOpt,
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write.")] = Path("report.html"),
    preset: PresetOpt = "paper",
    view: ViewOpt = 0,
    limit: LimitOpt = None,
    title: Annotated[str, typer.Option("--title", help="Page title.")] = "ss3d evaluation report",
) -> None:
    """One self-contained HTML page: input, ground truth, each method's aligned prediction and its scores."""
    _check_sampling(view, limit)
    cfg = eval_config(preset)
    path = build_report(results, shards, manifest, out, size=cfg.render_size, view=view, limit=limit, title=title)
    console.print(f"wrote {path}")


def main() -> None:
    app()
