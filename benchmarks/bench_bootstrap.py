"""Bootstrap over test images (`synthgap.metrics.bootstrap`) vs the naive peer: re-running the whole COCO
evaluation on each materialised resample (synthgap's engine, and pycocotools).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_bootstrap.py                 # 500 images, 1,000 resamples
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_bootstrap.py --images 2000

Data: `bench_cocoeval.make_data` (80 classes, Poisson-7 GT boxes and 100 detections per image, 1 % crowd,
scores rounded to 3 digits so ties occur). Timed: `bootstrap_intervals(result, resamples)` (the per-image
plan + every resample's 12 stats and per-class metrics), wall and CPU seconds, one thread. The peers are
timed on ``--peer-resamples`` materialised resamples (each image copied as often as drawn, new ids) and
scaled to ``resamples``; their numbers are checked against the bootstrap's for those resamples.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from bench_cocoeval import make_data  # noqa: E402


def materialise(gt: dict, dets: list, weights: np.ndarray) -> tuple[dict, list]:
    """The resampled dataset: image i (in id order) copied weights[i] times, new ids in that order."""
    ids = sorted(img["id"] for img in gt["images"])
    copies, images = {}, []
    for iid, w in zip(ids, weights.tolist()):
        copies[iid] = [len(images) + c + 1 for c in range(w)]
        images += [{"id": j, "width": 640, "height": 480, "file_name": f"{j}.jpg"} for j in copies[iid]]
    anns = []
    for a in gt["annotations"]:
        for j in copies[a["image_id"]]:
            anns.append(dict(a, id=len(anns) + 1, image_id=j))
    return ({"images": images, "annotations": anns, "categories": gt["categories"]},
            [dict(d, image_id=j) for d in dets for j in copies[d["image_id"]]])


def pycocotools_stats(gt: dict, dets: list) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        E = COCOeval(coco, coco.loadRes(dets), "bbox")
        E.evaluate()
        E.accumulate()
        E.summarize()
    return [float(x) for x in E.stats[:12]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--peer-resamples", type=int, default=5, help="materialised resamples timed per peer")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-pycocotools", action="store_true")
    args = ap.parse_args()

    from synthgap.metrics import bootstrap_intervals, evaluate, image_weights, resample_metrics

    gt, dets = make_data(args.images, seed=args.seed)
    result = evaluate(gt, dets)
    print(f"{args.images} images, {len(gt['annotations'])} GT boxes, {len(dets)} detections, 80 classes; "
          f"{args.resamples} resamples, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    bootstrap_intervals(result, 20, seed=args.seed)  # imports (scipy.sparse), first-call costs
    w0, c0 = time.perf_counter(), time.process_time()
    iv = bootstrap_intervals(result, args.resamples, seed=args.seed)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    print(f"bootstrap_intervals: {wall:.2f} s wall, {cpu:.2f} s CPU; AP50 {result.stats['AP50']:.4f} "
          f"[{iv.stats['AP50'][0]:.4f}, {iv.stats['AP50'][1]:.4f}], AP {result.stats['AP']:.4f} "
          f"[{iv.stats['AP'][0]:.4f}, {iv.stats['AP'][1]:.4f}]")

    weights = image_weights(args.images, args.resamples, args.seed)[:args.peer_resamples]
    ours = resample_metrics(result, weights)["stats"]
    ours = np.array([[ours[n][b] for n in result.stats] for b in range(len(weights))])
    ours = np.where(np.isnan(ours), -1.0, ours)
    peers = [("synthgap engine", lambda g, d: list(evaluate(g, d, matches=False).stats.values()))]
    if not args.no_pycocotools:
        peers.append(("pycocotools", pycocotools_stats))
    print(f"{'per resample, full evaluation':<32}{'s / resample':>13}{'x resamples (s)':>17}{'ratio to bootstrap':>20}"
          f"  max |diff| of the 12 stats")
    for name, peer in peers:
        seconds, diff = 0.0, 0.0
        for b, w in enumerate(weights):
            g, d = materialise(gt, dets, w)
            t0 = time.process_time()
            stats = peer(g, d)
            seconds += time.process_time() - t0
            diff = max(diff, float(np.max(np.abs(np.asarray(stats) - ours[b]))))
        per = seconds / len(weights)
        print(f"{name:<32}{per:>13.3f}{per * args.resamples:>17.1f}{per * args.resamples / cpu:>20.0f}  {diff:.1e}")


if __name__ == "__main__":
    main()
