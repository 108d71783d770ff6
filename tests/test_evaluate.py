import numpy as np
import pytest
import torch
from PIL import Image

from shapes import LABEL_MAP, make_samples
from synthgap.config import ModelConfig
from synthgap.evaluate import (ImageFiles, compute_metrics, draw_detections, eval_dataset, make_eval_loader,
                               original_sizes, outputs_to_coco, per_class_ap, pr_curves, predict_detections,
                               predict_samples)
from synthgap.models import build_model


def test_outputs_are_scaled_back_and_converted_to_xywh():
    out = [{"boxes": torch.tensor([[10.0, 20.0, 30.0, 60.0]]), "labels": torch.tensor([2]),
            "scores": torch.tensor([0.9])}, {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64),
                                              "scores": torch.zeros(0)}]
    records = outputs_to_coco(out, [7, 8], [(2.0, 0.5), (1.0, 1.0)])
    assert records == [{"image_id": 7, "category_id": 2, "bbox": [20.0, 10.0, 40.0, 20.0], "score": 0.9}]


def test_perfect_detections_score_one_and_per_class_views():
    samples = [s for s in make_samples_cached()]
    detections = [{"image_id": s.image_id, "category_id": int(c), "bbox": b.tolist(), "score": 1.0}
                  for s in samples for b, c in zip(s.boxes, s.labels)]
    result = compute_metrics(samples, detections, LABEL_MAP, "coco")
    assert result.stats["AP"] == pytest.approx(1.0) and result.stats["AP50"] == pytest.approx(1.0)
    present = {LABEL_MAP[int(c)] for s in samples for c in s.labels}
    ap = per_class_ap(result)
    assert {k for k, v in ap.items() if np.isfinite(v)} == present and all(ap[k] == pytest.approx(1.0) for k in present)
    curves = pr_curves(result, LABEL_MAP)
    assert set(curves) == present
    recall, precision = curves[next(iter(present))]
    assert recall[0] == 0.0 and recall[-1] == 1.0 and np.allclose(precision, 1.0)
    nothing = compute_metrics(samples, [], LABEL_MAP, "coco")
    assert nothing.stats["AP"] <= 0.0


_CACHE = {}


def make_samples_cached():
    import tempfile

    if "s" not in _CACHE:
        _CACHE["s"] = make_samples(tempfile.mkdtemp(), 6, size=(64, 48), seed=3)
    return _CACHE["s"]


def test_batched_prediction_matches_one_image_at_a_time(tmp_path):
    """Batched inference (batch 3, resized inputs) gives the same boxes as a per-image loop, in the
    original image's pixels."""
    samples = make_samples(tmp_path, 3, size=(64, 48), seed=4)
    torch.manual_seed(0)
    cfg = ModelConfig(name="fasterrcnn_mobilenet_v3_large_320_fpn", min_size=96, max_size=128, box_score_thresh=0.0)
    model = build_model(cfg, 4).eval()
    device = torch.device("cpu")
    ds = eval_dataset(samples, [128, 96])  # fed at 2x: predictions must come back in 64x48 pixels
    batched = predict_detections(model, make_eval_loader(ds, 3, 0, device), device, original_sizes(samples))
    single = predict_detections(model, make_eval_loader(ds, 1, 0, device), device, original_sizes(samples))
    assert len(batched) == len(single) > 0
    key = lambda d: (d["image_id"], -d["score"])  # noqa: E731
    for a, b in zip(sorted(batched, key=key), sorted(single, key=key)):
        assert a["image_id"] == b["image_id"] and a["category_id"] == b["category_id"]
        assert np.allclose(a["bbox"], b["bbox"], atol=0.05) and a["score"] == pytest.approx(b["score"], abs=1e-4)
    boxes = np.array([d["bbox"] for d in batched])
    assert (boxes[:, 0] + boxes[:, 2] <= 64.01).all() and (boxes[:, 1] + boxes[:, 3] <= 48.01).all()


def test_worker_process_prediction_matches_the_main_process(tmp_path):
    """`predict_samples` on the CPU runs decode + model in worker processes: same records, same order
    of images as the in-process path."""
    samples = make_samples(tmp_path, 5, size=(64, 48), seed=5)
    torch.manual_seed(0)
    cfg = ModelConfig(name="fasterrcnn_mobilenet_v3_large_320_fpn", min_size=96, max_size=128, box_score_thresh=0.0)
    model = build_model(cfg, 4).eval()
    device = torch.device("cpu")
    in_workers = predict_samples(model, samples, device, batch_size=2, image_size=[128, 96], processes=2)
    in_process = predict_samples(model, samples, device, batch_size=2, image_size=[128, 96], processes=1)
    assert len(in_workers) == len(in_process) > 0
    assert [d["image_id"] for d in in_workers] == [d["image_id"] for d in in_process]
    for a, b in zip(in_workers, in_process):
        assert a["category_id"] == b["category_id"] and np.allclose(a["bbox"], b["bbox"], atol=0.05)
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
    assert not model.training


def test_draw_and_image_files(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(path)
    files = ImageFiles([str(path)], image_size=(100, 80))
    tensor, target = files[0]
    assert tensor.shape == (3, 80, 100) and int(target["image_id"]) == 0
    drawn = np.asarray(draw_detections(Image.open(path), [
        {"image_id": 0, "category_id": 1, "bbox": [5, 5, 20, 10], "score": 0.9},
        {"image_id": 0, "category_id": 1, "bbox": [30, 20, 10, 10], "score": 0.1}], LABEL_MAP, 0.5))
    assert tuple(drawn[5, 15]) == (230, 30, 30)  # top edge of the kept box
    assert drawn[20:31, 30:41].sum() == 0  # the low-score box is not drawn
