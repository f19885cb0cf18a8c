"""Result tables: per category and mean, one column per method, as the paper's tables 2-4.

A table cell is the mean of a score over the category's samples with a value (IoU of an empty prediction counts
as 0; failed rows have no value and are counted separately). "mean" is the mean of the category means, as in the
paper; "mean (seen)" / "mean (zero-shot)" split the categories by whether the method's checkpoint was trained on
them (its metadata ``categories``). Cells of zero-shot categories carry a dagger.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from ss3d_data.errors import Ss3dError

HIGHER_IS_BETTER = {"iou": True, "chamfer_l1": False, "chamfer_l2": False}


@dataclass
class ScoreTable:
    """``values[category][label]`` = (mean, samples with a value); ``seen[category][label]`` True/False/None."""

    score: str
    labels: list[str]
    categories: list[str]
    values: dict[str, dict[str, tuple[float, int]]] = field(default_factory=dict)
    seen: dict[str, dict[str, bool | None]] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    summary: dict[str, dict[str, float | None]] = field(default_factory=dict)  # row name -> label -> value

    @property
    def higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER.get(self.score, True)


def row_value(row: dict[str, Any], score: str) -> float | None:
    """A result row's ``score`` (``iou``, ``chamfer_l1``, ``chamfer_l2`` or ``fscore@T``); None when it is absent
    or the prediction failed."""
    if score.startswith("fscore@"):
        value = (row.get("fscore") or {}).get(score.removeprefix("fscore@"))
    else:
        value = row.get(score)
    if value is None or row.get("status") == "failed":
        return None
    return float(value)


def score_names(rows: list[dict[str, Any]]) -> list[str]:
    """The scores present in ``rows``, in a fixed order: iou, chamfer_l1, then F-scores by threshold."""
    names: list[str] = []
    if any(r.get("metric") == "iou" for r in rows):
        names.append("iou")
    if any(r.get("metric") == "chamfer" for r in rows):
        names.append("chamfer_l1")
        thresholds = {t for r in rows for t in (r.get("fscore") or {})}
        names += [f"fscore@{t}" for t in sorted(thresholds, key=float)]
    return names


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def build_table(rows: list[dict[str, Any]], score: str) -> ScoreTable:
    """Aggregate result rows (any number of labels) into one :class:`ScoreTable` for ``score``."""
    metric = "iou" if score == "iou" else "chamfer"
    rows = [r for r in rows if r.get("metric") == metric]
    if not rows:
        raise Ss3dError(f"no result rows for {score}")
    labels = list(dict.fromkeys(r["label"] for r in rows))
    seen_keys: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r["key"] in seen_keys[r["label"]]:
            raise Ss3dError(f"sample {r['key']} appears twice for {r['label']} ({metric}); pass each result file once")
        seen_keys[r["label"]].add(r["key"])
    categories = sorted({r["category"] for r in rows})
    table = ScoreTable(score, labels, categories)
    collected: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        value = row_value(r, score)
        if value is None:
            table.failed[r["label"]] = table.failed.get(r["label"], 0) + 1
        else:
            collected[(r["category"], r["label"])].append(value)
        table.seen.setdefault(r["category"], {})[r["label"]] = r.get("seen")
    for (category, label), values in collected.items():
        table.values.setdefault(category, {})[label] = (sum(values) / len(values), len(values))
    for label in labels:
        per_cat = {c: table.values.get(c, {}).get(label) for c in categories}
        means = {c: v[0] for c, v in per_cat.items() if v is not None}
        table.summary.setdefault("mean", {})[label] = _mean(list(means.values()))
        flags = {c: table.seen.get(c, {}).get(label) for c in categories}
        if any(f is not None for f in flags.values()):
            table.summary.setdefault("mean (seen)", {})[label] = _mean([m for c, m in means.items() if flags[c]])
            table.summary.setdefault("mean (zero-shot)", {})[label] = _mean(
                [m for c, m in means.items() if flags[c] is False])
    return table


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _cells(table: ScoreTable, category: str, digits: int) -> list[str]:
    out = []
    for label in table.labels:
        entry = table.values.get(category, {}).get(label)
        mark = "\u2020" if table.seen.get(category, {}).get(label) is False else ""
        out.append(_fmt(entry[0] if entry else None, digits) + mark)
    return out


def _body(table: ScoreTable, digits: int) -> list[list[str]]:
    lines = [[c, *_cells(table, c, digits)] for c in table.categories]
    for name, per_label in table.summary.items():
        lines.append([name, *(_fmt(per_label.get(label), digits) for label in table.labels)])
    lines.append(["failed", *(str(table.failed.get(label, 0)) for label in table.labels)])
    return lines


def _title(table: ScoreTable) -> str:
    arrow = "higher is better" if table.higher_is_better else "lower is better"
    return f"{table.score} ({arrow}; \u2020 = category unseen in training)"


def to_rich(table: ScoreTable, digits: int = 3) -> Table:
    out = Table(title=_title(table))
    out.add_column("category")
    for label in table.labels:
        out.add_column(label, justify="right")
    body = _body(table, digits)
    for i, line in enumerate(body):
        out.add_row(*line, end_section=i == len(table.categories) - 1)
    return out


def to_markdown(table: ScoreTable, digits: int = 3) -> str:
    lines = [f"**{_title(table)}**", "", "| category | " + " | ".join(table.labels) + " |",
             "| --- | " + " | ".join("---:" for _ in table.labels) + " |"]
    lines += ["| " + " | ".join(line) + " |" for line in _body(table, digits)]
    return "\n".join(lines) + "\n"


def to_json(table: ScoreTable) -> dict[str, Any]:
    return {"score": table.score, "labels": table.labels,
            "categories": {c: {label: {"mean": v[0], "samples": v[1]} for label, v in table.values.get(c, {}).items()}
                           for c in table.categories},
            "summary": table.summary, "failed": table.failed,
            "seen": table.seen}


def summary_json(tables: list[ScoreTable]) -> str:
    return json.dumps({"format": "ss3d-eval-table", "version": 1, "tables": [to_json(t) for t in tables]},
                      indent=2, sort_keys=True) + "\n"


@dataclass
class Margin:
    """A method's margin over a reference on one score: the paper-style mean (of category means) of the paired
    per-sample differences, oriented so positive is better, with a 95% paired-bootstrap interval."""

    label: str
    reference: str
    score: str
    mean: float
    low: float
    high: float
    samples: int


def margins(rows: list[dict[str, Any]], score: str, reference: str, resamples: int = 2000,
            seed: int = 0) -> list[Margin]:
    """Each label's :class:`Margin` over ``reference`` on the samples both scored. The bootstrap resamples samples
    within each category (the table's mean weighs categories equally), ``resamples`` times; deterministic."""
    import numpy as np

    metric = "iou" if score == "iou" else "chamfer"
    values: dict[str, dict[str, tuple[str, float]]] = defaultdict(dict)
    for r in rows:
        if r.get("metric") == metric and (value := row_value(r, score)) is not None:
            values[r["label"]][r["key"]] = (r["category"], value)
    if reference not in values:
        raise Ss3dError(f"no {score} rows of the reference {reference!r}")
    sign = 1.0 if HIGHER_IS_BETTER.get(score, True) else -1.0
    rng = np.random.default_rng(seed)
    out = []
    for label in [x for x in values if x != reference]:
        per_category: dict[str, list[float]] = defaultdict(list)
        for key, (category, value) in values[label].items():
            if key in values[reference]:
                per_category[category].append(sign * (value - values[reference][key][1]))
        if not per_category:
            continue
        groups = [np.asarray(v) for v in per_category.values()]
        boot = np.mean([[g[rng.integers(len(g), size=len(g))].mean() for g in groups] for _ in range(resamples)],
                       axis=1)
        out.append(Margin(label, reference, score, float(np.mean([g.mean() for g in groups])),
                          float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975)),
                          sum(len(g) for g in groups)))
    return out


def margins_markdown(found: list[Margin], digits: int = 3) -> str:
    """One Markdown table of margins (positive = better than the reference)."""
    if not found:
        return ""
    lines = [f"margin over {found[0].reference} (positive = better; 95% paired-bootstrap interval)", "",
             "| method | score | margin | 95% interval | samples |", "| --- | --- | ---: | ---: | ---: |"]
    for m in found:
        lines.append(f"| {m.label} | {m.score} | {m.mean:+.{digits}f} | [{m.low:+.{digits}f}, {m.high:+.{digits}f}] "
                     f"| {m.samples} |")
    return "\n".join(lines) + "\n"
