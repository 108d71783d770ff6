"""synthgap.report / `synthgap report`: the page's content, its self-containment, and how it renders in
headless Chromium (no console errors, every image decodes, a screenshot with something on it)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from synthgap.cli import main
from synthgap.data import open_dataset
from synthgap.metrics import evaluate
from synthgap.report import build_report, load_run, read_scalars
from synthgap.report.gallery import COLORS, draw_matches

from tests.helpers.chromium import dump_dom, load_page, screenshot
from tests.helpers.runs import make_run, make_test_set


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    test = make_test_set(str(root / "test"), frames=3)
    good = make_run(str(root / "run_good"), test, keep=0.9, seed=0, name="good-model")
    bad = make_run(str(root / "run_bad"), test, keep=0.4, seed=1, name="bad-model")
    return root, test, good, bad


@pytest.fixture(scope="module")
def stats_json(runs):
    from synthgap.generate import generate
    from synthgap.stats import write_stats

    root, test, _, _ = runs
    synthetic = str(root / "synthetic")
    generate(synthetic, 2, format="coco", seed=9, width=160, height=120, progress=False)
    write_stats([synthetic, test], str(root / "stats"), names=["synthetic", "real test"], plots=False)
    return str(root / "stats" / "stats.json")


@pytest.fixture(scope="module")
def page(runs, stats_json):
    root, _, good, bad = runs
    out = str(root / "report.html")
    build_report([good, bad], out, title="Report under test", gallery_images=2, stats=stats_json)
    return out


N_STATS_PLOTS = 7  # class counts, heatmap, 5 histograms (the generator's data has visible pixels)
N_IMAGES = 5 + 2 * 2 + N_STATS_PLOTS  # PR, per-class AP, error breakdown, AP by attribute, training curves;
# 2 gallery images x 2 runs; data plots


def _data_uris(text: str) -> list[str]:
    return re.findall(r'src="(data:image/png;base64,[^"]+)"', text)


def test_page_is_self_contained_and_shows_both_runs(runs, page, stats_json):
    _, _, good, _ = runs
    text = open(page, encoding="utf-8").read()
    assert "<script" not in text.lower()
    assert not re.search(r'(src|href)="(?!data:)', text), "every src/href must be inline (data: URI)"
    assert "http://" not in text and "https://" not in text
    metrics = json.load(open(f"{good}/metrics_coco.json"))["stats"]
    unity = json.load(open(f"{good}/metrics_unity.json"))["stats"]
    assert f"{metrics['AP']:.4f}" in text and f"{unity['mAP']:.4f}" in text
    assert text.count('class="run-row"') == 2 and "good-model" in text and "bad-model" in text
    uris = _data_uris(text)
    assert len(uris) == N_IMAGES
    doc = json.load(open(stats_json))
    assert text.count('class="dataset-row"') == 2 and 'id="data-gap"' in text
    gap = doc["gap"]["real test"]["box_size"]
    assert f"{gap['wasserstein']:.4f} / {gap['total_variation']:.4f}" in text
    for uri in uris:
        with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
            im.verify()


def test_gallery_counts_agree_with_the_metrics_matches(runs):
    _, test, good, _ = runs
    ds = open_dataset(test)
    samples = list(ds)
    preds = json.load(open(f"{good}/predictions.json"))
    result = evaluate(samples, preds, "coco", label_map=ds.label_map)
    g = draw_matches(samples[0], result.matches, preds, ds.label_map, score_thresh=0.5)
    per = result.matches.for_image(int(samples[0].image_id), 0.5)
    assert g.tp == sum(d["status"] == "tp" and d["score"] >= 0.5 for d in per["detections"])
    assert g.fp == sum(d["status"] == "fp" and d["score"] >= 0.5 for d in per["detections"])
    assert g.tp + g.miss == sum(x["status"] != "ignored" for x in per["ground_truth"])
    assert g.tp > 0 and g.fp >= 1 and g.miss >= 0  # fake_predictions adds one false positive per image
    pixels = np.asarray(Image.open(io.BytesIO(g.png)).convert("RGB")).reshape(-1, 3)
    present = {tuple(p) for p in np.unique(pixels, axis=0)}
    assert COLORS["tp"] in present and COLORS["fp"] in present
    assert (COLORS["miss"] in present) == (g.miss > 0)


def test_scalars_are_read_back_from_tensorboard_files(runs):
    _, _, good, _ = runs
    scalars = read_scalars(f"{good}/tb")
    steps, values = scalars["train/loss"]
    assert steps.tolist() == [1, 2, 3, 4, 5]
    assert values[0] == pytest.approx(2.0 + 0.9)
    run = load_run(good)
    assert run.name == "good-model" and "epoch/loss" in run.scalars and run.result is not None


def test_run_without_run_json_needs_test_data_for_the_gallery(runs, tmp_path):
    _, test, _, _ = runs
    plain = make_run(str(tmp_path / "plain"), test, keep=0.7, seed=2, with_run_json=False)
    run = load_run(plain)
    assert run.result is None and any("--test-data" in n for n in run.notes)
    assert load_run(plain, test_data=test).result is not None
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        load_run(str(tmp_path))


def test_cli_report(runs, tmp_path):
    _, test, good, bad = runs
    out = tmp_path / "r.html"
    res = CliRunner().invoke(main, ["report", good, bad, "--out", str(out), "--name", "A", "--name", "B",
                                    "--gallery-images", "1", "--test-data", test])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert 'data-run="A"' in text and 'data-run="B"' in text and text.count('class="gallery-image"') == 2
    res = CliRunner().invoke(main, ["report", str(tmp_path), "--out", str(tmp_path / "x.html")])
    assert res.exit_code != 0 and "not a run folder" in res.output


def test_chromium_harness_sees_errors(tmp_path):
    """The harness itself: a page with a console error, an exception and a missing image is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
                   '<script>console.error("boom"); missingFunction();</script><img src="nope.png"></body></html>')
    load = load_page(bad.as_uri(), str(tmp_path))
    text = "\n".join(load.errors)
    assert "boom" in text and "missingFunction" in text and "nope.png" in text


def test_report_in_headless_chromium(page, tmp_path):
    url = "file://" + page
    load = load_page(url, str(tmp_path), expressions={
        "images": "document.images.length",
        "decoded": "Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length",
        "rows": "Array.from(document.querySelectorAll('#metrics tr.run-row')).map(r => r.dataset.run)",
        "gallery": "document.querySelectorAll('img.gallery-image').length",
        "title": "document.title",
        "width": "document.documentElement.scrollWidth",
    })
    assert load.errors == [], load.errors
    assert all(u.startswith(("file:", "data:")) for u in load.requests), load.requests
    v = load.values
    assert v["images"] == N_IMAGES and v["decoded"] == N_IMAGES
    assert v["rows"] == ["good-model", "bad-model"] and v["gallery"] == 4 and v["title"] == "Report under test"
    dom = dump_dom(url, str(tmp_path))
    assert "good-model" in dom and "COCO protocol" in dom and dom.count('class="gallery-image"') == 4
    shot = screenshot(url, str(tmp_path / "report.png"), str(tmp_path))
    with Image.open(shot) as im:
        assert im.size == (1280, 2400)
        gray = np.asarray(im.convert("L"))
        assert gray.std() > 10  # not a blank page
        assert (gray < 128).mean() > 0.01  # text and plots drawn
    if os.environ.get("SYNTHGAP_REPORT_SCREENSHOT"):  # keep it for a human to look at
        shutil.copy(shot, os.environ["SYNTHGAP_REPORT_SCREENSHOT"])


HOSTILE = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">$\\alpha_{1}$ & "q"'


def test_hostile_names_and_stats_values_render_as_text_in_chromium(runs, stats_json, tmp_path):
    """issue 14 items 11-12: every value from a run name or a stats.json reaches the page escaped, and a
    name with $ is drawn literally in the figures (no mathtext error, no math)."""
    root, _, good, bad = runs
    doc = json.load(open(stats_json))
    name0 = next(iter(doc["datasets"]))
    doc["datasets"][name0]["images"] = HOSTILE  # the field of the reproduction
    for d in doc["datasets"].values():  # a class named with markup and $: drawn in the class-count plot
        d["class_counts"]["<b id='bold'>$\\nope{1}$</b>"] = d["class_counts"].pop(next(iter(d["class_counts"])))
    doc["datasets"]["$x$ " + HOSTILE] = doc["datasets"].pop(name0)
    doc["reference"] = "$x$ " + HOSTILE
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps(doc))
    out = str(tmp_path / "hostile.html")
    build_report([good, bad], out, names=[HOSTILE, "$5 and $6"], title=HOSTILE, gallery_images=1, stats=str(stats))
    text = open(out).read()
    assert "<script" not in text and "onerror=" not in text.replace("onerror=&quot;", "")
    load = load_page("file://" + out, str(tmp_path), expressions={
        "pwned": "window.pwned === undefined ? 0 : window.pwned",
        "scripts": "document.scripts.length",
        "bold": "document.getElementById('bold') === null",
        "rows": "Array.from(document.querySelectorAll('#metrics tr.run-row')).map(r => r.dataset.run)",
        "title": "document.title",
        "body": "document.body.innerText.includes(" + json.dumps(HOSTILE) + ")",
    })
    assert load.errors == [], load.errors
    v = load.values
    assert v["pwned"] == 0 and v["scripts"] == 0 and v["bold"] is True
    assert v["rows"] == [HOSTILE, "$5 and $6"] and v["title"] == HOSTILE and v["body"] is True


def test_dollar_names_are_drawn_literally_not_as_mathtext():
    """issue 14 item 12: "$\\nope{1}$" crashed matplotlib's mathtext parser; "$5 and $6" rendered as math."""
    import matplotlib

    from synthgap.stats import plots

    s = {"name": "run $5 and $6", "objects": 3, "class_counts": {"$\\nope{1}$": 2, "x": 1}}
    png = plots.class_counts_png([s])
    assert png.startswith(b"\x89PNG")
    assert matplotlib.rcParams["text.parse_math"] is False and matplotlib.rcParams["text.usetex"] is False
