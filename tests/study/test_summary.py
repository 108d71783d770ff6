"""synthgap.study.summary: the typed summary and its summary.json (schema 2, and schema 1 read back), and
the comparison's bootstrap over seeds and test images from the cells' saved predictions."""

from __future__ import annotations

import json
import os

import pytest

from synthgap.errors import SynthgapError
from synthgap.study import HEADLINE, SCHEMA_VERSION, StudySummary, read_summary, study_config_from_dict, summarize

OLD = os.path.join(os.path.dirname(__file__), "data", "summary_v1.json")  # written by the code of commit 34529bf


def test_a_schema_1_summary_reads_into_the_typed_fields():
    raw = json.load(open(OLD))
    s = read_summary(OLD)
    assert s.schema_version == 1 and s.headline == HEADLINE and s.target_name == "real"
    assert [r.name for r in s.rows] == [r["name"] for r in raw["rows"]]
    real = s.row("real-10")
    assert real.target[("unity", "mAP")].values == raw["rows"][1]["unity mAP"]["values"]
    assert real.in_domain[HEADLINE].mean == raw["rows"][1]["in-domain coco AP50"]["mean"]
    assert real.seeds == [1, 2, 3] and real.learned is False and real.transfer_ratio.mean == pytest.approx(2.6212121)
    c = s.comparison[1]
    assert c.metrics[HEADLINE].difference.ci == tuple(raw["comparison"][1]["metrics"]["coco AP50"]["difference"]["ci"])
    assert c.metrics[HEADLINE].bootstrap is None  # schema 1 had the t-interval only
    fg = s.feature_gap
    assert fg.metric == HEADLINE and fg.rows[1].ap_gap == raw["feature_gap"]["rows"][1]["AP gap"]
    assert s.conclusions == raw["conclusions"]


def test_summary_json_round_trips_and_names_its_schema():
    s = read_summary(OLD)
    doc = json.loads(json.dumps(StudySummary(rows=s.rows, comparison=s.comparison, feature_gap=s.feature_gap,
                                             conclusions=s.conclusions).to_dict()))
    assert doc["schema_version"] == SCHEMA_VERSION == 2 and doc["headline"] == ["coco", "AP50"]
    assert doc["rows"][0]["target"]["coco"]["AP50"]["mean"] == pytest.approx(0.11)  # nested like metrics.json
    assert " " not in "".join(k for r in doc["rows"] for k in r)  # no display strings as keys any more
    back = StudySummary.from_dict(doc)
    assert back.rows == s.rows and back.comparison == s.comparison and back.feature_gap == s.feature_gap
    with pytest.raises(SynthgapError, match="schema_version 3 is newer"):
        StudySummary.from_dict({**doc, "schema_version": 3})


@pytest.fixture(scope="module")
def predicted_study(tmp_path_factory):
    """Finished real-50 / finetune-50 cells over 3 seeds whose metrics are those of their predictions
    (fake detectors finding 30 % vs 90 % of the boxes) on one 6-frame test set."""
    from tests.helpers.runs import finish_cell, make_test_set

    root = tmp_path_factory.mktemp("study")
    test = make_test_set(str(root / "test"), frames=6)
    out = root / "out"
    for seed in (1, 2, 3):  # the two arms' detections come from different random streams, as two models' would
        finish_cell(out, "real-50", seed, test, target=None, own=0.6, keep=0.3)
        finish_cell(out, "finetune-50", seed, test, target=None, own=0.7, keep=0.9, prediction_seed=seed + 10)
    unused = str(root / "not-read")  # summarize reads the test set and the cells only
    cfg = study_config_from_dict({"datasets": {"synthetic": unused, "real_train": unused, "real_test": test},
                                  "cells": ["real", "finetune"], "fractions": [0.5], "seeds": [1, 2, 3],
                                  "bootstrap_resamples": 200, "bootstrap_seed": 7, "data_stats": False})
    return cfg, str(out), test


def test_the_comparison_carries_the_bootstrap_over_seeds_and_test_images(predicted_study):
    """Its mean is the seeds' mean AP50 difference of the saved predictions, as pycocotools scores them;
    the t-interval over seeds sits beside it; summary.json keeps the resample count and seed."""
    from tests.helpers.oracle import cocoeval

    cfg, out, test = predicted_study
    summary = summarize(cfg, out)
    (c,) = summary.comparison
    m = c.metrics[HEADLINE]
    gt = json.load(open(os.path.join(test, "annotations.json")))
    ap50 = {(cell, s): cocoeval(gt, json.load(open(os.path.join(out, "cells", cell, f"seed{s}", "predictions.json"))))
            .stats[1] for cell in ("real-50", "finetune-50") for s in (1, 2, 3)}
    oracle = sum(ap50[("finetune-50", s)] - ap50[("real-50", s)] for s in (1, 2, 3)) / 3
    b = m.bootstrap
    assert b.mean == pytest.approx(oracle, abs=1e-9) and m.difference.mean == pytest.approx(oracle, abs=1e-9)
    assert b.ci[0] <= b.mean <= b.ci[1] and (b.resamples, b.seed, b.seeds, b.images) == (200, 7, 3, 6)
    assert m.difference.ci is not None  # the paired t-interval over seeds, beside it
    assert c.metrics[("coco", "AP")].bootstrap is not None and c.metrics[("unity", "mAP")].bootstrap is None
    doc = json.loads(json.dumps(summary.to_dict()))["comparison"][0]["metrics"]["coco"]["AP50"]["bootstrap"]
    assert doc["resamples"] == 200 and doc["seed"] == 7 and doc["ci"] == list(b.ci)
    assert any("Over seeds and test images (hierarchical bootstrap, 200 resamples)" in x for x in summary.conclusions)


def test_no_bootstrap_without_predictions_or_when_turned_off(predicted_study):
    import dataclasses

    cfg, out, _ = predicted_study
    off = summarize(dataclasses.replace(cfg, bootstrap_resamples=0), out)
    assert off.comparison[0].metrics[HEADLINE].bootstrap is None
    preds = os.path.join(out, "cells", "real-50", "seed2", "predictions.json")
    os.rename(preds, preds + ".away")
    try:
        (c,) = summarize(cfg, out).comparison
    finally:
        os.rename(preds + ".away", preds)
    assert c.metrics[HEADLINE].bootstrap is None and c.metrics[HEADLINE].difference.n == 3
