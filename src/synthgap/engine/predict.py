"""The one prediction path: a model over images -> COCO result records.

Model outputs are xyxy pixels of the image the model saw; `predict` scales them back to the original
image size and converts them (`synthgap.data.xyxy_to_xywh`) into COCO result records ``{"image_id",
"category_id", "bbox": [x, y, w, h], "score"}``, the one prediction format the metrics, the files and
TensorBoard share. Training validation, `synthgap evaluate` and `synthgap predict` all call `predict`.
"""

from __future__ import annotations

import io
import math
import posixpath
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from synthgap.io import storage
from synthgap.data import Sample, xyxy_to_xywh
from synthgap.data.images import load_image
from synthgap.data.torch_dataset import TorchDetectionDataset, collate_detection, model_resize
from synthgap.data.draw import draw_detections


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


def eval_dataset(samples: Sequence[Sample], image_size, resize: tuple[int, int] | None = None) -> TorchDetectionDataset:
    """``resize``: the model's (min_size, max_size) (`synthgap.data.torch_dataset.model_resize`): photos it
    shrinks to half or less are decoded near its input size; predictions are scaled back by `original_sizes`."""
    return TorchDetectionDataset(samples, image_size=tuple(image_size) if image_size else None, model_resize=resize)


def original_sizes(samples: Iterable[Sample]) -> dict[int, tuple[int, int]]:
    """image_id -> (width, height) in pixels of the annotated image."""
    return {int(s.image_id): (int(s.width), int(s.height)) for s in samples}


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


def _scales(images: Sequence[torch.Tensor], image_ids: Sequence[int],
            original_sizes: Mapping[int, tuple[int, int]] | None) -> list[tuple[float, float]]:
    """(x, y) factors from the fed image back to the annotated image, per image."""
    scales = []
    for img, image_id in zip(images, image_ids):
        h, w = img.shape[-2:]
        ow, oh = original_sizes.get(image_id, (w, h)) if original_sizes else (w, h)
        scales.append((ow / w, oh / h))
    return scales


def _predict_batch(model: torch.nn.Module, images: Sequence[torch.Tensor], targets: Sequence[Mapping],
                   original_sizes: Mapping[int, tuple[int, int]] | None) -> list[dict]:
    ids = [int(t["image_id"]) for t in targets]
    with torch.inference_mode():
        outputs = model(list(images))
    return outputs_to_coco(outputs, ids, _scales(images, ids, original_sizes))


class _PredictedBatches(torch.utils.data.Dataset):
    """Item i = COCO records of batch i of ``dataset``, decoded AND run through the model inside a
    DataLoader worker process.

    The workers rely on fork's copy-on-write sharing: each forked worker reads the parent's model
    weights without a copy. Under the spawn start method (the default on macOS and Windows) every
    worker would unpickle its own copy of the model instead: correct, but slower to start and
    ``processes`` times the memory.
    """

    def __init__(self, model: torch.nn.Module, dataset: torch.utils.data.Dataset, batch_size: int,
                 original_sizes: Mapping[int, tuple[int, int]] | None):
        self.model, self.dataset, self.batch_size, self.original_sizes = model, dataset, batch_size, original_sizes

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def __getitem__(self, index: int) -> list[dict]:
        first = index * self.batch_size
        images, targets = collate_detection([self.dataset[i] for i in
                                             range(first, min(first + self.batch_size, len(self.dataset)))])
        return _predict_batch(self.model, images, targets, self.original_sizes)


def _one_intra_op_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)


def predict(model: torch.nn.Module, dataset: torch.utils.data.Dataset, device: torch.device, *, batch_size: int,
            workers: int = 0, original_sizes: Mapping[int, tuple[int, int]] | None = None, progress: bool = False,
            processes: int | None = None) -> list[dict]:
    """COCO result records for a dataset of ``(image tensor, {"image_id": ...})`` items.

    ``original_sizes`` maps image_id -> (width, height) of the annotated image so boxes predicted on
    a resized image are scaled back (None: the images were fed at their original size).

    On a CPU with several cores, ``processes`` worker processes (default: torch's intra-op thread
    count) each decode a batch and run the model on it with one intra-op thread. About half of
    Faster R-CNN's CPU inference is single-threaded (RoIAlign, NMS, Python); processes keep every
    core busy without the GIL contention of threads. Measured on 2 cores, 96 images 320x240: 26-28
    images/s vs 24-25 with a thread per core and ~17 for a per-image loop (BENCHMARKS.md).
    Elsewhere (CUDA, one core, a single batch) a plain loop over a DataLoader with ``workers``
    decoding processes. The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    processes = torch.get_num_threads() if processes is None else processes
    if device.type == "cpu" and processes > 1 and len(dataset) > batch_size:
        batches = torch.utils.data.DataLoader(_PredictedBatches(model, dataset, batch_size, original_sizes),
                                              batch_size=None, num_workers=processes,
                                              worker_init_fn=_one_intra_op_thread)
    else:
        batches = (_predict_batch(model, [img.to(device, non_blocking=True) for img in images], targets,
                                  original_sizes)
                   for images, targets in make_eval_loader(dataset, batch_size, workers, device))
    if progress:
        batches = tqdm(batches, total=math.ceil(len(dataset) / batch_size), desc="predict", unit="batch",
                       dynamic_ncols=True)
    try:
        return [record for batch in batches for record in batch]
    finally:
        model.train(was_training)


def predict_samples(model: torch.nn.Module, samples: Sequence[Sample], device: torch.device, *, batch_size: int,
                    workers: int = 0, image_size=None, progress: bool = False,
                    processes: int | None = None) -> list[dict]:
    """`predict` on samples (fed at ``image_size`` (w, h) when set): records in xywh pixels of each
    sample's own image."""
    return predict(model, eval_dataset(samples, image_size, model_resize(model)), device, batch_size=batch_size,
                   workers=workers,
                   original_sizes=original_sizes(samples), progress=progress, processes=processes)


def predict_images(model: torch.nn.Module, uris: Sequence[str], out: str, device: torch.device, *,
                   label_map: Mapping[int, str], batch_size: int, workers: int = 0, image_size=None,
                   score_thresh: float = 0.5, alignment=None) -> list[dict]:
    """Detect objects in unannotated images (paths or URIs) and write into ``out`` (folder or URI)
    ``NNNN_<name>.png`` per image (detections scoring at least ``score_thresh`` drawn) and
    ``predictions.json``: per image ``{"image", "drawn", "detections": [{"category_id", "bbox" (xywh
    pixels of the image), "score", "label"}]}``, which is also returned. ``label`` is the model's class
    name; ``category_id`` the model's id, or with ``alignment`` (a `synthgap.data.labels.LabelAlignment`
    onto a test set) the test set's id of that class, null for a class the test set lacks."""
    sizes = {i: load_image(uri).size for i, uri in enumerate(uris)}
    detections = predict(model, ImageFiles(uris, image_size), device, batch_size=batch_size, workers=workers,
                         original_sizes=sizes)
    results = []
    for i, uri in enumerate(uris):
        dets = [d for d in detections if d["image_id"] == i]
        name = f"{i:04d}_{posixpath.basename(uri.replace(chr(92), '/')).rsplit('.', 1)[0]}.png"
        drawn = draw_detections(load_image(uri), dets, label_map, score_thresh)
        buffer = io.BytesIO()
        drawn.save(buffer, format="PNG")
        storage.write_bytes(storage.join(out, name), buffer.getvalue())
        results.append({"image": uri, "drawn": name, "detections": [
            {"category_id": d["category_id"] if alignment is None else alignment.model_to_test.get(d["category_id"]),
             "bbox": d["bbox"], "score": d["score"], "label": label_map.get(d["category_id"], str(d["category_id"]))}
            for d in dets]})
    storage.write_json(storage.join(out, "predictions.json"), results)
    return results
