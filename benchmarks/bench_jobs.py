"""Training throughput of the demo's model: one process with N torch threads vs N one-thread processes
side by side (what `study.jobs` does with seeds). Prints images/s of each and the ratio.

Data: `synthgap generate` frames at the demo's size (160x120, 15-25 objects, 6 classes), made once in
``--data``. The model is cpu_small with the demo's overrides; each process times ``--steps`` training
steps of batch 8 after 2 warm-up steps.

    .venv/bin/python benchmarks/bench_jobs.py --data /tmp/bench-jobs
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

DEMO = ["data.image_size=[160,120]", "model.min_size=120", "model.max_size=160", "model.anchor_sizes=[12,20,32]"]


def train_rate(data: str, threads: int, steps: int) -> float:
    """Images/s of ``steps`` training steps (batch 8) in this process with ``threads`` torch threads."""
    import torch

    torch.set_num_threads(threads)
    from synthgap.config import load_config
    from synthgap.data import open_dataset
    from synthgap.data.torch_dataset import TorchDetectionDataset, collate_detection
    from synthgap.models import build_model, num_classes_for
    from synthgap.train import build_optimizer

    cfg = load_config("cpu_small", DEMO)
    ds = open_dataset(data)
    torch.manual_seed(0)
    model = build_model(cfg.model, num_classes_for(ds.label_map)).train()
    items = TorchDetectionDataset(ds, image_size=tuple(cfg.data.image_size))
    batches = [collate_detection([items[(b * 8 + i) % len(items)] for i in range(8)]) for b in range(steps + 2)]
    optimizer = build_optimizer(cfg.optimizer, model.parameters())
    for k, (images, targets) in enumerate(batches):
        if k == 2:
            t = time.perf_counter()
        loss = sum(model(list(images), list(targets)).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return 8 * steps / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder for the generated frames (made once)")
    p.add_argument("--processes", type=int, default=2, help="N: cores to share")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)  # threads of a measuring child
    args = p.parse_args()
    if args.child:
        print(train_rate(args.data, args.child, args.steps), flush=True)
        return
    if not os.path.exists(os.path.join(args.data, "annotations.json")):
        from synthgap.generate import default_class_names, generate

        generate(args.data, 96, format="coco", seed=0, width=160, height=120, classes=default_class_names()[:6],
                 progress=False)

    def run(n: int, threads: int) -> list[float]:
        cmd = [sys.executable, __file__, "--data", args.data, "--steps", str(args.steps), "--child", str(threads)]
        children = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(n)]
        return [float(c.communicate()[0].strip().splitlines()[-1]) for c in children]

    (one,) = run(1, args.processes)
    side = run(args.processes, 1)
    print(f"1 process x {args.processes} threads: {one:.1f} images/s")
    print(f"{args.processes} processes x 1 thread side by side: {' + '.join(f'{r:.1f}' for r in side)} "
          f"= {sum(side):.1f} images/s")
    print(f"ratio (side by side / one process): {sum(side) / one:.2f}x")


if __name__ == "__main__":
    main()
