"""The compiled pipelines: committed YAML is up to date, and carries datasetinsights' parameters and the
cluster wiring (PVC from volume_size, constant GPU limits, /dev/shm, image from docker), and what the KFP
UI shows (Metrics, Markdown and HTML outputs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

pytest.importorskip("kfp", reason="kfp is in the pipelines/test extras")
pytest.importorskip("kfp.kubernetes", reason="kfp-kubernetes is in the pipelines/test extras")

from click.testing import CliRunner  # noqa: E402

from synthgap.cli import main  # noqa: E402
from synthgap.pipelines import DATA_PATH, DEFAULT_GPUS, DEFAULT_IMAGE, PIPELINE_NAMES, SHM_SIZE  # noqa: E402
from synthgap.pipelines.compile import compile_pipeline  # noqa: E402

COMPILED = Path(__file__).resolve().parents[2] / "pipelines" / "compiled"
SEED_PARAMETERS = {"docker", "config", "tb_log_dir", "volume_size"}
TRAINERS = {"exec-train", "exec-evaluate"}  # the steps that get GPUs, memory and /dev/shm


def _normalise(text: str) -> str:
    """The compiled YAML without the kfp version stamp (a patch release of kfp must not fail this)."""
    return re.sub(r"(?m)^sdkVersion: .*$", "sdkVersion: X", text)


def _docs(text: str) -> list[dict]:
    return list(yaml.safe_load_all(text))


@pytest.fixture(scope="module")
def compiled() -> dict[str, str]:
    return {name: compile_pipeline(name) for name in PIPELINE_NAMES}


def test_committed_yaml_is_up_to_date(compiled):
    assert sorted(p.stem for p in COMPILED.glob("*.yaml")) == sorted(PIPELINE_NAMES)
    stale = [name for name, text in compiled.items()
             if _normalise((COMPILED / f"{name}.yaml").read_text(encoding="utf-8")) != _normalise(text)]
    assert not stale, f"pipelines/compiled is stale for {stale}: run `synthgap pipelines compile`"


def test_cli_compile_writes_the_same_yaml(tmp_path, compiled):
    result = CliRunner().invoke(main, ["pipelines", "compile", "--out", str(tmp_path / "out"),
                                       "--pipeline", "evaluate_the_model"])
    assert result.exit_code == 0, result.output
    written = tmp_path / "out" / "evaluate_the_model.yaml"
    assert result.output.strip() == str(written)
    assert written.read_text(encoding="utf-8") == compiled["evaluate_the_model"]


@pytest.mark.parametrize("name", PIPELINE_NAMES)
def test_seed_parameters_and_defaults(compiled, name):
    spec = _docs(compiled[name])[0]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert SEED_PARAMETERS <= set(params)
    assert params["docker"]["defaultValue"] == DEFAULT_IMAGE
    assert params["volume_size"]["defaultValue"] == "100Gi"
    assert params["volume_access_modes"]["defaultValue"] == ["ReadWriteOnce"]
    assert params["data_dir"]["defaultValue"] == DATA_PATH
    if name != "evaluate_the_model":
        assert {"checkpoint_dir", "num_workers"} <= set(params)
    if name in ("train_on_synthetic_and_real_dataset", "evaluate_the_model"):
        assert params["checkpoint_file"]["defaultValue"].endswith(".estimator")
    if name in ("train_on_synthdet_sample", "train_on_real_world_dataset", "evaluate_the_model",
                "train_and_evaluate_combined"):
        assert params["source_uri"]["defaultValue"].startswith("https://")
    assert "num_gpus" not in params  # a run-time GPU count is what KFP v2 backends fail to apply


@pytest.mark.parametrize("name", PIPELINE_NAMES)
def test_cluster_wiring(compiled, name):
    spec, platform = _docs(compiled[name])
    tasks = spec["root"]["dag"]["tasks"]
    # the PVC is sized by volume_size and deleted at the end
    pvc_inputs = {k: v.get("componentInputParameter") for k, v in tasks["createpvc"]["inputs"]["parameters"].items()}
    assert pvc_inputs["size"] == "volume_size"
    assert pvc_inputs["storage_class_name"] == "storage_class"
    assert pvc_inputs["access_modes"] == "volume_access_modes"
    assert "deletepvc" in tasks
    executors = spec["deploymentSpec"]["executors"]
    mounts = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for label, executor in executors.items():
        container = executor["container"]
        if container["image"].startswith("argostub/"):
            continue
        # every step runs in the `docker` image, with the PVC at /data, kfp not pip-installed at run time
        assert container["image"] == "{{$.inputs.parameters['pipelinechannel--docker']}}", label
        assert mounts[label]["pvcMount"][0]["mountPath"] == DATA_PATH, label
        assert "pip install" not in " ".join(container["command"]), label
    gpus = str(DEFAULT_GPUS[name])
    trainers = TRAINERS & set(executors)
    assert trainers == ({"exec-evaluate"} if name == "evaluate_the_model" else
                        TRAINERS if name == "train_and_evaluate_combined" else {"exec-train"})
    for label in trainers:
        resources = executors[label]["container"]["resources"]
        # a constant, in the fields old (type/count) and new (resourceType/resourceCount) drivers read
        assert resources["accelerator"] == {"type": "nvidia.com/gpu", "count": gpus,
                                            "resourceType": "nvidia.com/gpu", "resourceCount": gpus}
        assert resources["resourceMemoryLimit"] == "{{$.inputs.parameters['pipelinechannel--memory_limit']}}"
        assert mounts[label]["emptyDirMounts"] == [{"medium": "Memory", "mountPath": "/dev/shm",
                                                    "sizeLimit": SHM_SIZE, "volumeName": "dshm"}]
        # the step passes the same count to the CLI (torchrun processes, --no-cuda at 0)
        task = _task_of(spec, label)
        assert task["inputs"]["parameters"]["num_gpus"]["runtimeValue"]["constant"] == int(gpus)


def _task_of(spec: dict, executor: str) -> dict:
    """The DAG task whose component runs ``executor``."""
    components = {k for k, c in spec["components"].items() if c.get("executorLabel") == executor}
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    (task,) = [t for dag in dags for t in dag["tasks"].values() if t["componentRef"]["name"] in components]
    return task


@pytest.mark.parametrize("name", PIPELINE_NAMES)
def test_steps_show_metrics_and_reports_in_the_ui(compiled, name):
    spec = _docs(compiled[name])[0]
    artifacts = {k: {a: v["artifactType"]["schemaTitle"] for a, v in c["outputDefinitions"].get("artifacts", {}).items()}
                 for k, c in spec["components"].items() if "outputDefinitions" in c}
    if name != "evaluate_the_model":
        assert artifacts["comp-train"] == {"metrics": "system.Metrics"}
        assert artifacts["comp-train-pytorchjob"] == {"metrics": "system.Metrics"}
    if name in ("evaluate_the_model", "train_and_evaluate_combined"):
        assert artifacts["comp-evaluate"] == {"metrics": "system.Metrics", "summary": "system.Markdown",
                                              "report": "system.HTML"}


def test_gpus_are_set_when_compiling():
    four = _docs(compile_pipeline("evaluate_the_model", gpus=4))[0]
    resources = four["deploymentSpec"]["executors"]["exec-evaluate"]["container"]["resources"]
    assert resources["accelerator"]["count"] == resources["accelerator"]["resourceCount"] == "4"
    cpu = compile_pipeline("train_on_real_world_dataset", gpus=0)
    assert "accelerator" not in cpu and "nvidia.com/gpu" not in cpu
    assert _task_of(_docs(cpu)[0], "exec-train")["inputs"]["parameters"]["num_gpus"]["runtimeValue"]["constant"] == 0
    result = CliRunner().invoke(main, ["pipelines", "compile", "--out", "unused", "--gpus", "-1"])
    assert result.exit_code == 2


def test_combined_pipeline_evaluates_what_it_trained(compiled):
    spec = _docs(compiled["train_and_evaluate_combined"])[0]
    tasks = spec["root"]["dag"]["tasks"]
    evaluate = tasks["evaluate"]
    checkpoint = evaluate["inputs"]["parameters"]["checkpoint_file"]["taskOutputParameter"]
    assert checkpoint["producerTask"] == "condition-branches-1"  # the OneOf of the single-pod / PyTorchJob train
    assert evaluate["inputs"]["parameters"]["test_data"]["taskOutputParameter"]["producerTask"] == "select-split-3"
    assert "deletepvc" in tasks and "evaluate" in tasks["deletepvc"]["dependentTasks"]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert (params["train_split"]["defaultValue"], params["val_split"]["defaultValue"],
            params["test_split"]["defaultValue"]) == ("train", "val", "test")


def test_generate_and_train_fans_out_over_shards(compiled):
    spec = _docs(compiled["generate_and_train"])[0]
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    loops = [task for dag in dags for task in dag["tasks"].values() if "parameterIterator" in task]
    assert [loop["parameterIterator"]["items"] for loop in loops] == [
        {"inputParameter": "pipelinechannel--shard-indices-Output"}]
    assert loops, "no dsl.ParallelFor over the generate-shard step"
    text = compiled["generate_and_train"]
    assert "synthetic-train" in text and "synthetic-val" in text


def test_local_variant_same_parameters_no_cluster_steps(compiled):
    from synthgap.pipelines.flows import build

    text = compile_pipeline("generate_and_train", local=True)
    assert "argostub" not in text and "pvcMount" not in text and "accelerator" not in text
    local_params = _docs(text)[0]["root"]["inputDefinitions"]["parameters"]
    cluster_params = _docs(compiled["generate_and_train"])[0]["root"]["inputDefinitions"]["parameters"]
    assert local_params == cluster_params
    with pytest.raises(ValueError, match="unknown pipeline"):
        build("nope")
