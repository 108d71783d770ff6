"""The one prediction path (synthgap.engine.predict): COCO records in the original image's pixels, the same
from the plain loop and from worker processes."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from synthgap.generate.shapes import LABEL_MAP, make_samples
from synthgap.config import ModelConfig
from synthgap.models import build_model
from synthgap.engine.predict import (ImageFiles, eval_dataset, original_sizes, outputs_to_coco, predict, predict_images,
                              predict_samples)

MODEL = ModelConfig(name="fasterrcnn_mobilenet_v3_large_320_fpn", min_size=96, max_size=128, box_score_thresh=0.0)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(MODEL, 4).eval()


def _same_records(a, b):
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x["image_id"] == y["image_id"] and x["category_id"] == y["category_id"]
        assert np.allclose(x["bbox"], y["bbox"], atol=0.05) and x["score"] == pytest.approx(y["score"], abs=1e-4)


def test_outputs_are_scaled_back_and_converted_to_xywh():
    out = [{"boxes": torch.tensor([[10.0, 20.0, 30.0, 60.0]]), "labels": torch.tensor([2]),
            "scores": torch.tensor([0.9])}, {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64),
                                              "scores": torch.zeros(0)}]
    records = outputs_to_coco(out, [7, 8], [(2.0, 0.5), (1.0, 1.0)])
    assert records == [{"image_id": 7, "category_id": 2, "bbox": [20.0, 10.0, 40.0, 20.0], "score": 0.9}]


def test_batched_prediction_matches_one_image_at_a_time(tmp_path, model):
    """Batched inference (batch 3, resized inputs) gives the same boxes as a per-image loop, in the
    original image's pixels."""
    samples = make_samples(tmp_path, 3, size=(64, 48), seed=4)
    ds = eval_dataset(samples, [128, 96])  # fed at 2x: predictions must come back in 64x48 pixels
    device = torch.device("cpu")
    batched = predict(model, ds, device, batch_size=3, original_sizes=original_sizes(samples), processes=1)
    single = predict(model, ds, device, batch_size=1, original_sizes=original_sizes(samples), processes=1)
    key = lambda d: (d["image_id"], -d["score"])  # noqa: E731
    _same_records(sorted(batched, key=key), sorted(single, key=key))
    boxes = np.array([d["bbox"] for d in batched])
    assert (boxes[:, 0] + boxes[:, 2] <= 64.01).all() and (boxes[:, 1] + boxes[:, 3] <= 48.01).all()


def test_worker_process_prediction_matches_the_main_process(tmp_path, model):
    """On the CPU with several processes, decode + model run in worker processes: same records, same
    order of images as the plain loop; the model's mode is restored."""
    samples = make_samples(tmp_path, 5, size=(64, 48), seed=5)
    device = torch.device("cpu")
    model.train()
    in_workers = predict_samples(model, samples, device, batch_size=2, image_size=[128, 96], processes=2)
    assert model.training
    model.eval()
    in_process = predict_samples(model, samples, device, batch_size=2, image_size=[128, 96], processes=1)
    assert not model.training
    assert [d["image_id"] for d in in_workers] == [d["image_id"] for d in in_process]
    _same_records(in_workers, in_process)


def test_predict_images_writes_drawn_images_and_predictions(tmp_path, model):
    paths = []
    for i, size in enumerate([(50, 40), (64, 48)]):
        paths.append(str(tmp_path / f"im{i}.png"))
        Image.fromarray(np.full((size[1], size[0], 3), 90 * i, np.uint8)).save(paths[-1])
    tensor, target = ImageFiles(paths, image_size=(100, 80))[0]
    assert tensor.shape == (3, 80, 100) and int(target["image_id"]) == 0
    out = tmp_path / "out"
    results = predict_images(model, paths, str(out), torch.device("cpu"), label_map=LABEL_MAP, batch_size=2,
                             image_size=(100, 80), score_thresh=0.0)
    assert json.loads((out / "predictions.json").read_text()) == results
    assert [r["drawn"] for r in results] == ["0000_im0.png", "0001_im1.png"]
    for r, size in zip(results, [(50, 40), (64, 48)]):
        assert Image.open(out / r["drawn"]).size == size
        for d in r["detections"]:  # in the pixels of each original image
            x, y, w, h = d["bbox"]
            assert x + w <= size[0] + 0.01 and y + h <= size[1] + 0.01 and d["label"] in LABEL_MAP.values()


def test_predict_images_writes_a_test_sets_class_ids_when_given_its_alignment(tmp_path, model):
    """Issue 23: with a test set (`synthgap predict --test-data`), category_id is the test set's id of the class
    (matched by name), null for a class the test set lacks; label stays the model's class name."""
    from synthgap.data.labels import align_label_maps

    path = str(tmp_path / "im.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    alignment = align_label_maps(LABEL_MAP, {7: "blue", 5: "red"})  # green: not in the test set
    plain = predict_images(model, [path], str(tmp_path / "a"), torch.device("cpu"), label_map=LABEL_MAP,
                           batch_size=1, score_thresh=0.0)[0]["detections"]
    mapped = predict_images(model, [path], str(tmp_path / "b"), torch.device("cpu"), label_map=LABEL_MAP,
                            batch_size=1, score_thresh=0.0, alignment=alignment)[0]["detections"]
    assert {d["label"] for d in plain} == set(LABEL_MAP.values())  # every class appears, so every case is tested
    want = {"red": 5, "green": None, "blue": 7}
    assert [d["category_id"] for d in mapped] == [want[d["label"]] for d in plain]
    assert [d["label"] for d in mapped] == [d["label"] for d in plain]
    assert json.loads((tmp_path / "b" / "predictions.json").read_text())[0]["detections"] == mapped
