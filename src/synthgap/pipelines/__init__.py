"""Kubeflow Pipelines (KFP v2) for synthgap's five flows, and the container image they run in.

The pipelines live in `synthgap.pipelines.flows` (needs the ``pipelines`` extra: ``kfp`` and
``kfp-kubernetes``); this module stays import-light so the image name can be read without kfp.
Each pipeline step is a lightweight Python component that runs the ``synthgap`` CLI, so the same
pipeline runs on a cluster (inside `DEFAULT_IMAGE`) and locally with ``kfp.local``.
"""

from synthgap import __version__

# The one place the image name is defined: pipelines' `docker` default, Dockerfile label, docs.
IMAGE_REPOSITORY = "synthgap/synthgap"
DEFAULT_IMAGE = f"{IMAGE_REPOSITORY}:{__version__}"

# Where the pipeline's PersistentVolumeClaim is mounted in every pod (the seed's DATA_PATH).
DATA_PATH = "/data"

# pipeline name -> file name stem of its compiled YAML under pipelines/compiled/.
PIPELINE_NAMES = (
    "train_on_synthdet_sample",
    "train_on_real_world_dataset",
    "train_on_synthetic_and_real_dataset",
    "generate_and_train",
    "evaluate_the_model",
)

__all__ = ["IMAGE_REPOSITORY", "DEFAULT_IMAGE", "DATA_PATH", "PIPELINE_NAMES"]
