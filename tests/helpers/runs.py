"""Tiny run folders for report tests: a generated test set, predictions made from its ground truth
(kept, shifted, dropped, plus false positives), metrics from synthgap.metrics, real TensorBoard files."""

from __future__ import annotations

import os

import numpy as np

from synthgap.io import storage
from synthgap.data import open_dataset


def make_test_set(root: str, frames: int = 4, seed: int = 3) -> str:
    from synthgap.generate import generate

    generate(root, frames, format="coco", seed=seed, width=160, height=120, style="target", progress=False)
    return root


def fake_predictions(samples, keep: float, seed: int) -> list[dict]:
    """Ground truth turned into detections: a fraction ``keep`` kept (slightly shifted), one FP per image."""
    rng = np.random.default_rng(seed)
    out = []
    for s in samples:
        for box, label in zip(s.boxes.tolist(), s.labels.tolist()):
            if rng.random() < keep:
                x, y, w, h = box
                out.append({"image_id": int(s.image_id), "category_id": int(label),
                            "bbox": [x + rng.uniform(-1, 1), y, w, h], "score": float(rng.uniform(0.6, 1.0))})
        out.append({"image_id": int(s.image_id), "category_id": int(s.labels[0]) if len(s) else 1,
                    "bbox": [1.0, 1.0, 20.0, 15.0], "score": 0.9})
    return out


def make_run(run_dir: str, test_data: str, keep: float, seed: int, name: str | None = None,
             with_run_json: bool = True) -> str:
    """A folder like `synthgap evaluate --output` writes (+ run.json and TensorBoard scalars)."""
    from torch.utils.tensorboard import SummaryWriter

    from synthgap.metrics import evaluate

    ds = open_dataset(test_data)
    samples = list(ds)
    preds = fake_predictions(samples, keep, seed)
    storage.write_json(storage.join(run_dir, "predictions.json"), preds, indent=None)
    for protocol in ("coco", "unity"):
        result = evaluate(samples, preds, protocol, label_map=ds.label_map)
        storage.write_json(storage.join(run_dir, f"metrics_{protocol}.json"), result.to_dict())
    writer = SummaryWriter(os.path.join(run_dir, "tb"))
    for step in range(1, 6):
        writer.add_scalar("train/loss", 2.0 / step + keep, step)
    for epoch in (1, 2):
        writer.add_scalar("epoch/loss", 1.5 / epoch, epoch)
    writer.close()
    if with_run_json:
        storage.write_json(storage.join(run_dir, "run.json"), {"name": name or os.path.basename(run_dir),
                                                                "test_data": test_data, "tb_log_dir": "tb"})
    return run_dir


def finish_cell(out: str, cell: str, seed: int, test_data: str, *, target: float | None, own: float,
                images: int = 4, keep: float = 0.5, prediction_seed: int | None = None) -> str:
    """A finished study cell x seed under ``out`` (nothing trains): a run folder as `make_run` writes it
    (predictions made from ``test_data``'s ground truth, ``keep`` of the boxes found) with the study's
    run.json fields, and its metrics.json with target COCO AP50 ``target`` (None: the run's own metrics,
    those of its predictions) and in-domain AP50 ``own``. ``prediction_seed``: the fake detector's random
    stream (default ``seed``; two arms of one seed with the same stream make the same draws)."""
    import json

    from synthgap.study import NOT_LEARNED, cell_dir

    folder = cell_dir(str(out), cell, seed)
    make_run(folder, test_data, keep=keep, seed=seed if prediction_seed is None else prediction_seed,
             name=f"{cell} seed{seed}")
    run = json.loads(open(os.path.join(folder, "run.json")).read())
    run.update({"in_domain coco AP50": own, "learned": own >= 0.2,
                "warning": None if own >= 0.2 else f"{NOT_LEARNED} (in-domain coco AP50 {own})"})
    storage.write_json(os.path.join(folder, "run.json"), run)
    if target is None:
        metrics = {p: storage.read_json(os.path.join(folder, f"metrics_{p}.json"))["stats"] for p in ("coco", "unity")}
    else:
        metrics = {"coco": {"AP": target / 2, "AP50": target}, "unity": {"mAP": target / 3}}
    storage.write_json(os.path.join(folder, "metrics.json"), {
        "cell": cell, "kind": cell.split("-")[0], "seed": seed, "train_images": images, "metrics": metrics,
        "in_domain": {"data": "x", "metrics": {"coco": {"AP": own / 2, "AP50": own}}}})
    return folder
