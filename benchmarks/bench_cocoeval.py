"""COCO bbox evaluation: synthgap vs pycocotools vs faster-coco-eval, on one seeded synthetic set.

    .venv/bin/python benchmarks/bench_cocoeval.py                 # 5,000 images, 80 classes (about 2 min)
    .venv/bin/python benchmarks/bench_cocoeval.py --images 500    # quick

Each tool runs in its own subprocess (same seeded data, built there), timed over
evaluate + accumulate + summarize (synthgap: ``evaluate()`` from the same COCO dict and results list,
input validation included). Peak memory = the process's peak RSS during evaluation (VmHWM reset
through /proc/self/clear_refs after the data is built). The 12 stats of every tool are checked
against pycocotools (|diff| <= 1e-12 for synthgap). Needs the ``bench`` extra (faster-coco-eval).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import time

import numpy as np

TOOLS = ("pycocotools", "faster-coco-eval", "synthgap")


def make_data(n_images: int, n_classes: int = 80, gt_per_image: float = 7, dets_per_image: int = 100,
              seed: int = 0) -> tuple[dict, list]:
    """COCO GT dict and results list: 640x480 images, ~gt_per_image boxes of mixed sizes, some crowd;
    detections = jittered copies of the GT (mostly right class) plus background boxes, uniform scores."""
    rng = np.random.default_rng(seed)
    W, H = 640.0, 480.0
    images = [{"id": i + 1, "width": int(W), "height": int(H), "file_name": f"{i}.jpg"} for i in range(n_images)]
    cats = [{"id": c + 1, "name": f"class{c}"} for c in range(n_classes)]
    n_gt = rng.poisson(gt_per_image, n_images)
    g_img = np.repeat(np.arange(n_images), n_gt)
    G = len(g_img)
    wh = np.exp(rng.uniform(np.log(8), np.log(300), (G, 2)))
    xy = rng.uniform(0, 1, (G, 2)) * (np.array([W, H]) - wh)
    g_box = np.round(np.hstack([xy, wh]), 2)
    g_cat = rng.integers(0, n_classes, G)
    crowd = rng.random(G) < 0.01
    anns = [{"id": j + 1, "image_id": int(g_img[j]) + 1, "category_id": int(g_cat[j]) + 1,
             "bbox": g_box[j].tolist(), "area": float(g_box[j, 2] * g_box[j, 3] * 0.8), "iscrowd": int(crowd[j])}
            for j in range(G)]
    # detections: per image, 5 jittered copies per GT box, the rest background
    starts = np.r_[0, np.cumsum(n_gt)[:-1]]
    d_img, d_box, d_cat = [], [], []
    n_jit = np.minimum(5 * n_gt, dets_per_image)
    src = np.concatenate([starts[i] + rng.integers(0, max(n_gt[i], 1), n_jit[i]) for i in range(n_images)
                          if n_jit[i]]) if n_jit.sum() else np.zeros(0, np.int64)
    jit = g_box[src] + rng.normal(0, 1, (len(src), 4)) * np.repeat(g_box[src, 2:] * 0.15, 2, axis=1)
    jit[:, 2:] = np.maximum(jit[:, 2:], 1.0)
    j_cat = np.where(rng.random(len(src)) < 0.85, g_cat[src], rng.integers(0, n_classes, len(src)))
    n_bg = dets_per_image - n_jit
    bg_wh = np.exp(rng.uniform(np.log(8), np.log(300), (n_bg.sum(), 2)))
    bg = np.hstack([rng.uniform(0, 1, (n_bg.sum(), 2)) * (np.array([W, H]) - bg_wh), bg_wh])
    d_img = np.concatenate([g_img[src], np.repeat(np.arange(n_images), n_bg)])
    d_box = np.round(np.vstack([jit, bg]), 2)
    d_cat = np.concatenate([j_cat, rng.integers(0, n_classes, n_bg.sum())])
    score = np.round(np.concatenate([rng.uniform(0.2, 1.0, len(src)), rng.uniform(0.0, 0.7, n_bg.sum())]), 3)
    # (rounded to 3 digits: tied scores happen, as with real detectors)
    order = np.argsort(d_img, kind="stable")
    dets = [{"image_id": int(d_img[i]) + 1, "category_id": int(d_cat[i]) + 1, "bbox": d_box[i].tolist(),
             "score": float(score[i])} for i in order]
    return {"images": images, "annotations": anns, "categories": cats}, dets


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_tool(tool: str, n_images: int, seed: int) -> dict:
    """Build the data, evaluate with ``tool``; time, stats and memory as a dict."""
    gt_dict, dets = make_data(n_images, seed=seed)
    if tool == "synthgap":
        from synthgap.metrics import evaluate
        base = _rss_mb()
        _reset_peak_rss()
        t0 = time.perf_counter()
        stats = list(evaluate(gt_dict, dets).stats.values())
        seconds = time.perf_counter() - t0
    else:
        if tool == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval as Eval
        else:
            from faster_coco_eval import COCO
            from faster_coco_eval import COCOeval_faster as Eval
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO()
            gt.dataset = gt_dict
            gt.createIndex()
            dt = gt.loadRes(dets)
            E = Eval(gt, dt, "bbox")
            base = _rss_mb()
            _reset_peak_rss()
            t0 = time.perf_counter()
            E.evaluate()
            E.accumulate()
            E.summarize()
            seconds = time.perf_counter() - t0
        stats = [float(x) for x in E.stats[:12]]
    return {"tool": tool, "seconds": seconds, "stats": stats, "rss_before_mb": base,
            "peak_rss_mb": _peak_rss_mb(), "n_dets": len(dets), "n_gt": len(gt_dict["annotations"])}


def run_in_children(script: str, tools: list[str], images: int, seed: int) -> dict[str, dict]:
    """Run ``script --child TOOL`` once per tool, each in a fresh process (so peak RSS and imports do not
    mix), and collect the JSON each prints last; a failed tool is reported and left out."""
    results = {}
    for tool in tools:
        out = subprocess.run([sys.executable, os.path.abspath(script), "--child", tool, "--images", str(images),
                              "--seed", str(seed)], capture_output=True, text=True)
        if out.returncode:
            print(f"{tool}: failed\n{out.stderr[-2000:]}")
            continue
        results[tool] = json.loads(out.stdout.strip().splitlines()[-1])
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_tool(args.child, args.images, args.seed)))
        return
    results = run_in_children(__file__, args.tools.split(","), args.images, args.seed)
    if not results:
        sys.exit(1)
    any_r = next(iter(results.values()))
    print(f"{args.images} images, {any_r['n_gt']} GT boxes, {any_r['n_dets']} detections, 80 classes, seed {args.seed}")
    ref = results.get("pycocotools")
    print(f"{'tool':<18}{'seconds':>9}{'x pycoco':>10}{'peak RSS MB':>13}{'(+ over base)':>15}  stats max |diff|")
    for tool, r in results.items():
        ratio = r["seconds"] / ref["seconds"] if ref else float("nan")
        diff = max(abs(a - b) for a, b in zip(r["stats"], ref["stats"])) if ref else float("nan")
        print(f"{tool:<18}{r['seconds']:>9.2f}{ratio:>10.3f}{r['peak_rss_mb']:>13.0f}"
              f"{r['peak_rss_mb'] - r['rss_before_mb']:>15.0f}  {diff:.2e}")
    if "synthgap" in results and "faster-coco-eval" in results:
        ratio = results["synthgap"]["seconds"] / results["faster-coco-eval"]["seconds"]
        print(f"synthgap / faster-coco-eval time: {ratio:.2f}")
    if ref and "synthgap" in results:
        names = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
        print("stats (synthgap): " + ", ".join(f"{n}={v:.4f}" for n, v in zip(names, results["synthgap"]["stats"])))
        ok = max(abs(a - b) for a, b in zip(results["synthgap"]["stats"], ref["stats"])) <= 1e-12
        print("synthgap stats identical to pycocotools (<= 1e-12):", ok)


if __name__ == "__main__":
    main()
