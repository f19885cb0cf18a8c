"""The visual report: one self-contained HTML file (images inlined as base64 PNG, no server, no scripts).

Per test sample, one row: the input image, the ground truth from two viewpoints, then for each method its
prediction (moved by the alignment it was scored with, so it is seen as it was compared) from the same two
viewpoints, with its scores, or the error of a failed row.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ss3d_data.atomic import atomic_write_text
from ss3d_data.clikit import progress
from ss3d_data.errors import Ss3dError
from ss3d_eval.evaluate import GroundTruth, read_results
from ss3d_eval.predict import iter_test_items
from ss3d_eval.raster import render
from ss3d_eval.shapes import load_shape

VIEWS = ((30.0, 20.0), (210.0, 35.0))  # (azimuth, elevation) in degrees: front-left, and back-right from above
GT_COLOUR, PRED_COLOUR = (110, 170, 120), (110, 140, 205)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
td, th { border-bottom: 1px solid #ddd; padding: 6px; vertical-align: top; text-align: center; }
th { background: #f3f3f3; position: sticky; top: 0; }
img { display: block; margin: 0 auto; }
.scores { font-size: 12px; font-family: ui-monospace, monospace; text-align: left; }
.error { color: #b00020; font-size: 12px; max-width: 320px; text-align: left; }
.key { font-size: 12px; text-align: left; }
"""


def png_data_uri(image: np.ndarray) -> str:
    """A uint8 image [H, W] or [H, W, 3] as a ``data:image/png;base64,...`` URI."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(image: np.ndarray, alt: str) -> str:
    return f'<img src="{png_data_uri(image)}" alt="{html.escape(alt)}" width="{image.shape[1]}">'


def _thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    """The input image scaled (up or down) so its longer side is ``size``; small inputs stay crisp."""
    pil = Image.fromarray(image)
    scale = size / max(pil.size)
    new = (max(1, round(pil.width * scale)), max(1, round(pil.height * scale)))
    return np.asarray(pil.resize(new, Image.NEAREST if scale > 1 else Image.BILINEAR))


def _scores_html(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        if row.get("status") == "failed":
            return f'<div class="error">{html.escape(str(row.get("error")))}</div>'
        if row.get("iou") is not None:
            lines.append(f"IoU {row['iou']:.3f}")
        if row.get("chamfer_l1") is not None:
            lines.append(f"Chamfer {row['chamfer_l1']:.4f}")
            lines += [f"F@{t} {v:.3f}" for t, v in (row.get("fscore") or {}).items()]
        if row.get("status") == "empty":
            lines.append("empty prediction")
        if row.get("seen") is False:
            lines.append("zero-shot category")
    return '<div class="scores">' + "<br>".join(html.escape(x) for x in lines) + "</div>"


def _pred_cell(rows: list[dict[str, Any]], size: int) -> str:
    """Two renders of the aligned prediction plus the scores of every metric row of one (label, key)."""
    ok = [r for r in rows if r.get("status") == "ok" and r.get("pred_mesh")]
    renders = ""
    if ok:
        row = ok[0]
        try:
            shape = load_shape(row["pred_mesh"], np.asarray(row["align"]["matrix"], float))
            renders = "".join(_img(render(shape, size, az, el, PRED_COLOUR), f"prediction {az:g} deg")
                              for az, el in VIEWS)
        except Ss3dError as err:
            renders = f'<div class="error">{html.escape(str(err))}</div>'
    return f"<td>{renders}{_scores_html(rows)}</td>"


def build_report(result_files: list[str | os.PathLike[str]], shards: str | list[str],
                 manifest: str | os.PathLike[str], out: str | os.PathLike[str], *, size: int = 160, view: int = 0,
                 limit: int | None = None, title: str = "ss3d evaluation report") -> Path:
    """Write the HTML report for the rows of ``result_files`` (one or more methods and metrics) to ``out``."""
    rows = read_results(result_files)
    if not rows:
        raise Ss3dError("the result files hold no rows")
    labels = list(dict.fromkeys(r["label"] for r in rows))
    by_key: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_key[r["key"]][r["label"]].append(r)
    truth = GroundTruth(manifest)
    wanted = [k for k in dict.fromkeys(r["key"] for r in rows)]
    if limit is not None:
        wanted = wanted[:limit]
    items = {item.key: item for item in iter_test_items(shards, view) if item.key in set(wanted)}
    missing = [k for k in wanted if k not in items]
    if missing:
        raise Ss3dError(f"{len(missing)} result rows name samples not in the shards (first: {missing[0]})",
                        hint="pass the shards the results were computed on")
    head = "".join(f"<th>{html.escape(x)}</th>" for x in ["sample", "input", "ground truth", *labels])
    body = []
    with progress() as bar:
        task = bar.add_task("report", total=len(wanted), status="")
        for key in wanted:
            item = items[key]
            cells = [f'<td class="key">{html.escape(key)}<br>{html.escape(item.info.category)}</td>',
                     f"<td>{_img(_thumbnail(item.image, size), 'input image')}</td>"]
            try:
                gt = truth.shape(item.info.instance_id)
                cells.append("<td>" + "".join(_img(render(gt, size, az, el, GT_COLOUR), f"ground truth {az:g} deg")
                                              for az, el in VIEWS) + "</td>")
            except Ss3dError as err:
                cells.append(f'<td><div class="error">{html.escape(str(err))}</div></td>')
            cells += [_pred_cell(by_key[key].get(label, []), size) for label in labels]
            body.append("<tr>" + "".join(cells) + "</tr>")
            bar.update(task, advance=1)
    page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{len(wanted)} samples; predictions shown after the alignment they were scored with; views at "
            f"azimuth/elevation {', '.join(f'{a:g}/{e:g}' for a, e in VIEWS)} degrees.</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(body) + "\n</tbody></table></body></html>\n")
    atomic_write_text(out, page)
    return Path(out)
