"""The report's study sections: the budget figure, the comparison / summary tables with the "did not learn"
flag, and the datasets' frames with their boxes; a study page in headless Chromium."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from synthgap.data import open_dataset
from synthgap.report import build_report
from synthgap.report.figures import budget_curve_png
from synthgap.report.gallery import THUMB_WIDTH, draw_ground_truth
from synthgap.report.html import comparison_section, summary_table

from tests.helpers.chromium import load_page
from tests.helpers.runs import make_run, make_test_set


def _stat(*values):
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else None
    return {"mean": mean, "std": std, "values": list(values)}


def _summary(real_10_learned: bool = True) -> dict:
    """A summary.json document as synthgap.study writes it: synthetic, real / finetune at 10 and 100 %."""
    def row(name, kind, fraction, target, own, learned=True):
        return {"name": name, "kind": kind, "fraction": fraction, "seeds": 2, "coco AP50": _stat(*target),
                "coco AP": _stat(*(t / 2 for t in target)), "in-domain coco AP50": _stat(*own),
                "transfer ratio": _stat(*(t / o for t, o in zip(target, own))), "learned": learned,
                "warning": None if learned else "did not learn in its own domain: this number says nothing"}
    rows = [row("synthetic", "synthetic", None, (0.10, 0.12), (0.9, 0.8)),
            row("real-10", "real", 0.1, (0.20, 0.24), (0.5, 0.6) if real_10_learned else (0.05, 0.1),
                learned=real_10_learned),
            row("finetune-10", "finetune", 0.1, (0.35, 0.37), (0.7, 0.7)),
            row("real-100", "real", 1.0, (0.50, 0.52), (0.7, 0.7)),
            row("finetune-100", "finetune", 1.0, (0.55, 0.53), (0.8, 0.8))]
    comparison = []
    for f, real, ft in ((0.1, (0.20, 0.24), (0.35, 0.37)), (1.0, (0.50, 0.52), (0.55, 0.53))):
        diff = [b - a for a, b in zip(real, ft)]
        comparison.append({"fraction": f, "real_cell": f"real-{int(f * 100)}", "finetune_cell": f"finetune-{int(f * 100)}",
                           "seeds": [1, 2], "train_images": int(80 * f), "warning": None if f == 1.0 or real_10_learned
                           else "real-10 did not learn in its own domain",
                           "metrics": {"coco AP50": {"real": _stat(*real), "finetune": _stat(*ft),
                                                     "difference": {**_stat(*diff), "n": 2, "ci": [-0.1, 0.4]}}}})
    return {"columns": ["coco AP", "coco AP50"], "in_domain_columns": ["in-domain coco AP50"], "headline": "coco AP50",
            "in_domain_floor": 0.2, "not_learned": "did not learn in its own domain", "rows": rows,
            "comparison": comparison, "ci_method": "95 % paired t-interval over seeds",
            "conclusions": ["At 10 % real data (8 images), synthetic pretraining added +0.140 COCO AP50 (...)"]}


def test_budget_curve_is_a_plot_and_needs_a_comparison():
    png = budget_curve_png(_summary(real_10_learned=False))
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and im.width > 300 and np.asarray(im.convert("L")).std() > 10
    assert budget_curve_png({"rows": [], "comparison": []}) is None


def test_tables_flag_cells_that_did_not_learn():
    good, bad = _summary(True), _summary(False)
    assert "data-learned" not in summary_table(good) and "&#9888;" not in summary_table(good)
    table = summary_table(bad)
    assert '<tr data-learned="false" data-cell="real-10">' in table and "&#9888; did not learn" in table
    assert "in its own domain (held out)" in table and "transfer ratio" in table
    section = comparison_section(bad, plot=None)
    assert section.count('class="comparison-row"') == 2 and "real-10 did not learn" in section
    assert "[-0.1000, +0.4000]" in section and "+0.1400" in section  # the paired CI and the mean difference


def test_ground_truth_frames_draw_every_box(tmp_path):
    root = make_test_set(str(tmp_path / "t"), frames=1)
    ds = open_dataset(root)
    sample = ds[0]
    with Image.open(io.BytesIO(draw_ground_truth(sample, ds.label_map, color=(255, 0, 255)))) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    assert im.width == THUMB_WIDTH
    scale = THUMB_WIDTH / sample.width
    magenta = (rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] > 200)
    for x, y, w, h in sample.boxes.tolist():  # each box's left edge is drawn in the colour asked for
        x0, y0, y1 = int(round(x * scale)), int(round(y * scale)), int(round((y + h) * scale))
        column = magenta[y0:y1, max(0, x0 - 1):x0 + 2]
        assert column.any(axis=1).mean() > 0.5, (x, y, w, h)


def test_study_page_in_headless_chromium(tmp_path):
    test = make_test_set(str(tmp_path / "test"), frames=2)
    runs = [make_run(str(tmp_path / name), test, keep=keep, seed=i, name=name)
            for i, (name, keep) in enumerate((("real-10 seed1", 0.4), ("finetune-10 seed1", 0.8)))]
    out = str(tmp_path / "study.html")
    build_report(runs, out, title="study page", gallery_images=2, summary=_summary(False),
                 datasets=[("synthetic", test, None), ("real test", test, None)])
    load = load_page("file://" + out, str(tmp_path), expressions={
        "images": "document.images.length",
        "decoded": "Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length",
        "frames": "Array.from(document.querySelectorAll('[data-dataset]')).map(d => [d.dataset.dataset, "
                  "d.querySelectorAll('img.dataset-frame').length])",
        "flagged": "Array.from(document.querySelectorAll('#study-summary tr[data-learned=false]'))"
                   ".map(r => r.dataset.cell)",
        "conclusions": "document.querySelectorAll('#conclusions li').length",
    })
    assert load.errors == [], load.errors
    v = load.values
    assert v["images"] == v["decoded"] and v["frames"] == [["synthetic", 2], ["real test", 2]]
    assert v["flagged"] == ["real-10"] and v["conclusions"] == 1
