"""What each pipeline step does, as plain functions that run the ``synthgap`` CLI.

The KFP components in `synthgap.pipelines.components` are thin wrappers that import this module
inside the step's container (or the local subprocess), so the logic here is ordinary Python that
can be tested without kfp. Every step runs ``python -m synthgap ...`` with the interpreter it runs
in, so the step uses the synthgap installed next to it (the image's, or the local venv's).
"""

from __future__ import annotations

import math
import shlex
import subprocess
import sys
import uuid
from typing import Optional, Sequence

from synthgap.io import storage
from synthgap.pipelines import SHM_SIZE


def run_synthgap(args: Sequence[str], launcher: Sequence[str] = ()) -> None:
    """Run ``python -m synthgap ARGS`` (or ``python -m LAUNCHER... -m synthgap ARGS``); raise on failure."""
    cmd = [sys.executable, "-m", *launcher, *(["-m"] if launcher else []), "synthgap", *args]
    print("+", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def dataset_root(folder: str) -> str:
    """The dataset inside a download folder: ``folder`` itself if a reader recognises it, else its
    only sub-folder, recursively (``v3.zip`` unpacks to ``OUTPUT/v3/``)."""
    from synthgap.data import DatasetError, detect_format

    try:
        detect_format(folder)
        return folder
    except DatasetError:
        children = [storage.join(folder, name) for name in storage.listdir(folder)]
        subdirs = [child for child in children if storage.isdir(child)]
        if len(subdirs) != 1:
            raise
        return dataset_root(subdirs[0])


def download(source_uri: str, output: str) -> str:
    """Fetch a dataset (archive or folder URI) into ``output``; returns the dataset's root folder."""
    run_synthgap(["download", "--source-uri", source_uri, "--output", output])
    return dataset_root(output)


def select_split(dataset: str, split: str, out: str) -> str:
    """One split of a UnityGroceries-Real folder as a COCO dataset in ``out``; ``dataset`` if no split.

    ``synthgap convert --split`` writes only ``out/annotations.json``, which references the images
    where they are (absolute paths on the shared volume), so a split costs no image copies.
    """
    if not split:
        return dataset
    run_synthgap(["convert", dataset, out, "--split", split])
    return out


def generate_shard(out: str, frames: int, seed: int, shard: int, num_shards: int, width: int = 640,
                   height: int = 480) -> str:
    """Render shard ``shard`` of ``num_shards`` of a ``frames``-frame SOLO dataset into ``out``.

    Shards keep global frame indices, so all shards of one plan write into the same folder side by side
    (``generate`` locks each shard, not the folder); a retried shard rewrites its own frames. A single
    shard replaces the folder (``--force``) so a retried step starts clean.
    """
    args = ["generate", "--out", out, "--frames", str(frames), "--format", "solo", "--seed", str(seed),
            "--shard", f"{shard}/{num_shards}", "--width", str(width), "--height", str(height), "--quiet"]
    run_synthgap(args + (["--force"] if num_shards == 1 else []))
    return out


def train_args(*, config: str, train_data: str, val_data: str, checkpoint_dir: str, tb_log_dir: str,
               checkpoint_file: str = "", overrides: Sequence[str] = (), num_gpus: int = 0,
               resume: bool = False) -> list[str]:
    """The ``synthgap train`` arguments; ``num_gpus == 0`` adds ``--no-cuda``. The run's summary goes to
    ``CHECKPOINT_DIR/summary.json`` (shared storage: a PyTorchJob's rank 0 writes it, the step reads it).
    ``resume`` (a retried step, `is_retry`): ``--resume`` continues the earlier attempt from
    ``CHECKPOINT_DIR``'s last checkpoint, and ``checkpoint_file`` (the initial weights) is not passed again."""
    args = ["train", "--config", config, "--train-data", train_data, "--val-data", val_data,
            "--checkpoint-dir", checkpoint_dir, "--tb-log-dir", tb_log_dir,
            "--output", storage.join(checkpoint_dir, SUMMARY_NAME)]
    if resume:
        args.append("--resume")
    elif checkpoint_file:
        args += ["--checkpoint-file", checkpoint_file]
    for override in overrides:
        args += ["--override", override]
    if num_gpus == 0:
        args.append("--no-cuda")
    return args


def is_retry(checkpoint_dir: str) -> bool:
    """True when an earlier attempt of this step left a last checkpoint in ``checkpoint_dir`` (Kubeflow
    retries a failed step with the same arguments): the step then resumes it instead of meeting
    ``synthgap train``'s refusal to mix two runs in one folder."""
    from synthgap.models.checkpoint import checkpoint_name

    return storage.exists(storage.join(checkpoint_dir, checkpoint_name("last")))


SUMMARY_NAME = "summary.json"
PROTOCOLS = ("coco", "unity")


def _finite(values: dict) -> dict[str, float]:
    """Numbers only, finite only: a KFP Metrics artifact holds plain floats."""
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def training_metrics(checkpoint_dir: str) -> dict[str, float]:
    """What the train step shows in the KFP UI: the last validation's COCO stats (``val_AP``...), the best
    validation AP, epochs, steps and images/s, from the summary `train_args` asks for."""
    summary = storage.read_json(storage.join(checkpoint_dir, SUMMARY_NAME))
    out = {f"val_{k}": v for k, v in _finite(summary.get("metrics") or {}).items()}
    out.update(_finite({"best_val_AP": summary.get("best_ap"), "epochs": summary.get("epochs"),
                        "steps": summary.get("steps"), "images_per_s": summary.get("images_per_s")}))
    return out


def evaluation_metrics(output: str) -> dict[str, float]:
    """The evaluate step's KFP metrics: ``coco_<stat>`` (the 12 COCO stats) and ``unity_<stat>`` (the
    datasetinsights ones) from ``metrics_<protocol>.json`` in ``output``."""
    out: dict[str, float] = {}
    for protocol in PROTOCOLS:
        uri = storage.join(output, f"metrics_{protocol}.json")
        if storage.exists(uri):
            out.update({f"{protocol}_{k}": v for k, v in _finite(storage.read_json(uri)["stats"]).items()})
    return out


def evaluation_markdown(output: str, checkpoint_file: str = "", test_data: str = "") -> str:
    """A Markdown summary of an evaluation (KFP's Markdown visualization): each protocol's stats and its
    per-class table as written to ``per_class_<protocol>.txt``."""
    lines = ["# synthgap evaluation", ""]
    if checkpoint_file or test_data:
        lines += [f"checkpoint `{checkpoint_file}` on `{test_data}`; files in `{output}`", ""]
    for protocol in PROTOCOLS:
        uri = storage.join(output, f"metrics_{protocol}.json")
        if not storage.exists(uri):
            continue
        stats = _finite(storage.read_json(uri)["stats"])
        lines += [f"## {protocol}", "", "| " + " | ".join(stats) + " |", "|" + "---|" * len(stats),
                  "| " + " | ".join(f"{v:.4f}" for v in stats.values()) + " |", ""]
        table = storage.join(output, f"per_class_{protocol}.txt")
        if storage.exists(table):
            lines += ["```", storage.read_text(table).rstrip("\n"), "```", ""]
    return "\n".join(lines)


def evaluation_report(output: str, test_data: str, html_path: str) -> None:
    """``synthgap report`` of the evaluation folder (metrics, PR curves, a gallery) as one HTML file."""
    run_synthgap(["report", output, "--test-data", test_data, "--out", html_path, "--gallery-images", "4"])


def trained_checkpoint(checkpoint_dir: str) -> str:
    """``FasterRCNN.best.estimator`` (best validation AP) if training wrote one, else ``.last.``."""
    from synthgap.models.checkpoint import checkpoint_name

    for tag in ("best", "last"):
        uri = storage.join(checkpoint_dir, checkpoint_name(tag))
        if storage.exists(uri):
            return uri
    raise FileNotFoundError(f"{checkpoint_dir}: training wrote no {checkpoint_name('last')}")


def pod_launcher(num_gpus: int) -> list[str]:
    """``torch.distributed.run`` (torchrun) arguments for one process per GPU of this pod; [] for <= 1 GPU."""
    return ["torch.distributed.run", "--standalone", f"--nproc-per-node={num_gpus}"] if num_gpus > 1 else []


def train(*, config: str, train_data: str, val_data: str, checkpoint_dir: str, tb_log_dir: str,
          checkpoint_file: str = "", overrides: Sequence[str] = (), num_gpus: int = 0) -> str:
    """Train in this pod: one process, or ``torchrun`` with one process per GPU when ``num_gpus > 1``.

    Returns the URI of the best (else last) checkpoint written.
    """
    args = train_args(config=config, train_data=train_data, val_data=val_data, checkpoint_dir=checkpoint_dir,
                      tb_log_dir=tb_log_dir, checkpoint_file=checkpoint_file, overrides=overrides,
                      num_gpus=num_gpus, resume=is_retry(checkpoint_dir))
    run_synthgap(args, pod_launcher(num_gpus))
    return trained_checkpoint(checkpoint_dir)


def train_pytorchjob(*, image: str, config: str, train_data: str, val_data: str, checkpoint_dir: str,
                     tb_log_dir: str, checkpoint_file: str = "", overrides: Sequence[str] = (),
                     num_workers: int = 2, num_gpus: int = 0, pvc_name: str = "", mount_path: str = "/data",
                     memory_limit: str = "", namespace: Optional[str] = None) -> str:
    """Train on ``num_workers`` pods through a Training Operator PyTorchJob; wait; return the last checkpoint.

    ``checkpoint_dir`` must be shared storage (a bucket URI, or a path on the shared volume): it is
    read here after the job's pods wrote it.
    """
    from synthgap.pipelines import pytorchjob

    args = train_args(config=config, train_data=train_data, val_data=val_data, checkpoint_dir=checkpoint_dir,
                      tb_log_dir=tb_log_dir, checkpoint_file=checkpoint_file, overrides=overrides,
                      num_gpus=num_gpus, resume=is_retry(checkpoint_dir))[1:]  # drop "train": train_command() adds it
    manifest = pytorchjob.pytorchjob_manifest(
        name=pytorchjob.job_name("synthgap-train", uuid.uuid4().hex[:8]), image=image, train_args=args,
        num_workers=num_workers, gpus_per_worker=num_gpus, pvc_name=pvc_name or None, mount_path=mount_path,
        namespace=namespace, memory_limit=memory_limit or None, shm_size=SHM_SIZE)
    pytorchjob.run_pytorchjob(manifest, namespace=namespace)
    return trained_checkpoint(checkpoint_dir)


def evaluate(*, config: str, checkpoint_file: str, test_data: str, output: str, tb_log_dir: str,
             overrides: Sequence[str] = (), num_gpus: int = 0) -> str:
    """Evaluate a checkpoint on a test set; ``output`` (folder) gets predictions.json and
    metrics_<protocol>.json. Returns ``output``."""
    args = ["evaluate", "--config", config, "--checkpoint-file", checkpoint_file, "--test-data", test_data,
            "--output", output, "--tb-log-dir", tb_log_dir]
    for override in overrides:
        args += ["--override", override]
    if num_gpus == 0:
        args.append("--no-cuda")
    run_synthgap(args)
    return output
