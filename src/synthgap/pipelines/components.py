"""The pipeline steps as KFP lightweight Python components.

Lightweight (not container) components because ``kfp.local``'s SubprocessRunner only runs those,
and the same pipeline must run locally and on a cluster. Each body only imports
`synthgap.pipelines.steps` and calls it: KFP ships the function's source to the pod, where the
image (`DEFAULT_IMAGE`, overridden per run by the pipelines' ``docker`` parameter) already has
synthgap and kfp installed, hence ``install_kfp_package=False`` (no pip at run time).

What the KFP UI shows: the train steps emit an ``Output[Metrics]`` (the last validation's COCO stats,
best validation AP, images/s); the evaluate step emits an ``Output[Metrics]`` (``coco_*``: the 12 COCO
stats, ``unity_*``: datasetinsights' metrics), an ``Output[Markdown]`` summary (stats and per-class
tables) and an ``Output[HTML]`` (``synthgap report`` of the evaluation) in the run's Visualizations.
"""

# No `from __future__ import annotations` here: kfp reads the type annotations as types.
from typing import List

from kfp import dsl
from kfp.dsl import HTML, Markdown, Metrics, Output

from synthgap.pipelines import DEFAULT_IMAGE

component = dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)


@component
def download(source_uri: str, output: str) -> str:
    """Download a dataset into the shared volume; returns the dataset's root folder."""
    from synthgap.pipelines import steps

    return steps.download(source_uri=source_uri, output=output)


@component
def select_split(dataset: str, split: str, out: str) -> str:
    """One split (train/val/test...) of a UnityGroceries-Real download; the dataset itself if split is ''."""
    from synthgap.pipelines import steps

    return steps.select_split(dataset=dataset, split=split, out=out)


@component
def shard_indices(num_shards: int) -> List[int]:
    """[0, 1, ..., num_shards - 1]: the items dsl.ParallelFor fans out over."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    return list(range(num_shards))


@component
def generate_shard(out: str, frames: int, seed: int, shard: int, num_shards: int, width: int, height: int) -> str:
    """Render one shard of a procedural SOLO dataset into ``out``; returns ``out``."""
    from synthgap.pipelines import steps

    return steps.generate_shard(out=out, frames=frames, seed=seed, shard=shard, num_shards=num_shards,
                                width=width, height=height)


@component
def gather_shards(shard_dirs: List[str]) -> str:
    """Join the ParallelFor fan-out: every shard wrote into one dataset folder, returned here."""
    folders = sorted(set(shard_dirs))
    if len(folders) != 1:
        raise ValueError(f"shards wrote to different folders: {folders}")
    return folders[0]


@component
def train(config: str, train_data: str, val_data: str, checkpoint_dir: str, tb_log_dir: str,
          checkpoint_file: str, overrides: List[str], num_gpus: int, metrics: Output[Metrics]) -> str:
    """Train in this pod (torchrun over its GPUs when num_gpus > 1); returns the best (else last) checkpoint."""
    from synthgap.pipelines import steps

    checkpoint = steps.train(config=config, train_data=train_data, val_data=val_data, checkpoint_dir=checkpoint_dir,
                             tb_log_dir=tb_log_dir, checkpoint_file=checkpoint_file, overrides=overrides,
                             num_gpus=num_gpus)
    for name, value in steps.training_metrics(checkpoint_dir).items():
        metrics.log_metric(name, value)
    return checkpoint


@component
def train_pytorchjob(image: str, config: str, train_data: str, val_data: str, checkpoint_dir: str,
                     tb_log_dir: str, checkpoint_file: str, overrides: List[str], num_workers: int,
                     num_gpus: int, pvc_name: str, mount_path: str, memory_limit: str,
                     metrics: Output[Metrics]) -> str:
    """Train on num_workers pods through a Training Operator PyTorchJob; returns the best/last checkpoint."""
    from synthgap.pipelines import steps

    checkpoint = steps.train_pytorchjob(image=image, config=config, train_data=train_data, val_data=val_data,
                                        checkpoint_dir=checkpoint_dir, tb_log_dir=tb_log_dir,
                                        checkpoint_file=checkpoint_file, overrides=overrides,
                                        num_workers=num_workers, num_gpus=num_gpus, pvc_name=pvc_name,
                                        mount_path=mount_path, memory_limit=memory_limit)
    for name, value in steps.training_metrics(checkpoint_dir).items():
        metrics.log_metric(name, value)
    return checkpoint


@component
def evaluate(config: str, checkpoint_file: str, test_data: str, output: str, tb_log_dir: str,
             overrides: List[str], num_gpus: int, metrics: Output[Metrics], summary: Output[Markdown],
             report: Output[HTML]) -> str:
    """Evaluate a checkpoint on a test set; returns the output folder (metrics_<protocol>.json)."""
    from synthgap.pipelines import steps

    done = steps.evaluate(config=config, checkpoint_file=checkpoint_file, test_data=test_data, output=output,
                          tb_log_dir=tb_log_dir, overrides=overrides, num_gpus=num_gpus)
    for name, value in steps.evaluation_metrics(done).items():
        metrics.log_metric(name, value)
    with open(summary.path, "w", encoding="utf-8") as f:
        f.write(steps.evaluation_markdown(done, checkpoint_file, test_data))
    steps.evaluation_report(done, test_data, report.path)
    return done
