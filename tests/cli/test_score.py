"""`synthgap score` on real files: COCO JSON ground truth read by the COCO reader, a results list."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from synthgap.cli import main

from tests.helpers.oracle import cocoeval


def run(*args):
    return CliRunner().invoke(main, ["score", *[str(a) for a in args]])


GT = {
    "images": [{"id": i, "file_name": f"im{i}.png", "width": 100, "height": 80} for i in (1, 2, 3)],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "area": 900.0, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 10, 20, 40], "area": 800.0, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 60, 50], "area": 2000.0, "iscrowd": 0},
        {"id": 4, "image_id": 3, "category_id": 2, "bbox": [5, 5, 90, 70], "area": 6300.0, "iscrowd": 1},
    ],
    "categories": [{"id": 1, "name": "cereal"}, {"id": 2, "name": "soup"}],
}
PRED = [
    {"image_id": 1, "category_id": 1, "bbox": [11, 10, 30, 29], "score": 0.9},
    {"image_id": 1, "category_id": 2, "bbox": [48, 12, 20, 40], "score": 0.7},
    {"image_id": 1, "category_id": 1, "bbox": [60, 60, 10, 10], "score": 0.6},
    {"image_id": 2, "category_id": 1, "bbox": [5, 0, 50, 45], "score": 0.8},
    {"image_id": 3, "category_id": 2, "bbox": [20, 20, 10, 10], "score": 0.95},
]


@pytest.fixture
def files(tmp_path):
    gt, pred = tmp_path / "gt.json", tmp_path / "pred.json"
    gt.write_text(json.dumps(GT))
    pred.write_text(json.dumps(PRED))
    return gt, pred


def test_score_coco_prints_table_and_writes_json_equal_to_pycocotools(files, tmp_path):
    gt, pred = files
    out = tmp_path / "m" / "metrics.json"
    res = run("--gt", gt, "--pred", pred, "--out", out)
    assert res.exit_code == 0, res.output
    assert "AP50" in res.output and "cereal" in res.output and "soup" in res.output
    data = json.loads(out.read_text())
    E = cocoeval(GT, PRED)
    np.testing.assert_allclose(list(data["coco"]["stats"].values()), E.stats, atol=1e-12, rtol=0)
    assert "unity" not in data


def test_score_both_protocols_and_custom_thresholds(files, tmp_path):
    gt, pred = files
    out = tmp_path / "metrics.json"
    res = run("--gt", gt, "--pred", pred, "--protocol", "both", "--out", out, "--iou-thresholds", "0.5,0.75",
              "--max-dets", "1,5,100")
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert set(data) >= {"coco", "unity"} and set(data["unity"]["stats"]) == {"mAP", "mAPIOU50", "mAR"}
    E = cocoeval(GT, PRED, iou_thresholds=[0.5, 0.75], max_dets=[1, 5, 100])
    np.testing.assert_allclose(list(data["coco"]["stats"].values()), E.stats, atol=1e-12, rtol=0)
    assert data["coco"]["params"]["iou_thresholds"] == [0.5, 0.75]


def test_bad_detection_is_a_click_error_naming_file_record_field(files, tmp_path):
    gt, _ = files
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(PRED[:2] + [dict(PRED[2], image_id=42)]))
    res = run("--gt", gt, "--pred", bad)
    assert res.exit_code != 0
    assert "bad.json" in res.output and "detections[2]" in res.output and "image_id" in res.output


def test_bad_inputs_are_clear_errors(files, tmp_path):
    gt, pred = files
    res = run("--gt", tmp_path / "missing.json", "--pred", pred)
    assert res.exit_code != 0 and "missing.json" in res.output
    res = run("--gt", gt, "--pred", pred, "--max-dets", "1,10")
    assert res.exit_code != 0 and "max_dets" in res.output
    res = run("--gt", gt, "--pred", pred, "--iou-thresholds", "a:b")
    assert res.exit_code != 0 and "--iou-thresholds" in res.output


def test_score_reads_a_unity_solo_dataset_as_ground_truth(solo_fixture, tmp_path):
    # Detections equal to the SOLO ground truth (one dropped): every class found except one box.
    from synthgap.data import open_dataset

    ds = open_dataset(str(solo_fixture))
    pred = [{"image_id": s.image_id, "category_id": int(c), "bbox": b.tolist(), "score": 0.9}
            for s in ds for b, c in zip(s.boxes, s.labels)]
    dropped = pred.pop()
    path = tmp_path / "pred.json"
    path.write_text(json.dumps(pred))
    out = tmp_path / "metrics.json"
    res = run("--gt", solo_fixture, "--pred", path, "--protocol", "both", "--out", out)
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    n_gt = sum(len(s) for s in ds)
    assert data["coco"]["per_class"][str(dropped["category_id"])]["AR100"] < 1.0
    full = [c for c, row in data["coco"]["per_class"].items() if row["num_gt"] and c != str(dropped["category_id"])]
    assert full and all(data["coco"]["per_class"][c]["AP"] == pytest.approx(1.0) for c in full)
    assert data["unity"]["stats"]["mAR"] < 1.0 and n_gt == len(pred) + 1


def test_score_reads_128_bit_ids_and_writes_them_back_unchanged(tmp_path):
    """datasetinsights' COCO converter writes uuid.UUID(...).int ids (issue 14 item 1)."""
    import uuid

    big = {i: uuid.UUID(int=(3 << 125) + i).int for i in (1, 2, 3)}
    gt = json.loads(json.dumps(GT))
    for img in gt["images"]:
        img["id"] = big[img["id"]]
    for a in gt["annotations"]:
        a["image_id"], a["id"] = big[a["image_id"]], big[a["id"] % 3 + 1] + a["id"]
    pred = [dict(d, image_id=big[d["image_id"]]) for d in PRED]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    out = tmp_path / "metrics.json"
    res = run("--gt", tmp_path / "gt.json", "--pred", tmp_path / "pred.json", "--out", out, "--protocol", "both")
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(list(json.loads(out.read_text())["coco"]["stats"].values()), cocoeval(GT, PRED).stats,
                               atol=1e-12, rtol=0)
    pred[4]["image_id"] = big[3] + 1  # not in the ground truth: named, with the exact id
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    res = run("--gt", tmp_path / "gt.json", "--pred", tmp_path / "pred.json")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "detections[4]" in res.output and str(big[3] + 1) in res.output and "pred.json" in res.output


def test_score_out_on_a_full_disk_is_one_line(files, tmp_path):
    from tests.helpers.disks import fill, tmpfs

    gt, pred = files
    with tmpfs(tmp_path / "small", size="64k") as disk:
        fill(disk)
        res = run("--gt", gt, "--pred", pred, "--out", f"{disk}/metrics.json")
    assert res.exit_code == 1 and res.exception is None or isinstance(res.exception, SystemExit)
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("Error: cannot write") and "No space left on device" in last


def test_score_errors_prints_and_writes_the_tide_breakdown_equal_to_tidecv(files, tmp_path):
    from tests.metrics.test_tide import tide_oracle

    gt, pred = files
    out = tmp_path / "metrics.json"
    res = run("--gt", gt, "--pred", pred, "--errors", "--out", out, "--protocol", "both")
    assert res.exit_code == 0, res.output
    assert "TIDE error breakdown" in res.output and "background" in res.output
    data = json.loads(out.read_text())
    errors = data["coco"]["errors"]
    assert "errors" not in data["unity"]  # computed once, with the first protocol
    tide_run, main, special = tide_oracle(GT, PRED)
    assert errors["ap"] == pytest.approx(tide_run.ap / 100, abs=1e-12)
    assert errors["counts"]["bkg"] == {e.short_name: n for e, n in tide_run.count_errors().items()}["Bkg"]
    assert errors["special"]["false_pos"] == pytest.approx(special["FalsePos"] / 100, abs=1e-12)


def test_units_are_printed_and_undefined_metrics_are_json_null(tmp_path):
    """Issue 23: COCO stats (fractions) and TIDE's dAPs (x 100) shared a screen without saying so, and a ground
    truth without boxes wrote a bare NaN into --out (not JSON)."""
    gt = {"images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}], "annotations": [],
          "categories": [{"id": 1, "name": "a"}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    pred = [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 3], "score": 0.5}]
    (tmp_path / "p.json").write_text(json.dumps(pred))
    out = tmp_path / "m.json"
    res = run("--gt", tmp_path / "gt.json", "--pred", tmp_path / "p.json", "--protocol", "both", "--errors",
              "--out", out)
    assert res.exit_code == 0, res.output
    assert "[coco metrics as fractions 0-1; the TIDE breakdown after them in AP points, x 100]" in res.output
    assert "[unity metrics as fractions 0-1]" in res.output and "dAP in AP points" in res.output

    def no_constants(name):
        raise AssertionError(f"{name} is not JSON")

    data = json.loads(out.read_text(), parse_constant=no_constants)
    assert data["unity"]["stats"] == {"mAP": None, "mAPIOU50": None, "mAR": None}


def test_score_ci_prints_the_interval_beside_each_stat_and_writes_it_with_resamples_and_seed(files, tmp_path):
    """--ci: the percentile bootstrap of synthgap.metrics.bootstrap, the same numbers as the Python API."""
    from synthgap.metrics import bootstrap_intervals, evaluate

    gt, pred = files
    out = tmp_path / "metrics.json"
    res = run("--gt", gt, "--pred", pred, "--ci", "--ci-resamples", 300, "--ci-seed", 7, "--out", out,
              "--protocol", "both")
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    iv = data["coco"]["intervals"]
    assert iv["resamples"] == 300 and iv["seed"] == 7 and iv["images"] == 3 and iv["level"] == 0.95
    assert iv == json.loads(json.dumps(bootstrap_intervals(evaluate(GT, PRED), 300, seed=7).to_dict()))
    assert "intervals" not in data["unity"]
    lines = {line.split()[0]: line for line in res.output.splitlines() if line.startswith("  A")}
    for name, v in iv["stats"].items():  # e.g. "  AP50   1.0000  [1.0000, 1.0000]"; undefined stats: none
        assert (f"[{v['low']:.4f}, {v['high']:.4f}]" in lines[name]) if v else "[" not in lines[name]
    assert "95 % percentile bootstrap interval over the 3 test images (300 resamples, seed 7)" in res.output
    again = run("--gt", gt, "--pred", pred, "--ci", "--ci-resamples", 300, "--ci-seed", 7)
    assert again.exit_code == 0 and again.output.split("\n\n")[1] == res.output.split("\n\n")[1]


def test_score_ci_needs_the_coco_protocol_and_a_positive_resample_count(files):
    gt, pred = files
    res = run("--gt", gt, "--pred", pred, "--ci", "--protocol", "unity")
    assert res.exit_code == 2 and "--ci bootstraps the coco protocol" in res.output
    res = run("--gt", gt, "--pred", pred, "--ci", "--ci-resamples", 0)
    assert res.exit_code == 2 and "--ci-resamples" in res.output
