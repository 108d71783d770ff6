"""End to end with kfp.local: generate (2 parallel shards) -> train -> evaluate, on a tiny dataset.

The pipelines run exactly as compiled, minus the cluster-only parts (`build(..., local=True)`):
each step is a subprocess running the real `synthgap` CLI. The test set reaches the evaluate
pipeline's download step over HTTP (a real server on 127.0.0.1) as a zip archive.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("kfp", reason="kfp is in the pipelines/test extras")

from kfp import local  # noqa: E402

from synthgap.models.checkpoint import load_checkpoint  # noqa: E402
from synthgap.data import open_dataset  # noqa: E402
from synthgap.pipelines.flows import build  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:You may be attemping to run a task that uses custom:RuntimeWarning")]

# One optimizer step of the smallest model on 160x120 images: this checks the plumbing, not accuracy.
SMALL_IMAGES = ["data.image_size=[160, 120]", "model.min_size=120", "model.max_size=160", "eval.batch_size=4"]
TRAIN_OVERRIDES = ["train.epochs=1", "train.batch_size=2", "train.max_steps_per_epoch=1", "train.tb_images=0",
                   *SMALL_IMAGES]


def test_generate_train_evaluate(tmp_path: Path, http_folder):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    data = tmp_path / "data"

    run = build("generate_and_train", local=True)(
        config="cpu_small", frames=8, val_frames=4, num_shards=2, seed=3, val_seed=4, width=160, height=120,
        overrides=TRAIN_OVERRIDES, data_dir=str(data), tb_log_dir=str(tmp_path / "tb"),
        checkpoint_dir=str(tmp_path / "checkpoints"))

    # the two shards made one 8-frame dataset
    train_set = open_dataset(str(data / "synthetic-train"))
    assert len(train_set) == 8
    assert len({s.image_id for s in train_set}) == 8
    assert len(open_dataset(str(data / "synthetic-val"))) == 4
    # the pipeline's output is the checkpoint training wrote, a loadable one-epoch model
    checkpoint = Path(run.output)
    assert checkpoint.parent == tmp_path / "checkpoints"
    assert checkpoint.name in ("FasterRCNN.best.estimator", "FasterRCNN.last.estimator")
    state = load_checkpoint(str(checkpoint))
    assert state["epoch"] == 1 and state["model"] and state["label_map"]
    assert (tmp_path / "checkpoints" / "FasterRCNN.ep1.estimator").is_file()
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))

    # evaluate that checkpoint on the validation set, downloaded over HTTP as test.zip
    www, url, _ = http_folder
    shutil.make_archive(str(www / "test"), "zip", root_dir=data, base_dir="synthetic-val")
    out = tmp_path / "evaluation"
    result = build("evaluate_the_model", local=True)(
        source_uri=f"{url}/test.zip", split="", config="cpu_small", checkpoint_file=str(checkpoint),
        overrides=SMALL_IMAGES, data_dir=str(tmp_path / "test-data"), tb_log_dir=str(tmp_path / "tb-eval"),
        output=str(out))

    assert result.output == str(out)
    assert (tmp_path / "test-data" / "download" / "synthetic-val").is_dir()  # the archive was unpacked
    metrics = json.loads((out / "metrics_coco.json").read_text())
    assert set(metrics["stats"]) >= {"AP", "AP50", "AP75", "AR100"}
    assert all(-1.0 <= v <= 1.0 for v in metrics["stats"].values())
    assert json.loads((out / "metrics_unity.json").read_text())  # both default protocols ran
    predictions = json.loads((out / "predictions.json").read_text())
    assert isinstance(predictions, (list, dict))
    assert list((tmp_path / "tb-eval").rglob("events.out.tfevents.*"))
    _check_ui_outputs(tmp_path / "kfp", out)
    shutil.rmtree(tmp_path / "checkpoints")  # 3 x 230 MB: do not leave them to pytest's tmp retention


def _executor_outputs(pipeline_root: Path, task: str) -> list[dict]:
    """executor_output.json of every run of ``task`` under kfp.local's pipeline root (newest last)."""
    files = sorted(pipeline_root.rglob(f"{task}/executor_output.json"), key=lambda p: p.stat().st_mtime)
    return [json.loads(p.read_text()) for p in files]


def _check_ui_outputs(pipeline_root: Path, out: Path) -> None:
    """The evaluate step's Metrics (12 COCO + unity stats), Markdown summary and HTML report, as KFP records them."""
    (record,) = _executor_outputs(pipeline_root, "evaluate")[-1:]
    artifacts = record["artifacts"]
    metrics = artifacts["metrics"]["artifacts"][0]["metadata"]
    coco = json.loads((out / "metrics_coco.json").read_text())["stats"]
    assert {k[len("coco_"):]: v for k, v in metrics.items() if k.startswith("coco_")} == pytest.approx(coco)
    assert any(k.startswith("unity_") for k in metrics)
    summary = Path(artifacts["summary"]["artifacts"][0]["uri"])
    assert "## coco" in summary.read_text()
    report = Path(artifacts["report"]["artifacts"][0]["uri"]).read_text()
    assert report.lstrip().lower().startswith("<!doctype html") and "</html>" in report


def test_train_and_evaluate_combined(tmp_path: Path, http_folder):
    """datasetinsights' combined pipeline: one UnityGroceries-Real download, train on train/val, evaluate on test."""
    from tests.data.test_groceries_real import make_groceries

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    www, url, _ = http_folder
    make_groceries(tmp_path / "groceries", n=5, sizes=[(64, 48)] * 5)
    shutil.make_archive(str(www / "groceries"), "zip", root_dir=tmp_path, base_dir="groceries")
    out = tmp_path / "evaluation"
    result = build("train_and_evaluate_combined", local=True)(
        source_uri=f"{url}/groceries.zip", config="cpu_small", data_dir=str(tmp_path / "data"),
        overrides=["train.epochs=1", "train.batch_size=2", "train.max_steps_per_epoch=1", "train.tb_images=0",
                   "model.min_size=48", "model.max_size=64", "eval.batch_size=4"],
        tb_log_dir=str(tmp_path / "tb"), checkpoint_dir=str(tmp_path / "checkpoints"), output=str(out))
    assert result.output == str(out)
    # trained on the 3 train images, validated on the 1 val image, evaluated on the 1 test image
    assert len(open_dataset(str(tmp_path / "data" / "splits" / "train"))) == 3
    predictions = json.loads((out / "predictions.json").read_text())
    test_ids = {s.image_id for s in open_dataset(str(tmp_path / "data" / "splits" / "test"))}
    assert {d["image_id"] for d in predictions} <= test_ids
    summary = _executor_outputs(tmp_path / "kfp", "train")[-1]["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert summary["epochs"] == 1 and "val_AP" in summary
    _check_ui_outputs(tmp_path / "kfp", out)
    shutil.rmtree(tmp_path / "checkpoints")
