"""Cut-and-paste generator speed (`synthgap generate --assets`), against the procedural generator as peer.

Single process, one thread. The catalog is the 83 real packshots of ../shared/real/snacks-catalog (read by
the Supervisely reader when synthgap has it, else decoded here from the Supervisely JSON); one class,
"product". For each layout (shelf, table, free), at 640x640 with the default randomizers:
  render          Compositor.render (layout, resize/recolour/rotate each cut-out, alpha blending, boxes
                  from the instance map, blur, noise)
  render+encode   plus the RGB PNG and the instance-map PNG the writers store
and the peer: the procedural Renderer (synthetic style, 18-22 slots) at the same size, render+encode.
Printed: frames/s (CPU time of this process) and the ratio to the peer. Usage:
  .venv/bin/python benchmarks/bench_paste.py [--frames 50] [--size 640x640] [--catalog PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from synthgap.data import Sample
from synthgap.data.masks import BitmapMask
from synthgap.data.png import encode_png
from synthgap.data.solo import instance_colors
from synthgap.generate import Compositor, PasteConfig, Renderer, SceneConfig, default_class_names
from synthgap.generate.assets import catalog_from_samples

CATALOG = Path(__file__).resolve().parents[2] / "shared" / "real" / "snacks-catalog" / "project"


def load(root: Path):
    """The packshot catalog as Samples with masks (+ label map)."""
    from synthgap.data import DatasetError, open_dataset

    try:
        ds = open_dataset(str(root), "supervisely")
        return list(ds), ds.label_map
    except DatasetError:  # no Supervisely reader in this tree yet: decode the documented JSON layout here
        samples = []
        for i, path in enumerate(sorted((root / "ds1" / "ann").glob("*.json"))):
            doc = json.loads(path.read_text())
            masks = [BitmapMask.from_supervisely(o["bitmap"]["data"], o["bitmap"]["origin"]) for o in doc["objects"]]
            boxes = [[*m.origin, m.local().shape[1], m.local().shape[0]] for m in masks]
            samples.append(Sample(image=str(root / "ds1" / "img" / path.name[:-5]), width=doc["size"]["width"],
                                  height=doc["size"]["height"], boxes=boxes, labels=[1] * len(masks), image_id=i,
                                  masks=tuple(masks)))
        return samples, {1: "product"}


def cpu_fps(render, frames: int, encode: bool) -> tuple[float, float]:
    """(frames/s of CPU time, boxes per frame)."""
    boxes = []
    c = time.process_time()
    for k in range(frames):
        rgb, inst, s = render(k)
        boxes.append(len(s))
        if encode:
            encode_png(rgb)
            encode_png(instance_colors(inst), photo=False)
    return frames / (time.process_time() - c), float(np.mean(boxes))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--size", default="640x640")
    ap.add_argument("--catalog", default=str(CATALOG))
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    t = time.process_time()
    samples, labels = load(Path(args.catalog))
    catalog = catalog_from_samples(samples, labels, source=args.catalog, single_class="product")
    print(f"catalog: {len(catalog)} cut-outs read and cropped in {time.process_time() - t:.1f} s CPU")

    peer = Renderer(default_class_names(), width=width, height=height, seed=0, config=SceneConfig(objects_per_frame=(18, 22)))
    peer_fps, peer_boxes = cpu_fps(lambda k: peer.render(k, args.frames), args.frames, True)
    print(f"{args.frames} frames {width}x{height}, one thread (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})")
    print(f"  peer: procedural render+encode {peer_fps:6.1f} frames/s ({peer_boxes:.1f} boxes/frame)")
    for layout in ("shelf", "table", "free"):
        c = Compositor(catalog, width=width, height=height, seed=0, config=PasteConfig(layout=layout))
        c.render(0)
        render, boxes = cpu_fps(c.render, args.frames, False)
        both, _ = cpu_fps(c.render, args.frames, True)
        print(f"  paste {layout:5s} {boxes:5.1f} boxes/frame: render {render:6.1f} frames/s, render+encode "
              f"{both:6.1f} frames/s (x{both / peer_fps:.2f} of the peer)")


if __name__ == "__main__":
    main()
