"""MLflow tracking (--mlflow-uri) against a real local MLflow file store, read back with MLflow's client."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from synthgap.engine import tracking

mlflow = pytest.importorskip("mlflow", reason="mlflow-skinny is in the mlflow/test extras")
from mlflow.tracking import MlflowClient  # noqa: E402


def _only_run(store) -> tuple[MlflowClient, object]:
    client = MlflowClient(tracking.tracking_uri(str(store)))
    experiment = client.get_experiment_by_name("synthgap")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def test_functions_are_noops_without_a_run():
    assert not tracking.active()
    tracking.log_epoch(1, {"loss": 1.0})
    tracking.log_final({"AP": 0.5})
    tracking.log_text("x", "x.txt")
    with tracking.run(None) as run_id:
        assert run_id is None and not tracking.active()


def test_flatten_and_uri(tmp_path):
    assert tracking.flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": "1", "a.c": "[1, 2]", "d": "None"}
    assert tracking.tracking_uri(str(tmp_path)) == f"file://{tmp_path}"
    assert tracking.tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_run_logs_params_epochs_finals_and_artifacts(tmp_path):
    store = tmp_path / "mlruns"
    with tracking.run(str(store), params={"optimizer": {"lr": 2e-4}, "train": {"epochs": 2}}) as run_id:
        assert tracking.active()
        tracking.log_epoch(1, {"loss": 1.5, "val_AP": 0.1, "note": "text is skipped"})
        tracking.log_epoch(2, {"loss": 1.2, "val_AP": float("nan")})
        tracking.log_final({"AP": 0.25, "AR@100": -1.0}, prefix="test_coco_")
        tracking.log_text("model:\n  name: x\n", "config.yaml")
        report = tmp_path / "metrics_coco.json"
        report.write_text('{"AP": 0.25}')
        tracking.log_files([str(report)], "evaluation")
    assert not tracking.active()
    client, run = _only_run(store)
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert run.data.params == {"optimizer.lr": "0.0002", "train.epochs": "2"}
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")] == [(1, 1.5), (2, 1.2)]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val_AP")] == [(1, 0.1)]  # NaN left out
    assert run.data.metrics["test_coco_AP"] == 0.25 and run.data.metrics["test_coco_AR_at_100"] == -1.0
    assert {a.path for a in client.list_artifacts(run_id)} == {"config.yaml", "evaluation"}
    local = client.download_artifacts(run_id, "evaluation/metrics_coco.json", str(tmp_path / "dl"))
    assert json.load(open(local)) == {"AP": 0.25}


def test_failed_body_marks_the_run_failed(tmp_path):
    store = tmp_path / "mlruns"
    with pytest.raises(RuntimeError, match="boom"):
        with tracking.run(str(store)):
            raise RuntimeError("boom")
    assert _only_run(store)[1].info.status == "FAILED"


@pytest.mark.slow
def test_cli_train_and_evaluate_log_to_mlflow(tmp_path):
    from synthgap.generate.shapes import make_coco
    from synthgap.cli import main

    data = make_coco(tmp_path / "data", 2, size=(64, 64), seed=1)
    store = tmp_path / "mlruns"
    overrides = ("model.name=fasterrcnn_mobilenet_v3_large_320_fpn model.min_size=64 model.max_size=64 "
                 "train.epochs=2 train.batch_size=2 train.tb_images=0 eval.batch_size=2")
    result = CliRunner().invoke(main, ["train", "-c", "cpu_small", "-t", data, "-e", data, "--checkpoint-dir",
                                       str(tmp_path / "ck"), "--no-progress", "--override", overrides,
                                       "--mlflow-uri", str(store)])
    assert result.exit_code == 0, result.output
    client, run = _only_run(store)
    assert run.data.params["model.name"] == "fasterrcnn_mobilenet_v3_large_320_fpn"
    assert run.data.params["run.train_data"] == data
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_AP50")] == [1, 2]
    assert {"best_val_AP", "final_val_AP", "epochs"} <= set(run.data.metrics)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"config.yaml", "summary.json"}

    result = CliRunner().invoke(main, ["evaluate", "-p", str(tmp_path / "ck" / "FasterRCNN.last.estimator"), "-t",
                                       data, "--output", str(tmp_path / "eval"), "--no-progress",
                                       "--mlflow-uri", str(store)])
    assert result.exit_code == 0, result.output
    runs = client.search_runs([client.get_experiment_by_name("synthgap").experiment_id])
    evaluation = next(r for r in runs if r.info.run_id != run.info.run_id)
    coco = json.loads((tmp_path / "eval" / "metrics_coco.json").read_text())
    assert evaluation.data.metrics["test_coco_AP"] == pytest.approx(coco["stats"]["AP"])
    assert len([k for k in evaluation.data.metrics if k.startswith("test_coco_")]) == 12
    names = {a.path for a in client.list_artifacts(evaluation.info.run_id, "evaluation")}
    assert {"evaluation/metrics_coco.json", "evaluation/metrics_unity.json", "evaluation/per_class_coco.txt"} <= names
