"""metrics/inputs.py: ids of any size, detections streamed from a file, records named in every error."""

from __future__ import annotations

import ast
import json
import pathlib
import uuid

import numpy as np
import pytest

from synthgap.data import DatasetError, Sample
from synthgap.metrics import detections_from_json, detections_from_records, evaluate, load_ground_truth
from synthgap.metrics.coco import group_rank

from tests.helpers.oracle import cocoeval

BIG = [uuid.UUID(int=(7 << 120) + i).int for i in range(3)]  # datasetinsights writes uuid.UUID(...).int ids
U64 = [2 ** 63 + 5, 2 ** 64 - 1, 2 ** 63]  # between int64 and 128-bit: numpy's uint64 range


def case(image_ids, cat_ids, ann_ids=None):
    """A small GT + detections pair, with the given image / category / annotation ids."""
    ann_ids = ann_ids or [11, 12, 13, 14]
    i1, i2, i3 = image_ids
    c1, c2 = cat_ids
    gt = {"images": [{"id": i, "width": 100, "height": 80} for i in image_ids],
          "categories": [{"id": c1, "name": "cereal"}, {"id": c2, "name": "soup"}],
          "annotations": [
              {"id": ann_ids[0], "image_id": i1, "category_id": c1, "bbox": [10, 10, 30, 30]},
              {"id": ann_ids[1], "image_id": i1, "category_id": c2, "bbox": [50, 10, 20, 40]},
              {"id": ann_ids[2], "image_id": i2, "category_id": c1, "bbox": [0, 0, 60, 50]},
              {"id": ann_ids[3], "image_id": i3, "category_id": c2, "bbox": [5, 5, 90, 70], "iscrowd": 1}]}
    dets = [{"image_id": i1, "category_id": c1, "bbox": [11, 10, 30, 29], "score": 0.9},
            {"image_id": i1, "category_id": c2, "bbox": [48, 12, 20, 40], "score": 0.7},
            {"image_id": i1, "category_id": c1, "bbox": [60, 60, 10, 10], "score": 0.6},
            {"image_id": i2, "category_id": c1, "bbox": [5, 0, 50, 45], "score": 0.8},
            {"image_id": i3, "category_id": c2, "bbox": [20, 20, 10, 10], "score": 0.95}]
    return gt, dets


@pytest.mark.parametrize("ids", [BIG, U64], ids=["128-bit", "uint64"])
def test_ids_of_any_size_score_as_small_ids_and_come_back_unchanged(ids):
    small_gt, small_dets = case([1, 2, 3], [1, 2])
    E = cocoeval(small_gt, small_dets)
    gt, dets = case(ids, [ids[1], ids[0]], ann_ids=[ids[0] + 1, ids[0] + 2, ids[0] + 3, ids[0] + 4])
    for protocol in ("coco", "unity"):
        want = evaluate(small_gt, small_dets, protocol=protocol)
        got = evaluate(gt, dets, protocol=protocol)
        assert got.stats == want.stats
        assert set(got.per_class) == {ids[1], ids[0]}  # written back unchanged (Python ints)
        assert got.per_class[ids[1]]["name"] == "cereal"
        assert json.loads(json.dumps(got.to_dict()))["per_class"].keys() == {str(ids[0]), str(ids[1])}
    np.testing.assert_allclose(list(evaluate(gt, dets).stats.values()), E.stats, atol=1e-12, rtol=0)
    m = evaluate(gt, dets).matches
    assert set(m.det_image_id.tolist()) == set(ids) and set(m.gt_id.tolist()) == {ids[0] + k for k in (1, 2, 3, 4)}


def test_samples_with_128_bit_ids_equal_the_coco_dict():
    gt, dets = case(BIG, [BIG[1], BIG[0]])
    by_image = {img["id"]: [] for img in gt["images"]}
    for a in gt["annotations"]:
        by_image[a["image_id"]].append(a)
    samples = [Sample(image=f"{i}.png", width=100, height=80, image_id=i,
                      boxes=[a["bbox"] for a in anns], labels=[a["category_id"] for a in anns],
                      iscrowd=[a.get("iscrowd", 0) for a in anns]) for i, anns in by_image.items()]
    label_map = {BIG[1]: "cereal", BIG[0]: "soup"}
    assert evaluate(samples, dets, label_map=label_map).stats == evaluate(gt, dets).stats


def test_unknown_128_bit_image_id_names_the_record_and_the_exact_id():
    gt, dets = case(BIG, [1, 2])
    dets[3]["image_id"] = BIG[0] + 99
    with pytest.raises(DatasetError) as e:
        evaluate(gt, dets)
    assert e.value.record == "detections[3]" and e.value.field == "image_id" and str(BIG[0] + 99) in str(e.value)


@pytest.mark.parametrize("field, value", [("bbox", [10 ** 400, 0, 1, 1]), ("score", 10 ** 400)])
def test_a_number_beyond_float64_is_an_error_naming_the_record(field, value):
    gt, dets = case([1, 2, 3], [1, 2])
    dets[2][field] = value
    with pytest.raises(DatasetError) as e:
        evaluate(gt, dets)
    assert e.value.record == "detections[2]" and e.value.field == field and "too large" in str(e.value)


def test_annotation_area_beyond_float64_names_the_annotation():
    gt, _ = case([1, 2, 3], [1, 2])
    gt["annotations"][1]["area"] = 10 ** 400
    with pytest.raises(DatasetError) as e:
        load_ground_truth(gt)
    assert e.value.record == "annotations[1]" and e.value.field == "area"


# ---------------------------------------------------------------------------------------------------------
# streamed detections

def test_detections_from_json_equal_the_list_across_batches(tmp_path):
    gt_dict, dets = case(BIG, [1, 2])
    gt = load_ground_truth(gt_dict)
    path = tmp_path / "pred.json"
    path.write_text(json.dumps(dets * 7, indent=1))
    want = detections_from_records(dets * 7, gt)
    for batch in (1, 2, 3, 35, 1000):
        got = detections_from_json(str(path), gt, batch=batch)
        for name in ("image", "category", "boxes", "scores"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))


def test_detections_from_json_over_http_grow_without_a_known_size(http_folder):
    """A results file whose size is not known up front (http) is read into columns that grow; same arrays.
    Served by a real HTTP server on 127.0.0.1."""
    folder, url, _ = http_folder
    gt_dict, dets = case(BIG, [1, 2])
    gt = load_ground_truth(gt_dict)
    (folder / "pred.json").write_text(json.dumps(dets * 7))
    want = detections_from_records(dets * 7, gt)
    for batch in (1, 4, 1000):
        got = detections_from_json(f"{url}/pred.json", gt, batch=batch)
        for name in ("image", "category", "boxes", "scores"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))


def test_streamed_error_names_the_file_and_the_record_past_the_first_batch(tmp_path):
    gt_dict, dets = case([1, 2, 3], [1, 2])
    gt = load_ground_truth(gt_dict)
    records = dets * 4
    records[13] = dict(records[13], bbox=[1, 2, -3, 4])
    path = tmp_path / "pred.json"
    path.write_text(json.dumps(records))
    with pytest.raises(DatasetError) as e:
        detections_from_json(str(path), gt, batch=4)
    assert e.value.file == str(path) and e.value.record == "detections[13]" and e.value.field == "bbox"


def test_detections_from_json_reads_a_coco_dict_and_names_malformed_json(tmp_path):
    gt_dict, dets = case([1, 2, 3], [1, 2])
    gt = load_ground_truth(gt_dict)
    path = tmp_path / "results_in_coco.json"
    path.write_text(json.dumps({"images": [], "annotations": dets}))
    assert len(detections_from_json(str(path), gt)) == 5
    path.write_text(json.dumps(dets)[:-30] + "x" + json.dumps(dets)[-29:])
    with pytest.raises(DatasetError, match=r"malformed JSON.*item 4, line 1") as e:
        detections_from_json(str(path), gt)
    assert e.value.file == str(path)


def test_empty_results_list(tmp_path):
    gt = load_ground_truth(case([1, 2, 3], [1, 2])[0])
    path = tmp_path / "pred.json"
    path.write_text("[]")
    assert len(detections_from_json(str(path), gt)) == 0


# ---------------------------------------------------------------------------------------------------------
# module boundaries

def test_group_rank_numbers_elements_within_runs():
    assert group_rank(np.array([7, 7, 3, 3, 3, 7])).tolist() == [0, 1, 0, 1, 2, 0]
    assert group_rank(np.zeros(0, np.int64)).tolist() == []


def test_no_private_name_crosses_a_metrics_module():
    """issue 13: a module's _private names stay in it (`group_rank` is public in metrics/coco.py)."""
    root = pathlib.Path(__file__).parents[2] / "src" / "synthgap" / "metrics"
    crossing = []
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("synthgap"):
                crossing += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert crossing == []
