"""`synthgap convert --to fiftyone --predictions`: FiftyOne's COCODetectionDataset layout (data/ + labels.json) with
the predictions as a second labels file, validated with pycocotools (FiftyOne itself needs MongoDB: not here)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from synthgap.generate.shapes import make_coco
from synthgap.cli import main
from synthgap.data import DatasetError, open_dataset
from synthgap.data.fiftyone import LOADER, export_run

pycocotools = pytest.importorskip("pycocotools.coco", reason="pycocotools is in the test extra")
COCOeval = pytest.importorskip("pycocotools.cocoeval").COCOeval


def _detections(ds):
    """Each ground-truth box shifted by 2 px, plus one detection of a class the dataset lacks."""
    dets = [{"image_id": s.image_id, "category_id": int(label), "bbox": [x + 2, y + 2, w, h], "score": 0.9}
            for s in ds for (x, y, w, h), label in zip(s.boxes.tolist(), s.labels.tolist())]
    dets.append({"image_id": ds[0].image_id, "category_id": 9, "bbox": [1, 1, 5, 5], "score": 0.3})
    return dets


def test_export_loads_in_pycocotools_and_scores_like_the_originals(tmp_path):
    src = make_coco(tmp_path / "test", 4, size=(96, 80), seed=7, max_objects=3)
    ds = open_dataset(src)
    dets = _detections(ds)
    (tmp_path / "predictions.json").write_text(json.dumps(dets))
    dst = tmp_path / "export"
    result = CliRunner().invoke(main, ["convert", src, str(dst), "--to", "fiftyone", "--predictions",
                                       str(tmp_path / "predictions.json")])
    assert result.exit_code == 0, result.output
    assert f"{len(dets)} detections" in result.output

    gt = pycocotools.COCO(str(dst / "labels.json"))
    pred = pycocotools.COCO(str(dst / "predictions.json"))
    assert sorted(gt.getImgIds()) == sorted(pred.getImgIds()) == sorted(s.image_id for s in ds)
    for image in gt.dataset["images"]:  # file names are relative to data/, where the images were copied
        assert (dst / "data" / image["file_name"]).is_file() and "/" not in image["file_name"]
    assert {c["id"]: c["name"] for c in pred.dataset["categories"]} == {1: "red", 2: "green", 3: "blue",
                                                                       9: "class_9"}
    assert [a["score"] for a in pred.dataset["annotations"]] == [d["score"] for d in dets]

    # the export scores exactly as the original dataset + results list do (pycocotools as the oracle)
    def stats(gt_coco, results):
        e = COCOeval(gt_coco, gt_coco.loadRes(results), "bbox")
        e.evaluate(), e.accumulate(), e.summarize()
        return list(e.stats)

    original = pycocotools.COCO(str(src) + "/annotations.json")
    exported_results = [{k: a[k] for k in ("image_id", "category_id", "bbox", "score")}
                        for a in pred.dataset["annotations"]]
    assert stats(gt, exported_results) == stats(original, dets)


def test_bad_predictions_name_file_record_and_field(tmp_path):
    src = make_coco(tmp_path / "test", 2, size=(64, 48))
    ds = open_dataset(src)
    good = {"image_id": ds[0].image_id, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}
    cases = [({**good, "image_id": 999}, "image_id"), ({**good, "bbox": [1, 2, 3]}, "bbox"),
             ({**good, "score": float("nan")}, "score"), ({k: v for k, v in good.items() if k != "score"}, "score")]
    for bad, field in cases:
        with pytest.raises(DatasetError) as err:
            export_run(ds, ds.label_map, [good, bad], str(tmp_path / "out"), source="run/predictions.json")
        assert (err.value.file, err.value.record, err.value.field) == ("run/predictions.json", "detection 1", field)
    result = CliRunner().invoke(main, ["convert", src, str(tmp_path / "o"), "--to", "fiftyone"])
    assert result.exit_code == 2 and "--predictions" in result.output


def test_loader_snippet_is_in_the_docs():
    """docs/training.md shows the loader exactly as the module defines it (FiftyOne is not installed here)."""
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "training.md").read_text()
    assert LOADER.strip() in docs
    compile(LOADER, "LOADER", "exec")


def test_a_failed_export_leaves_the_destination_as_it_was(tmp_path):
    """Issue 23: a bad detection (checked after the images were copied) left DST half-written: data/ full of
    images, no labels.json. The export is written beside DST and swapped in only when complete."""
    src = make_coco(tmp_path / "test", 3, size=(64, 48), seed=2)
    ds = open_dataset(src)
    good = _detections(ds)
    bad = good + [{"image_id": 999, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}]
    dst = tmp_path / "export"
    with pytest.raises(DatasetError, match="image_id 999"):
        export_run(ds, ds.label_map, bad, str(dst), source="p.json")
    assert not dst.exists() and list(tmp_path.iterdir()) == [tmp_path / "test"]  # no temporary folder left
    export_run(ds, ds.label_map, good, str(dst), source="p.json")
    before = {p.relative_to(dst): p.read_bytes() for p in dst.rglob("*") if p.is_file()}
    assert len(before) == 3 + 2
    with pytest.raises(DatasetError, match="image_id 999"):
        export_run(ds, ds.label_map, bad, str(dst), source="p.json")
    assert {p.relative_to(dst): p.read_bytes() for p in dst.rglob("*") if p.is_file()} == before
    export_run(list(ds)[:1], ds.label_map, [good[0]], str(dst), source="p.json")  # a new export replaces it all
    assert len(list((dst / "data").iterdir())) == 1
    assert len(json.loads((dst / "predictions.json").read_text())["annotations"]) == 1
