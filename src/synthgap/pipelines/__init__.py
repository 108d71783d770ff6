"""Kubeflow Pipelines (KFP v2) for synthgap's six flows, and the container image they run in.

The pipelines live in `synthgap.pipelines.flows` (needs the ``pipelines`` extra: ``kfp`` and
``kfp-kubernetes``); this module stays import-light so the image name can be read without kfp.
Each pipeline step is a lightweight Python component that runs the ``synthgap`` CLI, so the same
pipeline runs on a cluster (inside `DEFAULT_IMAGE`) and locally with ``kfp.local``.
"""

from synthgap import __version__

# The one place the image name is defined: pipelines' `docker` default, Dockerfile label, docs.
IMAGE_REPOSITORY = "synthgap/synthgap"
DEFAULT_IMAGE = f"{IMAGE_REPOSITORY}:{__version__}"

# Where the pipeline's PersistentVolumeClaim is mounted in every pod (datasetinsights' DATA_PATH).
DATA_PATH = "/data"

# pipeline name -> file name stem of its compiled YAML under pipelines/compiled/.
PIPELINE_NAMES = (
    "train_on_synthdet_sample",
    "train_on_real_world_dataset",
    "train_on_synthetic_and_real_dataset",
    "generate_and_train",
    "evaluate_the_model",
    "train_and_evaluate_combined",
)

# GPUs per train/evaluate pod, fixed when compiling (`synthgap pipelines compile --gpus N`): KFP v2 backends
# that do not resolve a run-time accelerator count schedule the pod without GPUs. datasetinsights' values.
DEFAULT_GPUS = {name: 8 if name == "train_on_synthdet_sample" else 1 for name in PIPELINE_NAMES}

# Size cap of the memory-backed /dev/shm mounted in train/evaluate pods (a pod's default is 64 MB, too
# little for DataLoader workers); it counts against the pod's memory limit.
SHM_SIZE = "16Gi"

__all__ = ["IMAGE_REPOSITORY", "DEFAULT_IMAGE", "DATA_PATH", "PIPELINE_NAMES", "DEFAULT_GPUS", "SHM_SIZE"]
