"""The six pipelines: train on synthetic, train on real, fine-tune, generate-then-train, evaluate, and
train-then-evaluate (datasetinsights' ``train_and_evaluate_combined``).

Parameters follow datasetinsights' (``kubeflow/pipelines.py``): ``docker``,
``source_uri``, ``config``, ``tb_log_dir``, ``checkpoint_dir``, ``checkpoint_file``,
``volume_size``; plus ``num_workers`` and ``memory_limit``.

Each pipeline is built by `build(name, local=..., gpus=...)`:

* ``local=False`` (what ``synthgap pipelines compile`` writes) creates a PersistentVolumeClaim of
  ``volume_size`` (kfp-kubernetes ``CreatePVC``), mounts it at ``/data`` in every step, deletes
  it at the end, and gives the train/evaluate steps ``gpus`` ``nvidia.com/gpu`` (a constant in the
  compiled YAML: KFP v2 backends that do not resolve a run-time accelerator count start the pod
  without GPUs), a memory-backed ``/dev/shm`` (DataLoader workers die in the default 64 MB) and
  ``memory_limit``.
* ``local=True`` leaves those out: ``kfp.local``'s SubprocessRunner runs only Python components
  (CreatePVC is a container stub) and cannot resolve runtime resource values; ``data_dir`` then
  names a local folder and ``gpus`` defaults to 0. Both variants have the same steps and parameters.

``num_workers > 1`` trains through a Training Operator PyTorchJob (`synthgap.pipelines.pytorchjob`);
otherwise the train step trains in its own pod, with ``torchrun`` over the pod's GPUs when
``gpus > 1``.
"""

# No `from __future__ import annotations` here: kfp reads the type annotations as types.
from typing import Callable, List

from kfp import dsl

from synthgap.pipelines import DATA_PATH, DEFAULT_GPUS, DEFAULT_IMAGE, PIPELINE_NAMES, SHM_SIZE
from synthgap.pipelines import components as c

# datasetinsights' public datasets and model (its GCS bucket).
SYNTHDET_SAMPLE_URI = "https://storage.googleapis.com/datasetinsights/data/synthetic/SynthDet.zip"
GROCERIES_REAL_URI = "https://storage.googleapis.com/datasetinsights/data/groceries/v3.zip"
SYNTHETIC_MODEL_URI = "https://storage.googleapis.com/datasetinsights/models/Synthetic/FasterRCNN.estimator"
TB_LOG_DIR = "gs://<bucket>/runs/yyyymmdd-hhmm"
CHECKPOINT_DIR = "gs://<bucket>/checkpoints/yyyymmdd-hhmm"
EVAL_DIR = "gs://<bucket>/evaluation/yyyymmdd-hhmm"  # predictions.json, metrics_<protocol>.json
GPU_RESOURCE = "nvidia.com/gpu"


class _Cluster:
    """Cluster-only parts of a pipeline: the data PVC and the steps' images and resources.

    With ``local=True`` all of it is skipped (kfp.local runs every step in this Python).
    """

    def __init__(self, *, local: bool, docker, volume_size, storage_class, access_modes):
        self.local = local
        self.docker = docker
        self.pvc = None
        if not local:
            from kfp import kubernetes

            self.pvc = kubernetes.CreatePVC(pvc_name_suffix="-synthgap-data", access_modes=access_modes,
                                            size=volume_size, storage_class_name=storage_class)
            self.pvc.set_display_name("create-volume")

    @property
    def pvc_name(self):
        return "" if self.pvc is None else self.pvc.outputs["name"]

    def place(self, task: dsl.PipelineTask, name: str, *, gpus: int = 0, memory_limit=None,
              shm: bool = False) -> dsl.PipelineTask:
        """Name ``task`` and run it in the ``docker`` image with the PVC at /data (and ``gpus`` GPUs, a constant;
        memory; a memory-backed /dev/shm)."""
        task.set_caching_options(False)  # steps write to the volume and to URIs: re-running must redo them
        if self.local:  # kfp.local ignores names and images (and warns about them)
            return task
        from kfp import kubernetes

        task.set_display_name(name)
        task.set_container_image(self.docker)
        kubernetes.mount_pvc(task, pvc_name=self.pvc_name, mount_path=DATA_PATH)
        if gpus:
            task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(gpus)
        if shm:
            kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory",
                                       size_limit=SHM_SIZE)
        if memory_limit is not None:
            task.set_memory_request(memory_limit).set_memory_limit(memory_limit)
        return task

    def cleanup(self, *last: dsl.PipelineTask) -> None:
        """Delete the PVC once ``last`` finished (successfully: a failed run keeps its data to inspect)."""
        if self.pvc is None:
            return
        from kfp import kubernetes

        kubernetes.DeletePVC(pvc_name=self.pvc_name).after(*last).set_display_name("delete-volume")


def _train(cluster: _Cluster, *, config, train_data, val_data, checkpoint_dir, tb_log_dir, checkpoint_file,
           overrides, num_gpus, num_workers, memory_limit):
    """Train in this pod (num_workers == 1) or through a PyTorchJob; returns the checkpoint channel."""
    common = dict(config=config, train_data=train_data, val_data=val_data, checkpoint_dir=checkpoint_dir,
                  tb_log_dir=tb_log_dir, checkpoint_file=checkpoint_file, overrides=overrides, num_gpus=num_gpus)
    with dsl.If(num_workers > 1, name="multi-node"):
        job = c.train_pytorchjob(image=cluster.docker, num_workers=num_workers, pvc_name=cluster.pvc_name,
                                 mount_path=DATA_PATH, memory_limit=memory_limit, **common)
        cluster.place(job, "train-pytorchjob")  # the job's own pods get the GPUs and /dev/shm
    with dsl.Else(name="single-pod"):
        one = c.train(**common)
        cluster.place(one, "train", gpus=num_gpus, memory_limit=memory_limit, shm=True)
    return dsl.OneOf(job.outputs["Output"], one.outputs["Output"]), (job, one)


def _download(cluster: _Cluster, source_uri, output) -> dsl.PipelineTask:
    task = c.download(source_uri=source_uri, output=output)
    return cluster.place(task, "download")


def _split(cluster: _Cluster, dataset, split, out, name: str) -> dsl.PipelineTask:
    task = c.select_split(dataset=dataset, split=split, out=out)
    return cluster.place(task, name)


def _train_on_download(name: str, description: str, *, config: str, checkpoint_file: str, gpus: int,
                       source_uri: str, splits: tuple[str, str], local: bool):
    """datasetinsights' train pipelines: download one dataset, train on it (from ``checkpoint_file`` if set).

    ``splits``: default (train, val) split names of a UnityGroceries-Real download; empty strings
    train and validate on the whole download, as datasetinsights did for synthetic data.
    """
    default_source, default_config, default_checkpoint = source_uri, config, checkpoint_file
    default_train_split, default_val_split = splits

    def train_pipeline(
        docker: str = DEFAULT_IMAGE,
        source_uri: str = default_source,
        config: str = default_config,
        checkpoint_file: str = default_checkpoint,
        tb_log_dir: str = TB_LOG_DIR,
        checkpoint_dir: str = CHECKPOINT_DIR,
        train_split: str = default_train_split,
        val_split: str = default_val_split,
        volume_size: str = "100Gi",
        storage_class: str = "standard",
        volume_access_modes: List[str] = ["ReadWriteOnce"],
        num_workers: int = 1,
        memory_limit: str = "64Gi",
        overrides: List[str] = [],
        data_dir: str = DATA_PATH,
    ) -> str:
        cluster = _Cluster(local=local, docker=docker, volume_size=volume_size, storage_class=storage_class,
                           access_modes=volume_access_modes)
        download = _download(cluster, source_uri, f"{data_dir}/download")
        train = _split(cluster, download.output, train_split, f"{data_dir}/splits/train", "train-split")
        val = _split(cluster, download.output, val_split, f"{data_dir}/splits/val", "val-split")
        checkpoint, tasks = _train(cluster, config=config, train_data=train.output, val_data=val.output,
                                   checkpoint_dir=checkpoint_dir, tb_log_dir=tb_log_dir,
                                   checkpoint_file=checkpoint_file, overrides=overrides, num_gpus=gpus,
                                   num_workers=num_workers, memory_limit=memory_limit)
        cluster.cleanup(*tasks)
        return checkpoint

    train_pipeline.__name__ = name
    return dsl.pipeline(name=name.replace("_", "-"), description=f"{description} ({_gpu_text(gpus)})")(
        train_pipeline)


def _gpu_text(gpus: int) -> str:
    return f"{gpus} GPU(s) per training pod, set when compiled" if gpus else "CPU only, set when compiled"


def _generate_and_train(local: bool, gpus: int):
    def generate_and_train(
        docker: str = DEFAULT_IMAGE,
        config: str = "synthetic",
        frames: int = 10000,
        val_frames: int = 500,
        num_shards: int = 8,
        seed: int = 0,
        val_seed: int = 1,
        width: int = 640,
        height: int = 480,
        tb_log_dir: str = TB_LOG_DIR,
        checkpoint_dir: str = CHECKPOINT_DIR,
        volume_size: str = "100Gi",
        storage_class: str = "standard",
        volume_access_modes: List[str] = ["ReadWriteOnce"],
        num_workers: int = 1,
        memory_limit: str = "64Gi",
        overrides: List[str] = [],
        data_dir: str = DATA_PATH,
    ) -> str:
        cluster = _Cluster(local=local, docker=docker, volume_size=volume_size, storage_class=storage_class,
                           access_modes=volume_access_modes)
        shards = cluster.place(c.shard_indices(num_shards=num_shards), "shards")
        with dsl.ParallelFor(shards.output, name="generate-shards") as shard:
            part = c.generate_shard(out=f"{data_dir}/synthetic-train", frames=frames, seed=seed, shard=shard,
                                    num_shards=num_shards, width=width, height=height)
            cluster.place(part, "generate-train-shard")
        train_data = cluster.place(c.gather_shards(shard_dirs=dsl.Collected(part.output)), "gather-shards")
        val = c.generate_shard(out=f"{data_dir}/synthetic-val", frames=val_frames, seed=val_seed, shard=0,
                               num_shards=1, width=width, height=height)
        cluster.place(val, "generate-val")
        checkpoint, tasks = _train(cluster, config=config, train_data=train_data.output, val_data=val.output,
                                   checkpoint_dir=checkpoint_dir, tb_log_dir=tb_log_dir, checkpoint_file="",
                                   overrides=overrides, num_gpus=gpus, num_workers=num_workers,
                                   memory_limit=memory_limit)
        cluster.cleanup(*tasks)
        return checkpoint

    return dsl.pipeline(name="generate-and-train",
                        description=f"Generate a synthetic dataset in parallel shards, then train on it "
                                    f"({_gpu_text(gpus)})")(generate_and_train)


def _evaluate(cluster: _Cluster, *, config, checkpoint_file, test_data, output, tb_log_dir, overrides, gpus,
              memory_limit) -> dsl.PipelineTask:
    task = c.evaluate(config=config, checkpoint_file=checkpoint_file, test_data=test_data, output=output,
                      tb_log_dir=tb_log_dir, overrides=overrides, num_gpus=gpus)
    return cluster.place(task, "evaluate", gpus=gpus, memory_limit=memory_limit, shm=True)


def _evaluate_the_model(local: bool, gpus: int):
    def evaluate_the_model(
        docker: str = DEFAULT_IMAGE,
        source_uri: str = GROCERIES_REAL_URI,
        config: str = "real",
        checkpoint_file: str = SYNTHETIC_MODEL_URI,
        tb_log_dir: str = TB_LOG_DIR,
        output: str = EVAL_DIR,
        split: str = "test",
        volume_size: str = "100Gi",
        storage_class: str = "standard",
        volume_access_modes: List[str] = ["ReadWriteOnce"],
        memory_limit: str = "64Gi",
        overrides: List[str] = [],
        data_dir: str = DATA_PATH,
    ) -> str:
        cluster = _Cluster(local=local, docker=docker, volume_size=volume_size, storage_class=storage_class,
                           access_modes=volume_access_modes)
        download = _download(cluster, source_uri, f"{data_dir}/download")
        test = _split(cluster, download.output, split, f"{data_dir}/splits/test", "test-split")
        task = _evaluate(cluster, config=config, checkpoint_file=checkpoint_file, test_data=test.output,
                         output=output, tb_log_dir=tb_log_dir, overrides=overrides, gpus=gpus,
                         memory_limit=memory_limit)
        cluster.cleanup(task)
        return task.outputs["Output"]

    return dsl.pipeline(name="evaluate-the-model",
                        description="Evaluate a checkpoint on a test split (COCO and datasetinsights metrics; "
                                    f"{_gpu_text(gpus).replace('training', 'evaluation')})")(evaluate_the_model)


def _train_and_evaluate_combined(local: bool, gpus: int):
    def train_and_evaluate_combined(
        docker: str = DEFAULT_IMAGE,
        source_uri: str = GROCERIES_REAL_URI,
        config: str = "real",
        checkpoint_file: str = "",
        tb_log_dir: str = TB_LOG_DIR,
        checkpoint_dir: str = CHECKPOINT_DIR,
        output: str = EVAL_DIR,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "test",
        volume_size: str = "100Gi",
        storage_class: str = "standard",
        volume_access_modes: List[str] = ["ReadWriteOnce"],
        num_workers: int = 1,
        memory_limit: str = "64Gi",
        overrides: List[str] = [],
        data_dir: str = DATA_PATH,
    ) -> str:
        cluster = _Cluster(local=local, docker=docker, volume_size=volume_size, storage_class=storage_class,
                           access_modes=volume_access_modes)
        download = _download(cluster, source_uri, f"{data_dir}/download")
        train = _split(cluster, download.output, train_split, f"{data_dir}/splits/train", "train-split")
        val = _split(cluster, download.output, val_split, f"{data_dir}/splits/val", "val-split")
        test = _split(cluster, download.output, test_split, f"{data_dir}/splits/test", "test-split")
        checkpoint, _ = _train(cluster, config=config, train_data=train.output, val_data=val.output,
                               checkpoint_dir=checkpoint_dir, tb_log_dir=tb_log_dir,
                               checkpoint_file=checkpoint_file, overrides=overrides, num_gpus=gpus,
                               num_workers=num_workers, memory_limit=memory_limit)
        task = _evaluate(cluster, config=config, checkpoint_file=checkpoint, test_data=test.output, output=output,
                         tb_log_dir=f"{tb_log_dir}/test", overrides=overrides, gpus=gpus,
                         memory_limit=memory_limit)
        cluster.cleanup(task)
        return task.outputs["Output"]

    return dsl.pipeline(name="train-and-evaluate-combined",
                        description="Train on one dataset's train/val splits (from checkpoint_file if set), then "
                                    f"evaluate the result on its test split ({_gpu_text(gpus)})")(
        train_and_evaluate_combined)


_BUILDERS: dict[str, Callable[[bool, int], object]] = {
    "train_on_synthdet_sample": lambda local, gpus: _train_on_download(
        "train_on_synthdet_sample", "Train on the SynthDet sample (UnityGroceries-SyntheticSample)",
        config="synthetic", checkpoint_file="", gpus=gpus, source_uri=SYNTHDET_SAMPLE_URI, splits=("", ""),
        local=local),
    "train_on_real_world_dataset": lambda local, gpus: _train_on_download(
        "train_on_real_world_dataset", "Train on a real-world dataset (UnityGroceries-Real)",
        config="real", checkpoint_file="", gpus=gpus, source_uri=GROCERIES_REAL_URI, splits=("train", "val"),
        local=local),
    "train_on_synthetic_and_real_dataset": lambda local, gpus: _train_on_download(
        "train_on_synthetic_and_real_dataset", "Fine-tune a synthetic-trained checkpoint on real-world data",
        config="finetune", checkpoint_file=SYNTHETIC_MODEL_URI, gpus=gpus, source_uri=GROCERIES_REAL_URI,
        splits=("train", "val"), local=local),
    "generate_and_train": _generate_and_train,
    "evaluate_the_model": _evaluate_the_model,
    "train_and_evaluate_combined": _train_and_evaluate_combined,
}
assert tuple(_BUILDERS) == PIPELINE_NAMES


def build(name: str, *, local: bool = False, gpus: int | None = None):
    """The pipeline ``name`` (one of `PIPELINE_NAMES`) with ``gpus`` GPUs per train/evaluate pod (default: the
    seed's, `DEFAULT_GPUS`; 0 when ``local``); ``local=True`` for kfp.local runs."""
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown pipeline {name!r}; choose from {', '.join(PIPELINE_NAMES)}") from None
    if gpus is None:
        gpus = 0 if local else DEFAULT_GPUS[name]
    if gpus < 0:
        raise ValueError(f"gpus must be >= 0, got {gpus}")
    return builder(local, gpus)
