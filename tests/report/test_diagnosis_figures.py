"""Report figures of issue 15: TIDE error breakdown side by side per run, AP by attribute."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from synthgap.metrics import evaluate
from synthgap.metrics.tide import headline
from synthgap.report import figures
from synthgap.report.run import Run

from tests.metrics.test_attributes import LABELS, random_scene


def png_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def test_error_and_attribute_figures_one_panel_per_run():
    samples, dets = random_scene(0)
    worse = [dict(d, bbox=(np.asarray(d["bbox"]) + 6).tolist()) for d in dets]  # shifted: localization errors
    runs = []
    for name, ds in (("synthetic", worse), ("real", dets)):
        r = evaluate(samples, ds, label_map=LABELS, errors=True, attributes=True)
        runs.append(Run(name=name, path=name, metrics={"coco": r.to_dict()}))
    one = figures.error_breakdown_png(runs[:1])
    two = figures.error_breakdown_png(runs)
    assert two[:8] == b"\x89PNG\r\n\x1a\n" and png_size(two)[0] > png_size(one)[0]
    assert figures.attribute_ap_png(runs)[:4] == b"\x89PNG"
    assert "localization" in headline(runs[0].metrics["coco"]["errors"])


def test_figures_compute_the_breakdown_from_predictions_when_the_metrics_lack_it():
    samples, dets = random_scene(1)
    run = Run(name="m", path="m", metrics={"coco": evaluate(samples, dets, label_map=LABELS).to_dict()},
              predictions=dets, samples=samples, label_map=LABELS)
    assert figures.error_breakdown_png([run]) is not None
    assert set(run.metrics["coco"]) >= {"errors", "attributes"}
    assert figures.error_breakdown_png([Run(name="x", path="x", metrics={"coco": {}})]) is None
    assert figures.attribute_ap_png([Run(name="x", path="x")]) is None


def test_diagnosis_section_html_names_each_run_and_escapes():
    from synthgap.report.html import diagnosis_section

    samples, dets = random_scene(2)
    runs = [Run(name=n, path=n, metrics={"coco": evaluate(samples, dets, label_map=LABELS, errors=True,
                                                           attributes=True).to_dict()}) for n in ("syn<th>", "real")]
    text = diagnosis_section(runs)
    assert "syn&lt;th&gt;" in text and "syn<th>" not in text
    assert text.count("data:image/png;base64,") == 2 and "most lost AP is" in text
    assert "no data" in diagnosis_section([Run(name="x", path="x")])


def test_stats_section_shows_the_feature_gap_when_stats_json_has_it():
    from synthgap.report.html import feature_gap_table, stats_section
    from synthgap.stats import dataset_stats, gap_summary

    samples, _ = random_scene(0)
    a = dataset_stats(samples, LABELS, "synthetic").to_dict()
    b = dataset_stats(samples[:5], LABELS, "real").to_dict()
    gap = gap_summary(a, b)
    doc = {"datasets": {"synthetic": a, "real": b}, "reference": "synthetic", "gap": {"real": gap}}
    assert "feature-gap" not in stats_section(doc, [])
    gap["features"] = {"image": 12.5, "per_class": {"a": 3.0, "b<": 9.0}, "per_class_mean": 6.0, "images": [12, 5],
                       "dims": 256, "backbone": "model.pt"}
    text = stats_section(doc, [])
    assert 'id="feature-gap"' in text and "12.5" in text and "b&lt; (9)" in text and "model.pt" in text
    assert "&ndash;" in feature_gap_table("s", {"r": {"image": None, "per_class": {}, "images": [1, 1]}})
