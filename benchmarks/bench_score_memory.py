"""Peak memory of `synthgap score` on a large results file, against json.load / pycocotools (issue 14 item 14).

    nice -n 10 .venv/bin/python benchmarks/bench_score_memory.py                       # 1 M detections (~3 min)
    nice -n 10 .venv/bin/python benchmarks/bench_score_memory.py --detections 10000000  # the issue's 10 M

Writes a seeded COCO ground truth (``detections / 100`` images of 640x480, Poisson 7 boxes each, 20 classes)
and a results list of 100 detections per image (jittered GT copies and background boxes) to --dir, without
ever holding the records in memory. Then each measurement runs in its own process and reports its peak
RSS (``ru_maxrss`` from ``os.wait4``) and wall time:

* ``synthgap score`` (the CLI: ground truth through the COCO reader, detections streamed, COCO metrics);
* ``synthgap read``: the same process stopped after reading GT + detections into arrays;
* ``json.load``: the results file parsed by the standard library, what pycocotools' ``loadRes`` starts with;
* ``pycocotools loadRes``: ``COCO(gt).loadRes(pred)`` (skipped past 2 M detections: it needs ~3x json.load).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

PY = sys.executable


def write_data(folder: str, n_dets: int, seed: int = 0, classes: int = 20) -> tuple[str, str]:
    """gt_<images>.json and pred_<detections>.json in ``folder`` (reused when present)."""
    import numpy as np

    pred_path = os.path.join(folder, f"pred_{n_dets}.json")
    n_images = max(1, n_dets // 100)
    gt_path = os.path.join(folder, f"gt_{n_images}.json")
    if os.path.exists(gt_path) and os.path.exists(pred_path):
        return gt_path, pred_path
    rng = np.random.default_rng(seed)
    n_gt = rng.poisson(7, n_images)
    g_img = np.repeat(np.arange(n_images), n_gt)
    wh = np.exp(rng.uniform(np.log(8), np.log(300), (len(g_img), 2)))
    g_box = np.round(np.hstack([rng.uniform(0, 1, (len(g_img), 2)) * ([640, 480] - wh), wh]), 2)
    g_cat = rng.integers(1, classes + 1, len(g_img))
    with open(gt_path, "w") as f:
        f.write('{"categories": ' + json.dumps([{"id": c, "name": f"class{c}"} for c in range(1, classes + 1)]))
        f.write(', "images": ' + json.dumps([{"id": i + 1, "width": 640, "height": 480, "file_name": f"{i}.jpg"}
                                            for i in range(n_images)]))
        f.write(', "annotations": [')
        f.write(", ".join(json.dumps({"id": j + 1, "image_id": int(g_img[j]) + 1, "category_id": int(g_cat[j]),
                                      "bbox": g_box[j].tolist(), "area": float(g_box[j, 2] * g_box[j, 3]),
                                      "iscrowd": 0}) for j in range(len(g_img))))
        f.write("]}\n")
    starts = np.r_[0, np.cumsum(n_gt)]
    with open(pred_path + ".tmp", "w") as f:
        f.write("[")
        first = True
        for lo in range(0, n_images, 10_000):
            hi = min(n_images, lo + 10_000)
            img = np.repeat(np.arange(lo, hi), 100)
            has_gt = n_gt[img] > 0
            src = starts[img] + (rng.integers(0, 1 << 30, len(img)) % np.maximum(n_gt[img], 1))
            jit = g_box[np.minimum(src, len(g_box) - 1)] * (1 + rng.normal(0, 0.1, (len(img), 4)))
            bg_wh = np.exp(rng.uniform(np.log(8), np.log(300), (len(img), 2)))
            bg = np.hstack([rng.uniform(0, 1, (len(img), 2)) * ([640, 480] - bg_wh), bg_wh])
            use_jit = has_gt & (np.arange(len(img)) % 100 < 30)
            box = np.round(np.where(use_jit[:, None], np.abs(jit), bg), 2)
            cat = np.where(use_jit, g_cat[np.minimum(src, len(g_cat) - 1)], rng.integers(1, classes + 1, len(img)))
            score = np.round(np.where(use_jit, rng.uniform(0.2, 1, len(img)), rng.uniform(0, 0.7, len(img))), 3)
            text = ", ".join(f'{{"image_id": {i + 1}, "category_id": {c}, "bbox": [{b[0]}, {b[1]}, {b[2]}, {b[3]}], '
                             f'"score": {s}}}' for i, c, b, s in zip(img.tolist(), cat.tolist(), box.tolist(),
                                                                    score.tolist()))
            f.write(text if first else ", " + text)
            first = False
        f.write("]\n")
    os.replace(pred_path + ".tmp", pred_path)
    return gt_path, pred_path


READ_ONLY = """
import sys
from synthgap.data import open_dataset
from synthgap.metrics import detections_from_json, load_ground_truth
ds = open_dataset(sys.argv[1], "coco")
gt = load_ground_truth(ds, ds.label_map)
print(len(detections_from_json(sys.argv[2], gt)), "detections")
"""
JSON_LOAD = "import json, sys; print(len(json.load(open(sys.argv[2]))), 'detections')"
PYCOCOTOOLS = """
import contextlib, io, sys
from pycocotools.coco import COCO
with contextlib.redirect_stdout(io.StringIO()):
    res = COCO(sys.argv[1]).loadRes(sys.argv[2])
print(len(res.anns), "detections")
"""


def measure(args: list[str]) -> tuple[float, float, str]:
    """(peak RSS in MB, seconds, last output line) of one child process."""
    t = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t
    if status != 0:
        raise RuntimeError(f"{args[:4]} failed:\n{out[-2000:]}")
    lines = [ln for ln in out.splitlines() if ln.strip()]
    return usage.ru_maxrss / 1024, seconds, (lines[0] if lines else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detections", type=int, default=1_000_000, help="detections in the results file")
    ap.add_argument("--dir", default="/tmp/synthgap-bench-score", help="where the data files are written")
    ap.add_argument("--skip-score", action="store_true", help="measure reading only (no evaluation)")
    ap.add_argument("--write-only", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    if a.write_only:
        print(*write_data(a.dir, a.detections))
        return
    t = time.perf_counter()
    # Written by a child process: a child's ru_maxrss counts the parent's pages it was forked with.
    gt, pred = subprocess.run([PY, __file__, "--write-only", "--detections", str(a.detections), "--dir", a.dir],
                              check=True, capture_output=True, text=True).stdout.split()
    print(f"data: {a.detections:,} detections, {os.path.getsize(pred) / 1e6:.0f} MB results file, "
          f"{os.path.getsize(gt) / 1e6:.0f} MB ground truth ({time.perf_counter() - t:.0f} s to write)")
    arrays_mb = a.detections * (8 + 8 + 32 + 8) / 1e6
    print(f"result arrays (image, category indices int64, bbox 4 float64, score float64): {arrays_mb:.0f} MB")
    runs = {"synthgap read (GT + detections)": [PY, "-c", READ_ONLY, gt, pred]}
    if not a.skip_score:
        runs["synthgap score --protocol coco"] = [PY, "-m", "synthgap", "score", "--gt", gt, "--pred", pred]
    runs["json.load (peer)"] = [PY, "-c", JSON_LOAD, gt, pred]
    if a.detections <= 2_000_000:
        runs["pycocotools COCO(gt).loadRes (peer)"] = [PY, "-c", PYCOCOTOOLS, gt, pred]
    rss = {}
    print(f"\n| run | peak RSS MB | seconds |\n| --- | ---: | ---: |")
    for name, cmd in runs.items():
        rss[name], seconds, _ = measure(cmd)
        print(f"| {name} | {rss[name]:.0f} | {seconds:.1f} |", flush=True)
    peer = rss["json.load (peer)"]
    for name in runs:
        if name.startswith("synthgap"):
            print(f"{name}: {rss[name] / peer:.2f}x json.load's peak RSS, {rss[name] / arrays_mb:.2f}x the arrays")


if __name__ == "__main__":
    main()
