"""The compiled pipelines: committed YAML is up to date, and carries the seed's parameters and the
cluster wiring (PVC from volume_size, GPUs from num_gpus, image from docker)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

pytest.importorskip("kfp", reason="kfp is in the pipelines/test extras")
pytest.importorskip("kfp.kubernetes", reason="kfp-kubernetes is in the pipelines/test extras")

from click.testing import CliRunner  # noqa: E402

from synthgap.cli import main  # noqa: E402
from synthgap.pipelines import DATA_PATH, DEFAULT_IMAGE, PIPELINE_NAMES  # noqa: E402
from synthgap.pipelines.compile import compile_pipeline  # noqa: E402

COMPILED = Path(__file__).resolve().parents[2] / "pipelines" / "compiled"
SEED_PARAMETERS = {"docker", "config", "tb_log_dir", "volume_size", "num_gpus"}


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
    if name in ("train_on_synthdet_sample", "train_on_real_world_dataset", "evaluate_the_model"):
        assert params["source_uri"]["defaultValue"].startswith("https://")


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
    trainer = "exec-evaluate" if name == "evaluate_the_model" else "exec-train"
    resources = executors[trainer]["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert resources["accelerator"]["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--num_gpus']}}"
    assert resources["resourceMemoryLimit"] == "{{$.inputs.parameters['pipelinechannel--memory_limit']}}"


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
