"""Evaluation throughput: synthgap's batched inference vs a naive per-image loop, same run.

synthgap: `synthgap.engine.predict.predict_samples`, the one prediction path (`synthgap evaluate`, training
validation and `synthgap predict`: batches of ``--batch``, ``torch.inference_mode``; on a multi-core CPU
one DataLoader worker process per core decodes a batch and runs the model on it with one intra-op
thread; vectorised conversion of outputs to COCO records). ``--processes 1`` measures its plain loop
instead (images decoded by ``--workers`` processes, the model in the main process). The naive peer is
datasetinsights' way (``FasterRCNN.predict``/``convert_bboxes2canonical``): one image at a time, decoded in the main
process, ``torch.no_grad``, each box converted with ``.item()`` calls. Same model weights, images,
and output records (their counts are printed side by side). Rounds alternate so machine load hits both alike.

    .venv/bin/python benchmarks/bench_evaluate.py --images 96 --batch 4 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

from synthgap.generate.shapes import make_samples

from synthgap.config import load_config
from synthgap.data.images import load_image
from synthgap.engine.predict import predict_samples
from synthgap.models import build_model


def naive_predict(model, samples):
    """One image per forward pass; boxes converted one value at a time (datasetinsights' pattern)."""
    model.eval()
    records = []
    with torch.no_grad():
        for sample in samples:
            image = load_image(sample.image)
            tensor = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
            output = model([tensor])[0]
            for i in range(output["boxes"].shape[0]):
                x1, y1, x2, y2 = (output["boxes"][i][j].item() for j in range(4))
                records.append({"image_id": int(sample.image_id), "category_id": output["labels"][i].item(),
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": output["scores"][i].item()})
    return records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--processes", type=int, default=None,
                    help="worker processes (default: one per torch thread; 1 = the plain in-process loop)")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    cfg = load_config("cpu_small")
    torch.manual_seed(0)
    model = build_model(cfg.model, 4).eval()
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        samples = make_samples(tmp, args.images, size=(w, h), seed=0, max_objects=4)
        ours, peer = [], []
        for r in range(args.rounds):
            t0 = time.perf_counter()
            naive = naive_predict(model, samples)
            peer.append(len(samples) / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            batched = predict_samples(model, samples, device, batch_size=args.batch, workers=args.workers,
                                      processes=args.processes)
            ours.append(len(samples) / (time.perf_counter() - t0))
            print(f"round {r + 1}: naive {peer[-1]:.2f} images/s, synthgap {ours[-1]:.2f} images/s "
                  f"({len(batched)} vs {len(naive)} detections)", flush=True)
    ratio = statistics.median(o / p for o, p in zip(ours, peer))
    path = f"plain loop, workers {args.workers}" if args.processes == 1 else "worker processes"
    print(f"\nmodel {cfg.model.name}, {args.images} images {w}x{h}, batch {args.batch}, {path}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"naive per-image loop: {statistics.median(peer):.2f} images/s; synthgap batched: "
          f"{statistics.median(ours):.2f} images/s")
    print(f"ratio synthgap / naive (median of per-round ratios): {ratio:.2f}x  (goal >= 1.5x)")


if __name__ == "__main__":
    main()
