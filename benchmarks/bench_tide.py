"""TIDE error breakdown: synthgap (`synthgap.metrics.tide`) vs tidecv 1.0.1, on bench_cocoeval's seeded set.

    .venv/bin/python benchmarks/bench_tide.py                  # 5,000 images / 500k detections (tidecv: minutes)
    .venv/bin/python benchmarks/bench_tide.py --images 500     # quick

Each tool runs in its own subprocess on the same data (`bench_cocoeval.make_data`: 80 classes, Poisson 7 GT
boxes and 100 detections per image, 1 % crowd boxes, scores rounded to 3 digits so ties occur). Timed: the
whole breakdown from in-memory COCO records -- synthgap: arrays from the records + `evaluate_errors`;
tidecv: its `Data` objects filled from the same records (as its COCO loader does: crowd boxes as ignore
regions) + `evaluate` + the main and special dAPs. Numbers (AP, 6 dAP, 2 special, counts) are compared.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_cocoeval import make_data, run_in_children  # noqa: E402

TOOLS = ("tidecv", "synthgap")
NAMES = {"cls": "Cls", "loc": "Loc", "both": "Both", "dupe": "Dupe", "bkg": "Bkg", "miss": "Miss"}


def run_tool(tool: str, n_images: int, seed: int) -> dict:
    gt_dict, dets = make_data(n_images, seed=seed)
    if tool == "synthgap":
        from synthgap.metrics import detections_from_records, load_ground_truth
        from synthgap.metrics.tide import evaluate_errors

        t0 = time.perf_counter()
        gt = load_ground_truth(gt_dict)
        r = evaluate_errors(gt, detections_from_records(dets, gt))
        seconds = time.perf_counter() - t0
        numbers = {"ap": r.ap, **r.dap, **r.special}
        counts = r.counts
    else:
        from tidecv import TIDE, Data

        t0 = time.perf_counter()
        g, p = Data("gt"), Data("pred")
        for img in sorted(i["id"] for i in gt_dict["images"]):
            g.add_image(img, str(img))
        for a in sorted(gt_dict["annotations"], key=lambda a: a["image_id"]):
            if a["iscrowd"]:
                g.add_ignore_region(a["image_id"], a["category_id"], a["bbox"])
            else:
                g.add_ground_truth(a["image_id"], a["category_id"], a["bbox"])
        for d in dets:
            p.add_detection(d["image_id"], d["category_id"], d["score"], d["bbox"])
        tide = TIDE()
        run = tide.evaluate(g, p, mode=TIDE.BOX)
        with contextlib.redirect_stdout(io.StringIO()):
            errors = tide.get_all_errors()
        seconds = time.perf_counter() - t0
        main, special = errors["main"]["pred"], errors["special"]["pred"]
        numbers = {"ap": run.ap / 100, **{k: main[v] / 100 for k, v in NAMES.items()},
                   "false_pos": special["FalsePos"] / 100, "false_neg": special["FalseNeg"] / 100}
        c = {e.short_name: n for e, n in run.count_errors().items()}
        counts = {k: c[v] for k, v in NAMES.items()}
    return {"tool": tool, "seconds": seconds, "numbers": numbers, "counts": counts, "n_dets": len(dets),
            "n_gt": len(gt_dict["annotations"])}


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
    print(f"{args.images} images, {any_r['n_gt']} GT boxes, {any_r['n_dets']} detections, seed {args.seed}")
    for tool, r in results.items():
        nums = ", ".join(f"{k}={100 * v:.3f}" for k, v in r["numbers"].items())
        print(f"{tool:<10}{r['seconds']:>9.2f} s   {nums}   counts {r['counts']}")
    if len(results) == 2:
        a, b = results["synthgap"], results["tidecv"]
        diff = max(abs(a["numbers"][k] - b["numbers"][k]) for k in a["numbers"])
        print(f"tidecv / synthgap time: {b['seconds'] / a['seconds']:.1f}x; max |diff| of AP and dAPs "
              f"{diff:.1e}; counts equal: {a['counts'] == b['counts']}")


if __name__ == "__main__":
    main()
