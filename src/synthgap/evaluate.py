"""Batched inference, metrics and drawing for a trained Faster R-CNN.

Model outputs are xyxy pixels of the image the model saw; `predict_detections` scales them back
to the sample's original size and converts them (`synthgap.data.xyxy_to_xywh`) into COCO result
records ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``, the one prediction format
the metrics, the files and TensorBoard share. All metric numbers come from `synthgap.metrics`
(called only in `compute_metrics`).
"""

from __future__ import annotations

import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from synthgap.data import Sample, xyxy_to_xywh
from synthgap.data.torch_dataset import TorchDetectionDataset, collate_detection, load_image


def select_device(no_cuda: bool = False, local_rank: int = 0) -> torch.device:
    if torch.cuda.is_available() and not no_cuda:
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def make_eval_loader(dataset: torch.utils.data.Dataset, batch_size: int, workers: int, device: torch.device,
                     sampler=None) -> torch.utils.data.DataLoader:
    """A sequential loader; workers decode the next batches while the model runs."""
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, sampler=sampler,
                                       num_workers=workers, collate_fn=collate_detection,
                                       pin_memory=device.type == "cuda", persistent_workers=False)


def outputs_to_coco(outputs: Sequence[Mapping[str, torch.Tensor]], image_ids: Sequence[int],
                    scales: Sequence[tuple[float, float]]) -> list[dict]:
    """torchvision outputs (xyxy on the fed image) -> COCO results (xywh on the original image)."""
    records: list[dict] = []
    for out, image_id, (sx, sy) in zip(outputs, image_ids, scales):
        boxes = out["boxes"].detach().float().cpu().numpy().astype(np.float64)
        if len(boxes) == 0:
            continue
        boxes = xyxy_to_xywh(boxes * np.array([sx, sy, sx, sy]))
        labels = out["labels"].cpu().numpy().tolist()
        scores = out["scores"].detach().float().cpu().numpy().tolist()
        records.extend({"image_id": int(image_id), "category_id": int(c), "bbox": [round(v, 3) for v in b],
                        "score": round(float(s), 5)} for b, c, s in zip(boxes.tolist(), labels, scores))
    return records


def _forward_single_threaded(model: torch.nn.Module, images: list[torch.Tensor]):
    torch.set_num_threads(1)  # OpenMP thread count is per calling thread: the caller keeps its own
    with torch.inference_mode():
        return model(images)


def _scales(images: Sequence[torch.Tensor], image_ids: Sequence[int],
            original_sizes: Mapping[int, tuple[int, int]] | None) -> list[tuple[float, float]]:
    """(x, y) factors from the fed image back to the annotated image, per image."""
    scales = []
    for img, image_id in zip(images, image_ids):
        h, w = img.shape[-2:]
        ow, oh = original_sizes.get(image_id, (w, h)) if original_sizes else (w, h)
        scales.append((ow / w, oh / h))
    return scales


@torch.inference_mode()
def predict_detections(model: torch.nn.Module, loader: Iterable, device: torch.device,
                       original_sizes: Mapping[int, tuple[int, int]] | None = None,
                       progress: bool = False, threads: int | None = None) -> list[dict]:
    """Run the model over a loader of ``(images, targets)`` and return COCO result records.

    ``original_sizes`` maps image_id -> (width, height) of the annotated image so boxes predicted on
    a resized image are scaled back (None: the image was fed at its original size).

    On the CPU ``threads`` batches (default: torch's intra-op thread count) run at once, each in its
    own Python thread with one intra-op thread. Faster R-CNN spends about half its CPU
    inference time in single-threaded kernels (RoIAlign, NMS) and Python; running replicas side by
    side keeps every core busy (measured 1.4x on 2 cores, same outputs up to float rounding).
    """
    was_training = model.training
    model.eval()
    if threads is None:
        threads = torch.get_num_threads() if device.type == "cpu" else 1
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    records: list[dict] = []
    batches = loader
    if progress:
        from tqdm import tqdm

        batches = tqdm(loader, desc="predict", unit="batch", dynamic_ncols=True)
    pending: deque = deque()  # (future outputs, image ids, scales) of batches in flight, in loader order
    for images, targets in batches:
        images = [img.to(device, non_blocking=True) for img in images]
        ids = [int(t["image_id"]) for t in targets]
        scales = _scales(images, ids, original_sizes)
        if pool is None:
            records.extend(outputs_to_coco(model(images), ids, scales))
            continue
        pending.append((pool.submit(_forward_single_threaded, model, images), ids, scales))
        if len(pending) >= threads:
            future, ids, scales = pending.popleft()
            records.extend(outputs_to_coco(future.result(), ids, scales))
    while pending:
        future, ids, scales = pending.popleft()
        records.extend(outputs_to_coco(future.result(), ids, scales))
    if pool is not None:
        pool.shutdown()
    model.train(was_training)
    return records


class _PredictedBatches(torch.utils.data.Dataset):
    """Item i = COCO records of batch i of ``dataset``, decoded AND run through the model inside a
    DataLoader worker process (the model is shared copy-on-write with forked workers)."""

    def __init__(self, model: torch.nn.Module, dataset: torch.utils.data.Dataset, batch_size: int,
                 original_sizes: Mapping[int, tuple[int, int]] | None):
        self.model, self.dataset, self.batch_size, self.original_sizes = model, dataset, batch_size, original_sizes

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def __getitem__(self, index: int) -> list[dict]:
        first = index * self.batch_size
        images, targets = collate_detection([self.dataset[i] for i in
                                             range(first, min(first + self.batch_size, len(self.dataset)))])
        ids = [int(t["image_id"]) for t in targets]
        with torch.inference_mode():
            outputs = self.model(list(images))
        return outputs_to_coco(outputs, ids, _scales(images, ids, self.original_sizes))


def _one_intra_op_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)


def predict_samples(model: torch.nn.Module, samples: Sequence[Sample], device: torch.device, *, batch_size: int,
                    workers: int = 0, image_size=None, progress: bool = False,
                    processes: int | None = None) -> list[dict]:
    """COCO result records (xywh pixels of each sample's image) for ``samples``.

    On a CPU with several cores, ``processes`` worker processes (default: torch's intra-op thread
    count) each decode a batch and run the model on it with one intra-op thread. About half of
    Faster R-CNN's CPU inference is single-threaded (RoIAlign, NMS, Python); processes keep every
    core busy without the GIL contention of threads (`predict_detections`' CPU path). Measured on 2
    cores, 96 images 320x240: 26-28 images/s vs 24-25 with threads and ~17 for a per-image loop.
    Elsewhere (CUDA, one core) this is `predict_detections` over a DataLoader with ``workers``.
    """
    dataset = eval_dataset(samples, image_size)
    sizes = original_sizes(samples)
    processes = torch.get_num_threads() if processes is None else processes
    if device.type != "cpu" or processes < 2 or len(samples) <= batch_size:
        loader = make_eval_loader(dataset, batch_size, workers, device)
        return predict_detections(model, loader, device, sizes, progress=progress)
    was_training = model.training
    model.eval()
    loader = torch.utils.data.DataLoader(_PredictedBatches(model, dataset, batch_size, sizes), batch_size=None,
                                         num_workers=processes, worker_init_fn=_one_intra_op_thread)
    if progress:
        from tqdm import tqdm

        loader = tqdm(loader, desc="predict", unit="batch", dynamic_ncols=True)
    records = [record for batch in loader for record in batch]
    model.train(was_training)
    return records


def compute_metrics(samples: Sequence[Sample], detections: list[dict], label_map: Mapping[int, str],
                    protocol: str = "coco"):
    """The one call into `synthgap.metrics` (a MetricsResult: .stats, .per_class, .precision, ...)."""
    from synthgap.metrics import evaluate

    return evaluate(list(samples), detections, protocol=protocol, label_map=dict(label_map))


def per_class_ap(result) -> dict[str, float]:
    """AP@[.5:.95] per class name (NaN where the class has no ground truth)."""
    return {entry["name"]: math.nan if entry["AP"] is None else float(entry["AP"])
            for entry in result.per_class.values()}


def pr_curves(result, label_map: Mapping[int, str], iou_index: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per class name: (recall, precision) at IoU 0.5 (index 0), all areas, the largest max-detections."""
    if getattr(result, "precision", None) is None:  # the unity protocol has no COCO precision array
        return {}
    precision = np.asarray(result.precision)  # [T, R, K, A, M]
    recall = np.linspace(0.0, 1.0, precision.shape[1])
    curves = {}
    for k, label in enumerate(int(i) for i in result.category_ids):
        p = precision[iou_index, :, k, 0, -1]
        if (p > -1).any():
            curves[label_map.get(label, str(label))] = (recall, np.clip(p, 0.0, 1.0))
    return curves


def original_sizes(samples: Iterable[Sample]) -> dict[int, tuple[int, int]]:
    return {int(s.image_id): (int(s.width), int(s.height)) for s in samples}


def draw_detections(image: Image.Image, detections: Iterable[Mapping], label_map: Mapping[int, str],
                    score_thresh: float = 0.5, ground_truth: Sample | None = None) -> Image.Image:
    """A copy of ``image`` with predicted boxes (red, labelled with class and score) and optional
    ground-truth boxes (green). Boxes are xywh pixels of this image."""
    image = image.convert("RGB").copy()
    draw = ImageDraw.Draw(image)
    if ground_truth is not None:
        for (x, y, w, h) in ground_truth.boxes.tolist():
            draw.rectangle([x, y, x + w, y + h], outline=(0, 200, 0), width=2)
    for det in detections:
        if det["score"] < score_thresh:
            continue
        x, y, w, h = det["bbox"]
        draw.rectangle([x, y, x + w, y + h], outline=(230, 30, 30), width=2)
        name = label_map.get(det["category_id"], str(det["category_id"]))
        draw.text((x + 2, y + 1), f"{name} {det['score']:.2f}", fill=(255, 255, 0))
    return image


class ImageFiles(torch.utils.data.Dataset):
    """Unannotated images (paths or URIs) in the ``(image, target)`` form the model loop expects."""

    def __init__(self, uris: Sequence[str], image_size: tuple[int, int] | None = None):
        self.uris = list(uris)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.uris)

    def __getitem__(self, index: int):
        image = load_image(self.uris[index])
        if self.image_size is not None:
            image = image.resize(tuple(self.image_size), Image.BILINEAR)
        tensor = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255.0)
        return tensor, {"image_id": torch.tensor(index)}


def eval_dataset(samples: Sequence[Sample], image_size) -> TorchDetectionDataset:
    return TorchDetectionDataset(samples, image_size=tuple(image_size) if image_size else None)


def load_trained_model(checkpoint_file: str, config=None, overrides: Sequence[str] = ()):
    """(config, model in eval mode with the checkpoint's weights, label map or None).

    ``config`` is a `Config`, a config source (path, URI, packaged name) or None (cpu_small). The
    model section comes from the checkpoint's own config when it is a synthgap checkpoint, so the
    architecture matches; with ``config=None`` the images are also fed at the size the model was
    trained on. datasetinsights files carry a yacs config: their architecture is
    fasterrcnn_{backbone}_fpn with as many classes as the predictor has. ``overrides`` apply last.
    """
    import copy

    from synthgap.checkpoint import label_map_of, load_checkpoint, model_state
    from synthgap.config import Config, apply_overrides, config_from_dict, load_config
    from synthgap.models import build_model, load_model_weights

    ckpt = load_checkpoint(checkpoint_file)
    state = model_state(ckpt, checkpoint_file)
    cfg = copy.deepcopy(config) if isinstance(config, Config) else load_config(config or "cpu_small")
    stored = ckpt.get("config") if isinstance(ckpt, dict) else None
    if isinstance(stored, dict) and isinstance(stored.get("model"), dict):
        cfg.model = config_from_dict({"model": stored["model"]}, checkpoint_file).model
        cfg.model.weights = cfg.model.backbone_weights = None
        if config is None:
            cfg.data.image_size = (stored.get("data") or {}).get("image_size", cfg.data.image_size)
    elif isinstance(stored, dict) and "backbone" in stored:  # datasetinsights yacs config
        cfg.model.name = f"fasterrcnn_{stored['backbone']}_fpn"
    cfg = apply_overrides(cfg, list(overrides))
    num_classes = int(state["roi_heads.box_predictor.cls_score.weight"].shape[0])
    model = build_model(cfg.model, num_classes)
    load_model_weights(model, state, source=checkpoint_file)
    model.eval()
    return cfg, model, label_map_of(ckpt)


def evaluate_checkpoint(checkpoint_file: str, test_data: str, output: str, *, config=None,
                        overrides: Sequence[str] = (), test_format: str | None = None,
                        tb_log_dir: str | None = None, no_cuda: bool = False, progress: bool = True) -> dict:
    """Predict on ``test_data`` with a trained checkpoint and score with each of ``cfg.eval.protocols``.

    Writes into ``output`` (local folder or URI): ``predictions.json`` (COCO results, xywh pixels),
    ``metrics_<protocol>.json`` and ``per_class_<protocol>.txt``; with ``tb_log_dir``, the test
    metrics as TensorBoard scalars. Returns ``{"results": {protocol: MetricsResult}, "images": n,
    "detections": n, "left_out": n}`` where ``left_out`` counts detections of classes absent from
    the test set's label map (kept in predictions.json, not scored).
    """
    from synthgap import storage
    from synthgap.data import open_dataset

    cfg, model, label_map = load_trained_model(checkpoint_file, config, overrides)
    ds = open_dataset(test_data, test_format or cfg.data.format, skip_invalid=cfg.data.skip_invalid)
    unknown = set(ds.label_map) - set(label_map if label_map is not None else ds.label_map)
    if unknown:
        raise ValueError(f"{test_data}: label ids {sorted(unknown)} are unknown to the model {checkpoint_file}")
    samples = list(ds)
    device = select_device(no_cuda)
    model.to(device)
    detections = predict_samples(model, samples, device, batch_size=cfg.eval.batch_size, workers=cfg.eval.workers,
                                 image_size=cfg.data.image_size, progress=progress)
    storage.write_json(storage.join(output, "predictions.json"), detections, indent=None)
    scored = [d for d in detections if d["category_id"] in ds.label_map]
    results = {}
    for protocol in cfg.eval.protocols:
        result = compute_metrics(samples, scored, dict(ds.label_map), protocol)
        storage.write_json(storage.join(output, f"metrics_{protocol}.json"), result.to_dict())
        storage.write_text(storage.join(output, f"per_class_{protocol}.txt"), result.table() + "\n")
        results[protocol] = result
    if tb_log_dir:
        _write_test_scalars(results, tb_log_dir)
    return {"results": results, "images": len(samples), "detections": len(detections),
            "left_out": len(detections) - len(scored)}


def _write_test_scalars(results: Mapping, tb_log_dir: str) -> None:
    """TensorBoard scalars ``test_<protocol>/<stat>`` (step 0), in a local folder or at a URI."""
    from synthgap import tblog

    writer = tblog.open_writer(tb_log_dir)
    for protocol, result in results.items():
        for name, value in result.stats.items():
            writer.add_scalar(f"test_{protocol}/{name}", float(value), 0)
    tblog.close(writer, tb_log_dir)
