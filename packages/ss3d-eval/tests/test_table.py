"""Margins over a reference method: paired differences, oriented so positive is better, with bootstrap intervals."""

import pytest

from ss3d_eval.table import margins, margins_markdown


def _row(label, key, category, metric, value):
    score = {"iou": value} if metric == "iou" else {"chamfer_l1": value, "fscore": {}}
    return {"label": label, "key": key, "category": category, "metric": metric, "status": "ok", **score}


def test_margins_are_paired_category_weighted_and_oriented():
    rows = []
    for i in range(8):  # chair: the method beats the floor by exactly 0.1 on every sample
        rows += [_row("floor", f"c{i}", "chair", "iou", 0.2 + 0.01 * i),
                 _row("ours", f"c{i}", "chair", "iou", 0.3 + 0.01 * i)]
    for i in range(2):  # vase: worse by 0.05 (two samples weigh as much as chair's eight: a mean of category means)
        rows += [_row("floor", f"v{i}", "vase", "iou", 0.5), _row("ours", f"v{i}", "vase", "iou", 0.45)]
    rows += [_row("floor", "x", "vase", "chamfer", 0.08), _row("ours", "x", "vase", "chamfer", 0.05)]
    rows.append(_row("ours", "unpaired", "chair", "iou", 1.0))  # the floor has no row for it: left out
    (iou,) = margins(rows, "iou", "floor")
    assert iou.mean == pytest.approx((0.1 - 0.05) / 2) and iou.samples == 10
    assert iou.low == pytest.approx(0.025) and iou.high == pytest.approx(0.025)  # no spread within a category
    (chamfer,) = margins(rows, "chamfer_l1", "floor")
    assert chamfer.mean == pytest.approx(0.03)  # lower Chamfer is better: a positive margin
    assert "| ours | iou | +0.025 |" in margins_markdown([iou])


def test_interval_covers_the_spread():
    rows = []
    for i in range(20):
        rows += [_row("floor", f"k{i}", "chair", "iou", 0.2),
                 _row("ours", f"k{i}", "chair", "iou", 0.2 + (i % 5) * 0.02)]
    (m,) = margins(rows, "iou", "floor")
    assert m.mean == pytest.approx(0.04) and m.low < m.mean < m.high and m.high - m.low < 0.04
