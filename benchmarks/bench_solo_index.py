"""SOLO streaming reader vs pysolotools: open + iterate a large SOLO dataset, time and memory.

    .venv/bin/python benchmarks/bench_solo_index.py              # 100k frames (generated once, cached)
    .venv/bin/python benchmarks/bench_solo_index.py --frames 2000

The dataset (JSON only; every frame's image is a symlink to one tiny PNG; 5-10 boxes per frame) is
cached under the temp dir. Each contender runs in its own subprocess so memory figures are its own:

* synthgap: ``open_dataset(root)`` (index build, validation included) + ``for s in ds`` (parses each
  frame again). Resident memory: RSS after opening minus RSS before (psutil), peak RSS delta
  (getrusage), and the Python heap held by the index (tracemalloc, in a separate run).
* pysolotools (``pip install --no-deps pysolotools`` + pandas, dataclasses-json): ``Solo(root).frames()``
  iterated fully. If it cannot be imported, a plain ``json.load`` loop over the frame files stands in.

Goal: >= 10x faster than pysolotools and <= 1 KB resident per frame.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time

LABELS = {i: f"class_{i}" for i in range(1, 64)}
SIZE = (64, 48)


# --- dataset generation (plain file writes: the point is a big dataset, made fast) ---------------

def frame_json(index: int, rng: random.Random) -> str:
    w, h = SIZE
    values = []
    for k in range(rng.randint(5, 10)):
        x, y = rng.randint(0, w - 10), rng.randint(0, h - 10)
        label = rng.randint(1, 63)
        size = [float(rng.randint(1, w - x)), float(rng.randint(1, h - y))]
        values.append({"instanceId": k + 1, "labelId": label, "labelName": LABELS[label],
                       "origin": [float(x), float(y)], "dimension": size})
    frame = {
        "frame": index, "sequence": index, "step": 0, "timestamp": 0.0, "metrics": [],
        "captures": [{
            "@type": "type.unity.com/unity.solo.RGBCamera", "id": "camera", "description": "bench camera",
            "position": [0.0, 0.0, 0.0], "rotation": [0.0, 0.0, 0.0, 1.0], "velocity": [0.0, 0.0, 0.0],
            "acceleration": [0.0, 0.0, 0.0], "filename": "step0.camera.png", "imageFormat": "Png",
            "dimension": [float(w), float(h)], "projection": "Perspective",
            "matrix": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            "annotations": [{"@type": "type.unity.com/unity.solo.BoundingBox2DAnnotation", "id": "bounding box",
                             "sensorId": "camera", "description": "2D boxes", "values": values}],
        }],
    }
    return json.dumps(frame, indent=2)


def generate(root: str, frames: int) -> None:
    """Write ``frames`` single-step sequences under ``root`` (skipped when already complete)."""
    done = os.path.join(root, ".complete")
    if os.path.exists(done):
        return
    from PIL import Image

    os.makedirs(root, exist_ok=True)
    png = os.path.join(root, "shared.png")
    buf = io.BytesIO()
    Image.new("RGB", SIZE, (90, 120, 30)).save(buf, format="PNG")
    with open(png, "wb") as f:
        f.write(buf.getvalue())
    spec = [{"label_id": k, "label_name": v} for k, v in LABELS.items()]
    with open(os.path.join(root, "annotation_definitions.json"), "w") as f:
        json.dump({"annotationDefinitions": [{"@type": "type.unity.com/unity.solo.BoundingBox2DAnnotation",
                                              "id": "bounding box", "description": "2D boxes", "spec": spec}]}, f)
    with open(os.path.join(root, "metadata.json"), "w") as f:
        json.dump({"unityVersion": "bench", "perceptionVersion": "bench", "totalFrames": frames,
                   "totalSequences": frames, "sensors": ["camera"], "metricCollectors": [], "annotators": [],
                   "scenarioActiveRandomizers": [], "simulationStartTime": "", "simulationEndTime": "",
                   "renderPipeline": "none", "scenarioRandomSeed": 0}, f)
    rng = random.Random(0)
    t = time.perf_counter()
    for i in range(frames):
        folder = os.path.join(root, f"sequence.{i}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "step0.frame_data.json"), "w") as f:
            f.write(frame_json(i, rng))
        image = os.path.join(folder, "step0.camera.png")
        if not os.path.lexists(image):
            os.symlink(os.path.join("..", "shared.png"), image)
    open(done, "w").close()
    print(f"generated {frames} frames in {time.perf_counter() - t:.1f} s at {root}", flush=True)


# --- workers (each in its own process) ---------------------------------------------------------

def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def worker_synthgap(root: str) -> dict:
    from synthgap.io import storage
    from synthgap.data import open_dataset
    from synthgap.data.solo import SoloDataset

    SoloDataset.detect(root), storage.read_bytes(os.path.join(root, "metadata.json"))  # warm imports up
    rss0, peak0 = _rss(), _peak_rss()
    t0 = time.perf_counter()
    ds = open_dataset(root)
    t1 = time.perf_counter()
    rss_index = _rss()
    boxes = 0
    for sample in ds:
        boxes += len(sample)
    t2 = time.perf_counter()
    return {"frames": len(ds), "boxes": boxes, "open_s": t1 - t0, "iterate_s": t2 - t1, "total_s": t2 - t0,
            "rss_index_bytes": rss_index - rss0, "peak_rss_bytes": _peak_rss() - max(peak0, rss0)}


def worker_tracemalloc(root: str) -> dict:
    import tracemalloc

    from synthgap.data import open_dataset

    import synthgap.data.solo  # noqa: F401 - import cost is not index memory
    tracemalloc.start()
    ds = open_dataset(root)
    current, peak = tracemalloc.get_traced_memory()
    return {"frames": len(ds), "index_bytes": current, "index_peak_bytes": peak}


def worker_pysolotools(root: str, budget_s: float) -> dict:
    """Iterate pysolotools' frames; past ``budget_s`` stop and extrapolate linearly (each frame costs
    the same: pysolotools globs the root folder for every frame, whatever its position)."""
    import warnings

    warnings.simplefilter("ignore")
    try:
        from pysolotools.consumers import Solo
        from pysolotools.core.models import BoundingBox2DAnnotation
    except Exception as e:  # noqa: BLE001
        return worker_json_loop(root, reason=f"pysolotools cannot be imported: {type(e).__name__}: {e}")
    t0 = time.perf_counter()
    solo = Solo(root)
    frames = boxes = 0
    total = solo.get_metadata().totalFrames
    for frame in solo.frames():
        frames += 1
        for capture in frame.captures:
            for a in capture.annotations:
                if isinstance(a, BoundingBox2DAnnotation):
                    boxes += len(a.values)
        if time.perf_counter() - t0 > budget_s:
            break
    elapsed = time.perf_counter() - t0
    return {"peer": "pysolotools Solo(path).frames()", "frames": frames, "boxes": boxes, "complete": frames == total,
            "total_s": elapsed * total / frames, "measured_s": elapsed}


def worker_json_loop(root: str, reason: str = "") -> dict:
    import glob

    t0 = time.perf_counter()
    frames = boxes = 0
    for path in glob.glob(os.path.join(root, "sequence.*", "step*.frame_data.json")):
        with open(path) as f:
            doc = json.load(f)
        frames += 1
        for c in doc["captures"]:
            for a in c["annotations"]:
                if a["@type"].endswith("BoundingBox2DAnnotation"):
                    boxes += len(a["values"])
    return {"peer": f"plain json.load loop{' (' + reason + ')' if reason else ''}", "frames": frames,
            "boxes": boxes, "total_s": time.perf_counter() - t0}


WORKERS = {"synthgap": worker_synthgap, "tracemalloc": worker_tracemalloc, "pysolotools": worker_pysolotools,
           "json": worker_json_loop}


def run_worker(name: str, root: str, budget_s: float = 0.0) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", name, "--root", root,
                          "--peer-budget", str(budget_s)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "synthgap-bench-solo"))
    parser.add_argument("--peer-budget", type=float, default=600.0,
                        help="seconds pysolotools may run; past them its time is extrapolated (default 600)")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        fn = WORKERS[args.worker]
        print(json.dumps(fn(args.root, args.peer_budget) if fn is worker_pysolotools else fn(args.root)))
        return
    root = os.path.join(args.cache, f"frames-{args.frames}")
    generate(root, args.frames)
    ours = run_worker("synthgap", root)
    heap = run_worker("tracemalloc", root)
    peer = run_worker("pysolotools", root, args.peer_budget)
    json_loop = run_worker("json", root)
    n = ours["frames"]
    assert n == args.frames == heap["frames"] == json_loop["frames"], (n, heap["frames"], json_loop["frames"])
    assert ours["boxes"] == json_loop["boxes"], (ours["boxes"], json_loop["boxes"])
    if peer.get("complete", True):
        assert peer["frames"] == n and peer["boxes"] == ours["boxes"], (peer["frames"], peer["boxes"])
    print(f"SOLO dataset: {n} frames, {ours['boxes']} boxes ({root})")
    print(f"synthgap open (index + validation): {ours['open_s']:8.2f} s")
    print(f"synthgap iterate all samples:       {ours['iterate_s']:8.2f} s")
    print(f"synthgap open + iterate:            {ours['total_s']:8.2f} s  ({1e6 * ours['total_s'] / n:.0f} us/frame)")
    how = "" if peer.get("complete", True) else \
        f"  [extrapolated: {peer['frames']} frames in {peer['measured_s']:.0f} s, budget --peer-budget]"
    print(f"{peer['peer']}: {peer['total_s']:8.2f} s  ({1e6 * peer['total_s'] / n:.0f} us/frame){how}")
    print(f"plain glob + json.load loop:        {json_loop['total_s']:8.2f} s  (no Sample, no validation)")
    print(f"speed-up vs peer: {peer['total_s'] / ours['total_s']:.1f}x  (goal >= 10x)")
    print(f"RSS after open - before: {ours['rss_index_bytes'] / n:7.0f} B/frame;  peak RSS delta: "
          f"{ours['peak_rss_bytes'] / n:7.0f} B/frame  (goal <= 1024)")
    print(f"index heap (tracemalloc): {heap['index_bytes'] / n:7.0f} B/frame held, "
          f"{heap['index_peak_bytes'] / n:7.0f} B/frame peak while indexing")


if __name__ == "__main__":
    main()
