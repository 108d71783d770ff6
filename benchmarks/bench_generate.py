"""Generator speed against the goal figure: >= 25 frames/s per core at 640x480 with about 20 objects.

Single process. Three figures, each printed with its ratio to 25 frames/s:
  render          Renderer.render (layout, warps, occluders, boxes from the instance map, lights, noise)
  render+encode   plus the RGB file (PNG via synthgap.data.png, or JPEG for --style target) and an
                  instance-map PNG
  generate(solo)  the whole `synthgap.generate.generate` to a SOLO folder (writers, atomic fsync'd writes)
The "peer" is the goal figure (no other generator runs without Unity). Usage:
  .venv/bin/python benchmarks/bench_generate.py [--frames 100] [--style synthetic|target]
"""

from __future__ import annotations

import argparse
import io
import shutil
import tempfile
import time

import numpy as np
from PIL import Image

from synthgap.data.solo import instance_colors
from synthgap.generate import Renderer, SceneConfig, default_class_names, generate
from synthgap.data.png import encode_png

GOAL_FPS = 25.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--style", default="synthetic", choices=["synthetic", "target"])
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    args = ap.parse_args()
    config = SceneConfig(objects_per_frame=(18, 22))

    def encode_rgb(rgb: np.ndarray) -> bytes:  # what generate() writes: PNG (synthetic) or JPEG (target)
        if args.style == "synthetic":
            return encode_png(rgb)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=85)
        return buf.getvalue()

    t = time.perf_counter()
    r = Renderer(default_class_names(), width=args.width, height=args.height, seed=0, style=args.style, config=config)
    init = time.perf_counter() - t
    print(f"renderer init (63 classes, banks): {init:.2f} s")

    boxes = []
    t, c = time.perf_counter(), time.process_time()
    for k in range(args.frames):
        rgb, inst, s = r.render(k, args.frames)
        boxes.append(len(s))
    render = (args.frames / (time.perf_counter() - t), args.frames / (time.process_time() - c))

    t, c = time.perf_counter(), time.process_time()
    for k in range(args.frames):
        rgb, inst, s = r.render(k, args.frames)
        encode_rgb(rgb)
        encode_png(instance_colors(inst), photo=False)
    encode = (args.frames / (time.perf_counter() - t), args.frames / (time.process_time() - c))

    out = tempfile.mkdtemp(prefix="bench_generate_")
    try:
        t, c = time.perf_counter(), time.process_time()
        generate(out, args.frames, format="solo", seed=0, width=args.width, height=args.height,
                 style=args.style, config=config, progress=False)
        e2e = (args.frames / (time.perf_counter() - t), args.frames / (time.process_time() - c))
    finally:
        shutil.rmtree(out, ignore_errors=True)

    print(f"{args.frames} frames {args.width}x{args.height}, style {args.style}, "
          f"{np.mean(boxes):.1f} boxes/frame (18-22 slots, distractors p=0.2)")
    print("  (wall = elapsed time; cpu = this process's CPU time, the per-core figure on a shared machine;"
          " generate(solo) includes the renderer init and the writers' fsync'd files)")
    for name, (wall, cpu) in (("render", render), ("render+encode", encode), ("generate(solo)", e2e)):
        print(f"  {name:15s} wall {wall:6.1f} frames/s (x{wall / GOAL_FPS:.2f} of 25)   "
              f"cpu {cpu:6.1f} frames/s (x{cpu / GOAL_FPS:.2f} of 25)")


if __name__ == "__main__":
    main()
