"""Training throughput of the demo's model: one process with N torch threads vs N one-thread processes
side by side (what `study.jobs` does with seeds). Prints images/s of each and the ratio.

Data: `synthgap generate` frames at the demo's size (160x120, 15-25 objects, 6 classes), made once in
``--data``. The model is the demo's (bench_recipes' ``gn_160x120_s8_cosine_roi32p50``); each process
reports the median of 3 rounds of ``--steps`` training steps of batch 8.

    .venv/bin/python benchmarks/bench_jobs.py --data /tmp/bench-jobs
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

# cpu_small at the demo's size (anchors scaled, 32 RoIs of which up to half objects, cosine): the recipe
# of that name in bench_recipes, whose round-robin timing loop measures it here
RECIPE = "gn_160x120_s8_cosine_roi32p50"


def train_rate(data: str, threads: int, steps: int) -> float:
    """Training images/s (batch 8, median of 3 rounds of ``steps`` steps) in this process with ``threads``
    torch threads."""
    import torch

    from bench_recipes import measure_speed

    torch.set_num_threads(threads)
    return measure_speed([RECIPE], data, steps, rounds=3)[RECIPE]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder for the generated frames (made once)")
    p.add_argument("--processes", type=int, default=2, help="N: cores to share")
    p.add_argument("--steps", type=int, default=4, help="training steps of batch 8 per round (3 rounds)")
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
