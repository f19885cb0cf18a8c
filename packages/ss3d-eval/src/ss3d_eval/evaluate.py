"""Evaluation runs: every test sample of a shard set, scored for one predictor, as JSON lines.

One run writes ``<out>/<label>.<metric>.jsonl``: one row per test sample (format ``ss3d-eval-result`` v1, see
``docs/evaluation.md``), failures included as rows with ``status`` and ``error``. The file is rewritten atomically
every few rows, so a killed run leaves a complete file of the rows done so far; running the same command again
keeps rows computed with the same settings and scores only the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ss3d_data.atomic import atomic_write_text
from ss3d_data.clikit import debug_enabled, progress
from ss3d_data.errors import EmptySurface, Ss3dError
from ss3d_data.manifest import MeshRecord, read_manifest
from ss3d_data.shards import Skip, SkipCounter
from ss3d_eval.config import EvalConfig
from ss3d_eval.metrics import score
from ss3d_eval.predict import Predictor, TestItem, iter_test_items
from ss3d_eval.shapes import Shape, load_shape, save_mesh

RESULT_FORMAT = "ss3d-eval-result"
RESULT_VERSION = 1
_LABEL = re.compile(r"^[A-Za-z0-9_+-]+$")
_FLUSH_EVERY = 8
UNKNOWN_CATEGORY = "unknown"  # the category of a row whose sample was too damaged to name one
UNREADABLE = "unreadable test sample: "  # how the error of such a row begins


def result_path(out_dir: str | os.PathLike[str], label: str, metric: str) -> Path:
    return Path(out_dir) / f"{label}.{metric}.jsonl"


def check_label(label: str) -> str:
    if not _LABEL.match(label):
        raise Ss3dError(f"label {label!r} must match [A-Za-z0-9_+-]+ (it names the result file)")
    return label


def settings_hash(cfg: EvalConfig, metric: str, source: str, view: int, aligned: bool, fingerprint: str = "",
                  preset: str = "") -> str:
    """Identifies what a row was computed with; resumed runs reuse only rows with the same hash."""
    text = json.dumps({"cfg": asdict(cfg), "metric": metric, "source": source, "view": view, "aligned": aligned,
                       "fingerprint": fingerprint, "preset": preset}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class GroundTruth:
    """Ground-truth shapes by instance id, from a mesh manifest, moved into the canonical frame; cached."""

    def __init__(self, manifest: str | os.PathLike[str]) -> None:
        self.manifest = Path(manifest)
        self.records: dict[str, MeshRecord] = {r.instance_id: r for r in read_manifest(manifest)}
        self._cache: dict[str, Shape] = {}

    def path(self, instance_id: str) -> Path:
        if instance_id not in self.records:
            raise Ss3dError(f"instance {instance_id!r} is not in the mesh manifest {self.manifest}")
        return self.records[instance_id].resolve(self.manifest)

    def shape(self, instance_id: str) -> Shape:
        if instance_id not in self._cache:
            record = self.records.get(instance_id)
            path = self.path(instance_id)
            if len(self._cache) > 64:  # test sets often hold several images per instance, in order
                self._cache.clear()
            self._cache[instance_id] = load_shape(path, record.matrix())
        return self._cache[instance_id]


def read_results(paths: Iterable[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """All rows of result files; refuses files of another format and names the file and line."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise Ss3dError(f"{p}: no such result file")
        for number, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as err:
                raise Ss3dError(f"{p}:{number}: not JSON ({err})") from None
            if not isinstance(row, dict) or row.get("format") != RESULT_FORMAT:
                raise Ss3dError(f"{p}:{number}: not an {RESULT_FORMAT} row")
            if row.get("version") != RESULT_VERSION:
                raise Ss3dError(f"{p}:{number}: result version {row.get('version')!r}, this reader understands "
                                f"{RESULT_VERSION}")
            rows.append(row)
    return rows


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def _score_item(item: TestItem, predictor: Predictor, truth: GroundTruth, cfg: EvalConfig, metric: str,
                aligned: bool, mesh_dir: Path | None) -> dict[str, Any]:
    row: dict[str, Any] = {"status": "ok", "error": None}
    try:
        row["gt_mesh"] = str(truth.path(item.info.instance_id))
        try:
            gt = truth.shape(item.info.instance_id)
        except EmptySurface as err:  # an empty ground truth is a broken test sample, not an empty prediction
            raise Ss3dError(f"ground truth: {err}") from None
        pred = predictor.predict(item)
        if mesh_dir is not None:
            mesh_path = mesh_dir / f"{item.key}.ply"
            save_mesh(pred, mesh_path)
            row["pred_mesh"] = str(mesh_path)
        elif hasattr(predictor, "mesh_path"):
            row["pred_mesh"] = str(predictor.mesh_path(item.key))  # type: ignore[attr-defined]
        if metric == "iou" and not gt.is_mesh:
            raise Ss3dError(f"{row['gt_mesh']}: the ground truth is a point cloud; IoU needs a mesh")
        row.update(score(pred, gt, cfg, item.key, (metric,), aligned))
    except EmptySurface as err:
        row.update(status="empty", error=str(err))
        if metric == "iou":
            row["iou"] = 0.0  # no surface encloses no volume
    except Ss3dError as err:
        row.update(status="failed", error=str(err))
    except Exception as err:  # a library failing on one odd input must not end the whole run
        if debug_enabled():
            raise
        row.update(status="failed", error=f"{type(err).__name__}: {err}")
    return row


def evaluate(shards: str | list[str], manifest: str | os.PathLike[str], predictor: Predictor, metric: str,
             cfg: EvalConfig, out_dir: str | os.PathLike[str], *, preset: str = "", view: int = 0,
             aligned: bool = True, limit: int | None = None, save_meshes: bool = False,
             max_bad: int = 10, subset: str = "all", show_progress: bool = True) -> Path:
    """Score every test sample of ``shards`` with ``predictor`` under ``metric`` ("iou" or "chamfer"); write the
    rows to ``<out_dir>/<label>.<metric>.jsonl`` and return its path. ``save_meshes`` keeps the predicted meshes
    (``<out_dir>/<label>-meshes/<key>.ply``) for the report. ``subset`` "seen" / "unseen" keeps only samples of
    categories the predictor was / was not trained on (zero-shot evaluation)."""
    if metric not in ("iou", "chamfer"):
        raise Ss3dError(f"unknown metric {metric!r}; use iou or chamfer")
    if subset not in ("all", "seen", "unseen"):
        raise Ss3dError(f"subset must be all, seen or unseen, got {subset!r}")
    if subset != "all" and predictor.seen_categories is None:
        raise Ss3dError(f"{predictor.label}: its training categories are unknown, so there is no {subset} subset",
                        hint="use a checkpoint, or give --seen-categories for a prediction folder")
    check_label(predictor.label)
    truth = GroundTruth(manifest)
    out = result_path(out_dir, predictor.label, metric)
    digest = settings_hash(cfg, metric, predictor.source, view, aligned, predictor.fingerprint, preset)
    done = {r["key"]: r for r in read_results([out]) if r.get("settings") == digest} if out.is_file() else {}
    mesh_dir = Path(out_dir) / f"{predictor.label}-meshes" if save_meshes else None
    skips = SkipCounter(max_bad)
    items = list(iter_test_items(shards, view, skips=skips))
    unreadable = skips.records
    if subset != "all":
        items = [i for i in items if predictor.seen(i.info.category) == (subset == "seen")]
        # a sample whose category could not be read is counted in either subset: it may belong to it
        unreadable = [s for s in unreadable if s.category is None or predictor.seen(s.category) == (subset == "seen")]
    if limit is not None:
        items = items[:limit]
        unreadable = unreadable[:limit - len(items)]
    if not items and not unreadable:
        raise Ss3dError(f"no test samples in {shards}" + (f" of {subset} categories" if subset != "all" else ""))
    keys = [item.key for item in items]
    named = keys + [s.key for s in unreadable if s.key]
    if len(set(named)) != len(named):
        raise Ss3dError("the test shards hold duplicate sample keys")
    rows: list[dict[str, Any]] = []
    with progress() as bar:
        task = bar.add_task(f"{metric} {predictor.label}", total=len(items), status="",
                            visible=show_progress)
        for count, item in enumerate(items, start=1):
            if item.key in done:
                rows.append(done[item.key])
            else:
                start = time.perf_counter()
                row = _row_head(predictor, metric, preset, digest, view, item.key, item.info.instance_id,
                                item.info.category)
                row.update(_score_item(item, predictor, truth, cfg, metric, aligned, mesh_dir))
                row["seconds"] = round(time.perf_counter() - start, 4)
                rows.append(row)
                if count % _FLUSH_EVERY == 0:
                    _write_rows(out, rows + [r for k, r in done.items() if k not in set(keys[:count])])
            bar.update(task, advance=1, status=rows[-1]["status"])
    rows += _unreadable_rows(unreadable, predictor, metric, preset, view, digest)
    _write_rows(out, rows)
    return out


def _row_head(predictor: Predictor, metric: str, preset: str, digest: str, view: int, key: str,
              instance_id: str | None, category: str | None) -> dict[str, Any]:
    return {"format": RESULT_FORMAT, "version": RESULT_VERSION, "metric": metric, "label": predictor.label,
            "source": predictor.source, "preset": preset, "settings": digest, "key": key,
            "instance_id": instance_id, "category": category or UNKNOWN_CATEGORY,
            "seen": predictor.seen(category) if category else None, "view": view, "pred_mesh": None}


def _unreadable_rows(skips: list[Skip], predictor: Predictor, metric: str, preset: str, view: int,
                     digest: str) -> list[dict[str, Any]]:
    """A failed row for every test sample that could not be read, so the table counts it instead of averaging
    over fewer samples; its key is the sample's where it could be read, else a name made from the shard."""
    rows = []
    for number, skip in enumerate(skips):
        key = skip.key or f"unreadable-{Path(skip.shard).stem}-{number}"
        row = _row_head(predictor, metric, preset, digest, view, key, None, skip.category)
        row.update(status="failed", error=UNREADABLE + skip.reason, seconds=0.0)
        rows.append(row)
    return rows
