"""The README's main job, end to end at its smallest size."""

import json
import os

import pytest
from click.testing import CliRunner

from synthgap.cli import main
from synthgap.study import HEADLINE, read_summary
from synthgap.study.demo import DONE_MARKER, SIZES, TARGET_NAME


@pytest.mark.slow
def test_tiny_demo_runs_end_to_end_and_a_rerun_reuses_everything(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --out, as `make demo` passes it
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--out", "demo", "--size", "tiny", "--quiet"])
    assert result.exit_code == 0, result.output
    for name in ("synthetic", "target-train", "target-test"):
        assert (out / "data" / name / DONE_MARKER).exists()
    summary = read_summary(str(out / "study" / "summary.json"))
    tiny = SIZES["tiny"]
    assert [r.name for r in summary.rows] == ["synthetic", "real-50", "finetune-50"]
    for row in summary.rows:  # both seeds, target and in-domain numbers, the learned flag decided
        assert row.seeds == list(tiny.seeds) == [0, 1] and 0.0 <= row.target[HEADLINE].mean <= 1.0
        assert 0.0 <= row.in_domain[HEADLINE].mean <= 1.0 and isinstance(row.learned, bool)
    (comparison,) = summary.comparison  # datasetinsights' comparison at the demo's budget, paired over 2 seeds
    m = comparison.metrics[HEADLINE]
    assert comparison.seeds == [0, 1] and m.difference.n == 2
    assert m.bootstrap.seeds == 2 and m.bootstrap.images == tiny.target_test_frames  # seeds and test images
    assert json.loads((out / "study" / "summary.json").read_text())["schema_version"] == 2
    report = (out / "study" / "report.html").read_text()
    assert "finetune-50" in report and "<html" in report.lower() and 'id="comparison"' in report
    assert "What this says:" in result.output and "At 50 % target data" in result.output
    for row in summary.rows:  # a cell that did not learn is flagged in the printed summary too
        assert ("!! did not learn" in result.output) or row.learned
    # the procedural target is named for what it is, never "real", in the text, summary.txt and the report
    assert summary.target_name == TARGET_NAME
    for text in (result.output, (out / "study" / "summary.txt").read_text(), report):
        assert "real only" not in text and "real test set" not in text and "real data" not in text
    assert f"Report:        {out / 'study' / 'report.html'}" in result.output.replace("\\", "/") or \
        "Report:        demo/study/report.html" in result.output

    # the training sets are what the tiny size says: 2 of 10 target-train frames held out, half of 8 trained on
    meta = json.loads((out / "study" / "cells" / "real-50" / "seed0" / "metrics.json").read_text())
    assert meta["train_images"] == 4 and meta["train"]["steps"] >= tiny.real_steps

    finished = {p: os.path.getmtime(p) for p in out.glob("study/cells/*/seed*/metrics.json")}
    images = sorted(p.name for p in (out / "data" / "target-test").rglob("*.jpg"))
    rerun = CliRunner().invoke(main, ["demo", "--out", "demo", "--size", "tiny", "--quiet"])
    assert rerun.exit_code == 0, rerun.output
    assert {p: os.path.getmtime(p) for p in finished} == finished  # no cell trained again
    assert sorted(p.name for p in (out / "data" / "target-test").rglob("*.jpg")) == images


def test_generate_once_regenerates_an_interrupted_dataset(tmp_path):
    from synthgap.study.demo import generate_once

    out = tmp_path / "d"
    out.mkdir()
    (out / "half-written.json").write_text("{")  # an earlier run died here: no marker
    generate_once(str(out), progress=False, frames=2, format="coco", seed=0, width=96, height=72,
                  classes=["a", "b"], style="synthetic")
    assert not (out / "half-written.json").exists() and (out / DONE_MARKER).exists()
    before = sorted(p.name for p in out.rglob("*"))
    generate_once(str(out), progress=False, frames=5, format="coco", seed=0, width=96, height=72,
                  classes=["a", "b"], style="synthetic")  # finished: reused as is
    assert sorted(p.name for p in out.rglob("*")) == before
