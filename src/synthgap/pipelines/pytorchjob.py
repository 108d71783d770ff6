"""Multi-node training through the Kubeflow Training Operator's PyTorchJob (kubeflow.org/v1).

A pipeline step cannot span several pods, so for ``num_workers > 1`` the train step builds a
PyTorchJob manifest, creates it and waits for it. The operator starts one Master and
``num_workers - 1`` Worker pods and, because ``spec.nprocPerNode`` is set, injects the
``PET_NNODES`` / ``PET_NODE_RANK`` / ``PET_MASTER_ADDR`` / ``PET_MASTER_PORT`` /
``PET_NPROC_PER_NODE`` variables that ``torchrun`` reads as its defaults, so every pod runs the
same ``torchrun -m synthgap train ...`` command and no launcher of our own is needed.

Creation goes through the ``kubernetes`` Python client when it is installed, else through
``kubectl`` (``kubectl create -f -`` then polling ``kubectl get -o json``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import time
from typing import Optional, Sequence

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"
# DataLoader workers pass batches through /dev/shm, which is 64 MB in a pod unless a memory-backed
# emptyDir is mounted there (a worker then dies with "bus error" / "DataLoader worker killed").
SHM_VOLUME = {"name": "dshm", "emptyDir": {"medium": "Memory"}}
SHM_MOUNT = {"name": "dshm", "mountPath": "/dev/shm"}
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def job_name(prefix: str, unique: str) -> str:
    """A DNS-1123 name (lowercase alphanumerics and '-', at most 63 characters) for the job."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"{prefix}-{unique}".lower()).strip("-")
    return name[:63].rstrip("-")


def train_command(train_args: Sequence[str], nproc_per_node: Optional[int] = None) -> list[str]:
    """``torchrun -m synthgap train ARGS``; torchrun takes nodes/rank/master from PET_* variables."""
    cmd = ["torchrun"]
    if nproc_per_node is not None:
        cmd.append(f"--nproc-per-node={nproc_per_node}")
    return cmd + ["-m", "synthgap", "train", *train_args]


def pytorchjob_manifest(
    *,
    name: str,
    image: str,
    train_args: Sequence[str],
    num_workers: int,
    gpus_per_worker: int = 0,
    pvc_name: Optional[str] = None,
    mount_path: str = "/data",
    namespace: Optional[str] = None,
    memory_limit: Optional[str] = None,
    shm_size: Optional[str] = None,
) -> dict:
    """A PyTorchJob with one Master and ``num_workers - 1`` Workers, each running ``synthgap train``.

    ``gpus_per_worker`` GPUs (``nvidia.com/gpu`` limit) per pod and as many processes per pod
    (one process per pod on CPU). ``pvc_name`` is mounted at ``mount_path`` in every pod; a
    multi-node job needs a ReadWriteMany volume (or all pods on one node) to share it. Every pod gets
    a memory-backed ``/dev/shm`` of up to ``shm_size`` (counted against the pod's memory limit).
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if gpus_per_worker < 0:
        raise ValueError(f"gpus_per_worker must be >= 0, got {gpus_per_worker}")
    container = {
        "name": "pytorch",  # the operator looks for a container of this name
        "image": image,
        "command": train_command(train_args),
    }
    limits = {}
    if gpus_per_worker:
        limits["nvidia.com/gpu"] = gpus_per_worker
    if memory_limit:
        limits["memory"] = memory_limit
    if limits:
        container["resources"] = {"limits": limits}
    shm = json.loads(json.dumps(SHM_VOLUME))
    if shm_size:
        shm["emptyDir"]["sizeLimit"] = shm_size
    container["volumeMounts"] = [dict(SHM_MOUNT)]
    pod_spec: dict = {"containers": [container], "volumes": [shm]}
    if pvc_name:
        container["volumeMounts"].append({"name": "data", "mountPath": mount_path})
        pod_spec["volumes"].append({"name": "data", "persistentVolumeClaim": {"claimName": pvc_name}})

    def replica(count: int) -> dict:
        return {"replicas": count, "restartPolicy": "OnFailure",
                "template": {"metadata": {"annotations": {"sidecar.istio.io/inject": "false"}},
                             "spec": json.loads(json.dumps(pod_spec))}}

    replicas = {"Master": replica(1)}
    if num_workers > 1:
        replicas["Worker"] = replica(num_workers - 1)
    metadata = {"name": name, "labels": {"app.kubernetes.io/name": "synthgap"}}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": metadata,
        "spec": {
            "nprocPerNode": str(max(gpus_per_worker, 1)),
            "runPolicy": {"cleanPodPolicy": "None", "backoffLimit": 3},
            "pytorchReplicaSpecs": replicas,
        },
    }


def job_phase(job: dict) -> Optional[str]:
    """"Succeeded" / "Failed" once the job has finished, else None (from ``status.conditions``)."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Succeeded", "Failed") and condition.get("status") == "True":
            return condition["type"]
    return None


def current_namespace(default: str = "kubeflow") -> str:
    """The namespace of the pod we run in (its service account token's), else ``default``."""
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE) as f:
            return f.read().strip() or default
    except OSError:
        return default


class _KubernetesClient:
    def __init__(self):
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:  # outside a pod: $KUBECONFIG (read now, not at import) or ~/.kube/config
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
        self.api = client.CustomObjectsApi()

    def create(self, manifest: dict, namespace: str) -> None:
        self.api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)

    def get(self, name: str, namespace: str) -> dict:
        return self.api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


class _Kubectl:
    def create(self, manifest: dict, namespace: str) -> None:
        subprocess.run(["kubectl", "create", "-n", namespace, "-f", "-"], input=json.dumps(manifest),
                       text=True, check=True)

    def get(self, name: str, namespace: str) -> dict:
        out = subprocess.run(["kubectl", "get", "-n", namespace, f"{PLURAL}.{GROUP}", name, "-o", "json"],
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out)


def _client():
    if importlib.util.find_spec("kubernetes") is not None:
        return _KubernetesClient()
    if shutil.which("kubectl") is None:
        raise RuntimeError("multi-worker training needs the `kubernetes` Python package or `kubectl`")
    return _Kubectl()


def run_pytorchjob(manifest: dict, *, namespace: Optional[str] = None, poll_seconds: float = 30.0,
                   timeout_seconds: Optional[float] = None) -> dict:
    """Create the PyTorchJob and block until it succeeds (returns the final object) or fails (raises)."""
    namespace = namespace or manifest["metadata"].get("namespace") or current_namespace()
    name = manifest["metadata"]["name"]
    api = _client()
    api.create(manifest, namespace)
    print(f"created {KIND} {namespace}/{name}", flush=True)
    start = time.monotonic()
    while True:
        job = api.get(name, namespace)
        phase = job_phase(job)
        if phase == "Succeeded":
            return job
        if phase == "Failed":
            raise RuntimeError(f"{KIND} {namespace}/{name} failed: {json.dumps(job.get('status'))}")
        if timeout_seconds is not None and time.monotonic() - start > timeout_seconds:
            raise TimeoutError(f"{KIND} {namespace}/{name} did not finish in {timeout_seconds} s")
        time.sleep(poll_seconds)

