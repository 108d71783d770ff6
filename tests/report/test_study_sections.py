"""The report's study sections: the budget figure, the comparison / summary tables with the "did not learn"
flag, and the datasets' frames with their boxes; a study page in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from synthgap.data import open_dataset
from synthgap.report import build_report
from synthgap.report.figures import budget_curve_png
from synthgap.report.gallery import THUMB_WIDTH, draw_ground_truth
from synthgap.report.html import comparison_section, summary_table
from synthgap.study import (CellRow, Comparison, ImageSeedBootstrap, MetricComparison, StudySummary, mean_std,
                            paired_difference)

from tests.helpers.chromium import load_page
from tests.helpers.runs import make_run, make_test_set


OLD_SUMMARY = os.path.join(os.path.dirname(__file__), "..", "study", "data", "summary_v1.json")  # schema 1
AP50, AP = ("coco", "AP50"), ("coco", "AP")


def _summary(real_10_learned: bool = True, target_name: str = "real") -> StudySummary:
    """A study summary as synthgap.study makes it: synthetic, real / finetune at 10 and 100 %, 2 seeds."""
    def row(name, kind, fraction, target, own, learned=True):
        scale = {AP50: 1.0, AP: 0.5, ("coco", "AR100"): 1.1, ("unity", "mAP"): 0.33, ("unity", "mAPIOU50"): 0.9,
                 ("unity", "mAR"): 1.05}  # every metric of a real summary: the widest table
        return CellRow(name=name, kind=kind, fraction=fraction, seeds=[1, 2],
                       target={m: mean_std([t * k for t in target]) for m, k in scale.items()},
                       in_domain={AP50: mean_std(list(own)), AP: mean_std([o / 2 for o in own])},
                       transfer_ratio=mean_std([t / o for t, o in zip(target, own)]), learned=learned,
                       warning=None if learned else "did not learn in its own domain: this number says nothing")
    rows = [row("synthetic", "synthetic", None, (0.10, 0.12), (0.9, 0.8)),
            row("real-10", "real", 0.1, (0.20, 0.24), (0.5, 0.6) if real_10_learned else (0.05, 0.1),
                learned=real_10_learned),
            row("finetune-10", "finetune", 0.1, (0.35, 0.37), (0.7, 0.7)),
            row("real-100", "real", 1.0, (0.50, 0.52), (0.7, 0.7)),
            row("finetune-100", "finetune", 1.0, (0.55, 0.53), (0.8, 0.8))]
    comparison = []
    for f, real, ft in ((0.1, (0.20, 0.24), (0.35, 0.37)), (1.0, (0.50, 0.52), (0.55, 0.53))):
        diff = paired_difference([b - a for a, b in zip(real, ft)])
        boot = ImageSeedBootstrap(metric="AP50", mean=diff.mean, ci=(diff.mean - 0.05, diff.mean + 0.05),
                                  p_positive=0.97, seed_sd=0.01, image_sd=0.03, dominant="test images", seeds=2,
                                  images=40, seeds_needed=1, images_needed=30, resamples=1000, seed=0)
        comparison.append(Comparison(
            fraction=f, real_cell=f"real-{int(f * 100)}", finetune_cell=f"finetune-{int(f * 100)}", seeds=[1, 2],
            train_images=int(80 * f),
            warning=None if f == 1.0 or real_10_learned else "real-10 did not learn in its own domain",
            metrics={AP50: MetricComparison(real=mean_std(list(real)), finetune=mean_std(list(ft)), difference=diff,
                                            bootstrap=boot)}))
    return StudySummary(rows=rows, comparison=comparison,
                        target_name=target_name, ci_method="95 % paired t-interval over seeds",
                        conclusions=["At 10 % real data (8 images), synthetic pretraining added +0.140 COCO AP50"])


def test_budget_curve_is_a_plot_and_needs_a_comparison():
    png = budget_curve_png(_summary(real_10_learned=False))
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and im.width > 300 and np.asarray(im.convert("L")).std() > 10
    assert budget_curve_png(StudySummary(rows=[], comparison=[])) is None


def test_tables_flag_cells_that_did_not_learn():
    good, bad = _summary(True), _summary(False)
    assert "data-learned" not in summary_table(good) and "&#9888;" not in summary_table(good)
    table = summary_table(bad)
    assert '<tr data-learned="false" data-cell="real-10">' in table and "&#9888; did not learn" in table
    assert "in its own domain (held out)" in table and "transfer<br>ratio" in table
    section = comparison_section(bad, plot=None)
    assert section.count('class="comparison-row"') == 2 and "real-10 did not learn" in section
    t = _summary(False).comparison[0].metrics[AP50].difference  # 2 seeds: 0.15 and 0.13, t(0.975, 1) = 12.706
    assert f"[{t.ci[0]:+.4f},<br>{t.ci[1]:+.4f}]" in section and "+0.1400" in section  # the paired t-CI, the mean
    assert "[+0.0900,<br>+0.1900]" in section and "<td>0.97</td>" in section  # the bootstrap's CI and P(diff > 0)
    assert "1000 resamples, random seed 0" in section


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


def test_a_summary_written_before_schema_2_still_renders(tmp_path):
    """summary_v1.json was written by the study code of commit 34529bf (rows keyed "coco AP50", no
    schema_version): the report reads it into the typed summary and shows its rows, comparison and flags."""
    raw = json.load(open(OLD_SUMMARY))
    assert "schema_version" not in raw and "coco AP50" in raw["rows"][0]
    table = summary_table(raw)
    assert table.count("<tr data-") == 5 and '<tr data-learned="false" data-cell="real-10">' in table
    assert "0.8500<br>" in table and "on the real test set" in table  # synthetic in-domain AP50 mean
    section = comparison_section(raw, plot=None)
    ci = raw["comparison"][1]["metrics"]["coco AP50"]["difference"]["ci"]  # 100 %: excludes 0
    assert section.count('class="comparison-row"') == 4 and f"[{ci[0]:+.4f},<br>{ci[1]:+.4f}]" in section
    assert "real-10 did not learn" in section and "hierarchical bootstrap" not in section  # schema 1: t only
    with Image.open(io.BytesIO(budget_curve_png(raw))) as im:
        assert im.format == "PNG" and im.width > 600
    test = make_test_set(str(tmp_path / "test"), frames=2)
    run = make_run(str(tmp_path / "real-10 seed1"), test, keep=0.5, seed=1, name="real-10 seed1")
    out = build_report([run], str(tmp_path / "old.html"), title="old study", gallery_images=0, summary=OLD_SUMMARY)
    text = open(out, encoding="utf-8").read()
    assert 'id="conclusions"' in text and text.count("<li>At ") == 2 and 'id="feature-vs-ap"' in text
    assert "<td>0.8000</td><td>0.1111</td>" in text  # the feature gap row's AP gap and transfer ratio


PAGE_WIDTH = 1280  # CSS pixels: the study tables and every figure must fit without a horizontal scroll bar


@pytest.mark.slow  # two Chromium pages and the stats plots: ~10 s on 2 busy cores
def test_study_page_in_headless_chromium_fits_1280_pixels(tmp_path):
    from synthgap.stats import write_stats

    test = make_test_set(str(tmp_path / "test"), frames=2)
    train = make_test_set(str(tmp_path / "train"), frames=2, seed=5)
    runs = [make_run(str(tmp_path / name), test, keep=keep, seed=i, name=name)
            for i, (name, keep) in enumerate((("real-10 seed1", 0.4), ("finetune-10 seed1", 0.8)))]
    names = ["synthetic", "target train", "target test"]  # three datasets: the widest heatmap figure
    stats = write_stats([test, train, test], str(tmp_path / "stats"), names=names)
    out = str(tmp_path / "study.html")
    summary = _summary(False, target_name="target (procedural stand-in)")
    build_report(runs, out, title="study page", gallery_images=2, summary=summary, stats=stats,
                 datasets=[("synthetic", test, None), ("target test", test, None)])
    text = open(out, encoding="utf-8").read()
    assert "on the target (procedural stand-in) test set" in text and "target<br>only" in text
    assert "real only" not in text and "on the real test set" not in text
    load = load_page("file://" + out, str(tmp_path), window_size=(PAGE_WIDTH, 900), expressions={
        "width": "document.documentElement.clientWidth",
        "scroll": "document.documentElement.scrollWidth",
        "images": "document.images.length",
        "decoded": "Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length",
        # every table and image ends inside the body's content box: nothing overflows or is cut on the right
        "overflow": "(() => { const b = document.body, r = b.getBoundingClientRect().right - "
                    "parseFloat(getComputedStyle(b).paddingRight); return Array.from(document.querySelectorAll("
                    "'table, img')).filter(e => e.getBoundingClientRect().right > r + 1).map(e => e.id || e.alt); })()",
        "heatmap": "(() => { const i = Array.from(document.images).find(i => i.alt === 'box centres'); "
                   "return [i.naturalWidth, i.getBoundingClientRect().width, i.src]; })()",
        "frames": "Array.from(document.querySelectorAll('[data-dataset]')).map(d => [d.dataset.dataset, "
                  "d.querySelectorAll('img.dataset-frame').length])",
        "flagged": "Array.from(document.querySelectorAll('#study-summary tr[data-learned=false]'))"
                   ".map(r => r.dataset.cell)",
        "conclusions": "document.querySelectorAll('#conclusions li').length",
    })
    assert load.errors == [], load.errors
    v = load.values
    assert v["width"] <= PAGE_WIDTH and v["width"] >= PAGE_WIDTH - 20, v["width"]  # the window size took
    assert v["scroll"] <= v["width"] and v["overflow"] == [], v
    natural, shown, src = v["heatmap"]
    assert natural > 0 and 0 < shown <= natural  # scaled down to fit when wider than the page, never cut
    with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:  # the colour bar's label inside
        edge = np.asarray(im.convert("L"))[:, -3:]
    assert edge.min() > 240, "the heatmap figure has ink on its right edge: its colour-bar label is cut"
    assert v["images"] == v["decoded"] and v["frames"] == [["synthetic", 2], ["target test", 2]]
    assert v["flagged"] == ["real-10"] and v["conclusions"] == 1
