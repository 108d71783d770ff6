"""synthgap.stats and `synthgap stats`: exact numbers on hand-made samples, then real generated datasets."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from synthgap.cli import main
from synthgap.data import Sample
from synthgap.stats import (BINS, HEATMAP_BINS, compute_stats, dataset_stats, gap_summary, total_variation,
                            wasserstein_binned, write_stats)

LABELS = {1: "cat", 2: "dog", 3: "cow"}


def _sample(boxes, labels, image_id=0, width=100, height=50, **kw) -> Sample:
    return Sample(image=f"img{image_id}.png", width=width, height=height, boxes=np.array(boxes, float),
                  labels=np.array(labels), image_id=image_id, **kw)


def test_counts_sizes_aspect_and_centres_are_exact():
    samples = [_sample([[0, 0, 50, 25], [50, 25, 10, 20]], [1, 2], 0),   # sizes sqrt(1250/5000)=0.5, sqrt(200/5000)=0.2
               _sample([], [], 1),
               _sample([[90, 0, 10, 5]], [1], 2)]                          # size sqrt(50/5000)=0.1
    d = dataset_stats(samples, LABELS, "toy").to_dict()
    assert (d["images"], d["objects"]) == (3, 3)
    assert d["class_counts"] == {"cat": 2, "dog": 1, "cow": 0}
    opi = d["histograms"]["objects_per_image"]
    assert opi["counts"][:3] == [1, 1, 1] and sum(opi["counts"]) == 3 and opi["mean"] == pytest.approx(1.0)
    size = d["histograms"]["box_size"]
    assert size["mean"] == pytest.approx((0.5 + 0.2 + 0.1) / 3)
    assert (size["min"], size["max"]) == (pytest.approx(0.1), pytest.approx(0.5))
    edges = np.array(size["edges"])
    for value in (0.5, 0.2, 0.1):  # each value lands in the bin that contains it
        assert size["counts"][int(np.searchsorted(edges, value + 1e-12) - 1)] >= 1
    ar = d["histograms"]["log2_aspect_ratio"]
    assert sorted([ar["min"], ar["max"]]) == [pytest.approx(math.log2(10 / 20)), pytest.approx(1.0)]
    heat = np.array(d["center_heatmap"]["counts"])
    assert heat.shape == (HEATMAP_BINS, HEATMAP_BINS) and heat.sum() == 3
    # centre of box 0 = (25, 12.5) -> (0.25, 0.25) of the image -> row 6, col 6 with 24 bins
    assert heat[int(0.25 * HEATMAP_BINS), int(0.25 * HEATMAP_BINS)] == 1
    # box 2 centre (95, 2.5) -> (0.95, 0.05) -> column int(0.95 * 24) = 22, row int(0.05 * 24) = 1
    assert heat[1, 22] == 1
    assert d["visible_pixels_source"] is None and d["histograms"]["visible_size"]["count"] == 0


def test_visible_pixels_from_metadata_and_areas():
    with_meta = _sample([[0, 0, 10, 10]], [1], metadata={"visible_pixels": [50], "full_pixels": [100]})
    with_areas = _sample([[0, 0, 10, 10]], [1], 1, areas=[80.0])
    d = dataset_stats([with_meta], LABELS, "m", root=None).to_dict()
    assert d["histograms"]["visible_fraction"]["mean"] == pytest.approx(0.5)
    assert d["histograms"]["visible_size"]["mean"] == pytest.approx(math.sqrt(50 / 5000))
    d2 = dataset_stats([with_areas], LABELS, "a").to_dict()
    assert d2["visible_pixels_source"] == "annotated areas"
    assert d2["histograms"]["visible_size"]["mean"] == pytest.approx(math.sqrt(80 / 5000))
    assert d2["histograms"]["visible_fraction"]["count"] == 0  # no unoccluded count: no fraction


def test_out_of_range_values_are_clipped_into_end_bins():
    d = dataset_stats([_sample([[0, 0, 100, 1]], [1])], LABELS, "x").to_dict()  # log2(100) > 4
    ar = d["histograms"]["log2_aspect_ratio"]
    assert ar["counts"][-1] == 1 and ar["max"] == pytest.approx(math.log2(100))


def test_distances():
    edges = np.array([0.0, 1.0, 2.0, 3.0])
    assert wasserstein_binned([1, 0, 0], [0, 0, 1], edges) == pytest.approx(2.0)  # mass moved 2 bins
    assert wasserstein_binned([2, 2, 0], [1, 1, 0], edges) == pytest.approx(0.0)
    assert total_variation([1, 0], [0, 1]) == pytest.approx(1.0)
    assert total_variation([1, 1], [2, 2]) == pytest.approx(0.0)
    assert total_variation([0, 0], [1, 1]) is None
    a = dataset_stats([_sample([[0, 0, 10, 10]], [1])], LABELS, "a").to_dict()
    b = dataset_stats([_sample([[0, 0, 10, 10]], [2])], LABELS, "b").to_dict()
    gap = gap_summary(a, b)
    assert gap["box_size"]["wasserstein"] == pytest.approx(0.0)
    assert gap["class_distribution"]["total_variation"] == pytest.approx(1.0)
    assert gap["class_distribution"]["classes_only_in_reference"] == ["cat"]
    assert gap["class_distribution"]["classes_only_in_other"] == ["dog"]


@pytest.fixture(scope="module")
def tiny_datasets(tmp_path_factory):
    from synthgap.generate import generate

    root = tmp_path_factory.mktemp("stats")
    syn, real = str(root / "synthetic"), str(root / "real")
    generate(syn, 3, format="solo", seed=0, width=96, height=72, progress=False)
    generate(real, 3, format="coco", seed=1, width=96, height=72, style="target", progress=False)
    return syn, real


def test_generated_datasets_stream_and_use_generator_visible_pixels(tiny_datasets):
    from synthgap.data import open_dataset

    syn, real = tiny_datasets
    s = compute_stats(syn)
    ds = open_dataset(syn)
    assert s["images"] == len(ds) == 3
    assert s["objects"] == sum(len(x) for x in ds)
    side = [json.loads(line) for p in sorted((__import__("pathlib").Path(syn) / "generator").glob("frames.*.jsonl"))
            for line in p.read_text().splitlines()]
    assert s["visible_pixels_source"] == "generator"
    assert s["histograms"]["visible_fraction"]["count"] == sum(len(r["visible_pixels"]) for r in side)
    expected = np.mean([v / f for r in side for v, f in zip(r["visible_pixels"], r["full_pixels"])])
    assert s["histograms"]["visible_fraction"]["mean"] == pytest.approx(expected)


def test_cli_compare_writes_json_and_pngs(tiny_datasets, tmp_path):
    syn, real = tiny_datasets
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["stats", syn, "--compare", real, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "gap synthetic -> real" in result.output
    doc = json.loads((out / "stats.json").read_text())
    assert list(doc["datasets"]) == ["synthetic", "real"] and doc["reference"] == "synthetic"
    gap = doc["gap"]["real"]
    for key in BINS:
        assert key in gap
    assert 0.0 <= gap["box_size"]["total_variation"] <= 1.0
    assert gap["objects_per_image"]["wasserstein"] >= 0.0
    for name in ["class_counts.png", "center_heatmap.png", *(f"{k}.png" for k in BINS)]:
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.width > 200 and im.height > 100
            assert len(np.unique(np.asarray(im.convert("L")))) > 2  # something was drawn


def test_same_dataset_twice_has_zero_gap(tiny_datasets, tmp_path):
    syn, _ = tiny_datasets
    doc = write_stats([syn, syn], str(tmp_path / "o"), plots=False)
    assert list(doc["datasets"]) == ["synthetic", "synthetic-2"]
    gap = doc["gap"]["synthetic-2"]
    assert all(v["wasserstein"] in (0.0, None) for k, v in gap.items() if k in BINS)
    assert gap["class_distribution"]["total_variation"] == 0.0
    assert not (tmp_path / "o" / "box_size.png").exists()


def test_cli_bad_dataset_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["stats", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0
    assert "no reader recognises" in result.output


def test_unity_solo_rendered_object_info_gives_visible_pixels(solo_fixture):
    """Real Unity SOLO output: visiblePixels of the RenderedObjectInfo metric, matched by instance id."""
    from synthgap.data import open_dataset

    ds = open_dataset(str(solo_fixture))
    expected = []
    for s in ds:
        frame = json.loads((solo_fixture / s.metadata["file"]).read_text())
        metric = next(m for m in frame["metrics"] if m["@type"].endswith("RenderedObjectInfoMetric"))
        pixels = {v["instanceId"]: v["visiblePixels"] for v in metric["values"]}
        expected += [math.sqrt(pixels[i] / (s.width * s.height)) for i in s.instance_ids]
    d = compute_stats(str(solo_fixture))
    assert d["visible_pixels_source"] == "SOLO RenderedObjectInfo"
    h = d["histograms"]["visible_size"]
    assert h["count"] == len(expected) == d["objects"] > 0
    assert h["mean"] == pytest.approx(np.mean(expected)) and h["max"] == pytest.approx(max(expected))


def test_legacy_perception_rendered_object_info_gives_visible_pixels(legacy_fixture):
    """issue 16 item 5: real legacy Perception output (UnityGroceries-SyntheticSample's format) carries
    visible pixels per capture in metrics_*.json ("rendered object info"), matched by capture and instance id."""
    from synthgap.data import open_dataset

    ds = open_dataset(str(legacy_fixture))
    definitions = json.loads((legacy_fixture / "metric_definitions.json").read_text())["metric_definitions"]
    info_id = next(d["id"] for d in definitions if d["name"] == "rendered object info")
    rows = [m for m in json.loads((legacy_fixture / "metrics_000.json").read_text())["metrics"]
            if m["metric_definition"] == info_id]
    expected = []
    for s in ds:
        row = next(m for m in rows if m["capture_id"] == s.metadata["capture_id"])
        pixels = {v["instance_id"]: v["visible_pixels"] for v in row["values"]}
        expected += [math.sqrt(pixels[i] / (s.width * s.height)) for i in s.instance_ids]
    d = compute_stats(str(legacy_fixture))
    assert d["visible_pixels_source"] == "Perception rendered object info"
    h = d["histograms"]["visible_size"]
    assert h["count"] == len(expected) == d["objects"] > 0
    assert h["mean"] == pytest.approx(np.mean(expected)) and h["max"] == pytest.approx(max(expected))


def test_cli_leakage_checks_the_compared_set_against_the_reference(tiny_datasets, tmp_path):
    """The same images on both sides are near-copies (distance 0); another generator seed's are not."""
    syn, real = tiny_datasets
    result = CliRunner().invoke(main, ["stats", real, "--compare", real, "--compare", syn, "--out", str(tmp_path),
                                       "--no-plots", "--leakage"])
    assert result.exit_code == 0, result.output
    assert ("leakage real -> real-2: 3 of 3 test images have a near-copy in real (pHash Hamming distance <= 10 of "
            "64 bits)") in result.output
    assert "leakage real -> synthetic: 0 of 3 test images have a near-copy in real" in result.output
    doc = json.loads((tmp_path / "stats.json").read_text())
    (same,) = doc["gap"]["real-2"]["leakage"]
    assert same["near_copies"] == 3 and all(p["distance"] == 0 and p["test"] == p["nearest"] for p in same["pairs"])
    result = CliRunner().invoke(main, ["stats", real, "--out", str(tmp_path), "--leakage"])
    assert result.exit_code == 2 and "--leakage needs --compare" in result.output
