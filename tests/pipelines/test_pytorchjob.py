"""The PyTorchJob manifest that multi-node training submits to the Kubeflow Training Operator."""

from __future__ import annotations

import re

import pytest

from synthgap.pipelines import pytorchjob
from synthgap.pipelines.steps import train_args

ARGS = train_args(config="synthetic", train_data="/data/train", val_data="/data/val", checkpoint_dir="gs://b/ck",
                  tb_log_dir="gs://b/tb", num_gpus=2)[1:]


def test_master_and_workers_share_one_command_and_the_volume():
    m = pytorchjob.pytorchjob_manifest(name="synthgap-train-ab12", image="synthgap/synthgap:0.1.0", train_args=ARGS,
                                       num_workers=3, gpus_per_worker=2, pvc_name="run-1-synthgap-data",
                                       namespace="team", memory_limit="64Gi", shm_size="16Gi")
    assert (m["apiVersion"], m["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    assert m["metadata"] == {"name": "synthgap-train-ab12", "namespace": "team",
                             "labels": {"app.kubernetes.io/name": "synthgap"}}
    spec = m["spec"]
    assert spec["nprocPerNode"] == "2"  # torchrun on each pod starts one process per GPU
    replicas = spec["pytorchReplicaSpecs"]
    assert {k: v["replicas"] for k, v in replicas.items()} == {"Master": 1, "Worker": 2}
    for role in replicas.values():
        pod = role["template"]["spec"]
        (container,) = pod["containers"]
        assert container["name"] == "pytorch"
        assert container["image"] == "synthgap/synthgap:0.1.0"
        assert container["command"][:4] == ["torchrun", "-m", "synthgap", "train"]
        assert container["command"][4:] == ARGS and "--no-cuda" not in ARGS
        assert container["resources"]["limits"] == {"nvidia.com/gpu": 2, "memory": "64Gi"}
        assert container["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"},
                                             {"name": "data", "mountPath": "/data"}]
        # DataLoader workers need more shared memory than a pod's default 64 MB /dev/shm
        assert pod["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}},
                                  {"name": "data", "persistentVolumeClaim": {"claimName": "run-1-synthgap-data"}}]
    # the two replica specs are independent copies (editing one must not edit the other)
    replicas["Master"]["template"]["spec"]["containers"][0]["image"] = "x"
    assert replicas["Worker"]["template"]["spec"]["containers"][0]["image"] == "synthgap/synthgap:0.1.0"


def test_cpu_single_worker_job_has_no_gpu_limit_and_no_worker_replicas():
    m = pytorchjob.pytorchjob_manifest(name="j", image="img", train_args=["--config", "c"], num_workers=1)
    assert list(m["spec"]["pytorchReplicaSpecs"]) == ["Master"]
    assert m["spec"]["nprocPerNode"] == "1"
    container = m["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert "resources" not in container
    assert container["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert "namespace" not in m["metadata"]


@pytest.mark.parametrize("kwargs", [{"num_workers": 0}, {"num_workers": 2, "gpus_per_worker": -1}])
def test_bad_sizes_are_refused(kwargs):
    with pytest.raises(ValueError):
        pytorchjob.pytorchjob_manifest(name="j", image="img", train_args=[], **kwargs)


def test_job_names_are_dns_labels():
    name = pytorchjob.job_name("synthgap_Train", "A" * 80)
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", name) and len(name) <= 63


@pytest.mark.parametrize("conditions, phase", [
    (None, None),
    ([{"type": "Created", "status": "True"}, {"type": "Running", "status": "True"}], None),
    ([{"type": "Running", "status": "False"}, {"type": "Succeeded", "status": "True"}], "Succeeded"),
    ([{"type": "Failed", "status": "True"}], "Failed"),
    ([{"type": "Succeeded", "status": "False"}], None),
])
def test_job_phase_reads_the_operator_conditions(conditions, phase):
    job = {"status": {"conditions": conditions}} if conditions is not None else {}
    assert pytorchjob.job_phase(job) == phase


class _FakeApiServer:
    """A minimal Kubernetes API for pytorchjobs.kubeflow.org on 127.0.0.1: stores created jobs and
    reports them Running, then ``final`` (the operator's conditions), to the real kubernetes client."""

    def __init__(self, final: str):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.jobs, self.requests, self.gets = {}, [], 0
        server_state = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server_state.requests.append(("POST", self.path))
                server_state.jobs[body["metadata"]["name"]] = body
                self._reply(201, body)

            def do_GET(self):
                server_state.requests.append(("GET", self.path))
                name = self.path.rstrip("/").rsplit("/", 1)[-1]
                job = dict(server_state.jobs[name])
                server_state.gets += 1
                phase = "Running" if server_state.gets < 2 else final
                job["status"] = {"conditions": [{"type": phase, "status": "True"}]}
                self._reply(200, job)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _kubeconfig(tmp_path, url) -> str:
    import yaml

    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": url}}],
        "users": [{"name": "test", "user": {"token": "t"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": "team"}}]}))
    return str(path)


@pytest.mark.parametrize("final", ["Succeeded", "Failed"])
def test_run_pytorchjob_creates_the_job_and_waits_for_its_condition(tmp_path, monkeypatch, final):
    pytest.importorskip("kubernetes", reason="the kubernetes client comes with kfp")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    manifest = pytorchjob.pytorchjob_manifest(name="synthgap-train-x1", image="img", train_args=ARGS, num_workers=2)
    with _FakeApiServer(final) as api:
        monkeypatch.setenv("KUBECONFIG", _kubeconfig(tmp_path, api.url))
        if final == "Failed":
            with pytest.raises(RuntimeError, match="team/synthgap-train-x1 failed"):
                pytorchjob.run_pytorchjob(manifest, namespace="team", poll_seconds=0.01)
        else:
            job = pytorchjob.run_pytorchjob(manifest, namespace="team", poll_seconds=0.01)
            assert pytorchjob.job_phase(job) == "Succeeded"
    path = "/apis/kubeflow.org/v1/namespaces/team/pytorchjobs"
    assert api.requests[0] == ("POST", path)
    assert api.requests[1:] == [("GET", f"{path}/synthgap-train-x1")] * 2
    assert api.jobs["synthgap-train-x1"]["spec"] == manifest["spec"]
