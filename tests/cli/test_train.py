"""`synthgap train / evaluate / predict` end to end on tiny generated COCO data."""

import json
import os
import sys
import textwrap

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from synthgap.generate.shapes import LABEL_MAP, make_coco
from synthgap.cli import main

TINY = ["model.min_size=64", "model.max_size=64", "data.image_size=null", "train.batch_size=4", "eval.batch_size=4",
        "train.epochs=1"]


def _overrides(items):
    return [a for o in items for a in ("--override", o)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    train_dir = make_coco(root / "train", 4, size=(64, 64), seed=1)
    test_dir = make_coco(root / "test", 3, size=(64, 64), seed=2)
    result = CliRunner().invoke(main, ["train", "--config", "cpu_small", "--train-data", train_dir, "--val-data",
                                       test_dir, "--checkpoint-dir", str(root / "ck"), "--no-progress",
                                       "--output", str(root / "summary.json"), *_overrides(TINY)])
    assert result.exit_code == 0, result.output
    return root, train_dir, test_dir


def test_train_summary_and_checkpoints(trained):
    root, _, _ = trained
    summary = json.loads((root / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["steps"] == 1 and "AP" in summary["metrics"]
    assert (root / "ck" / "FasterRCNN.ep1.estimator").exists() and (root / "ck" / "FasterRCNN.best.estimator").exists()


def test_evaluate_writes_predictions_metrics_and_tensorboard(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, _, test_dir = trained
    out = root / "eval"
    result = CliRunner().invoke(main, ["evaluate", "--checkpoint-file", str(root / "ck" / "FasterRCNN.best.estimator"),
                                       "--test-data", test_dir, "--output", str(out), "--tb-log-dir",
                                       str(root / "tb_eval"), "--no-progress", "--workers", "0"])
    assert result.exit_code == 0, result.output
    predictions = json.loads((out / "predictions.json").read_text())
    assert all(set(p) == {"image_id", "category_id", "bbox", "score"} for p in predictions)
    assert {p["image_id"] for p in predictions} <= {1, 2, 3}
    for protocol, name in (("coco", "AP"), ("unity", "mAP")):
        metrics = json.loads((out / f"metrics_{protocol}.json").read_text())
        assert name in metrics["stats"]
        assert "red" in (out / f"per_class_{protocol}.txt").read_text()
    acc = EventAccumulator(str(root / "tb_eval"))
    acc.Reload()
    assert "test_coco/AP" in acc.Tags()["scalars"] and "test_unity/mAPIOU50" in acc.Tags()["scalars"]
    metrics = json.loads((out / "metrics_coco.json").read_text())
    assert acc.Scalars("test_coco/AP")[0].value == pytest.approx(metrics["stats"]["AP"])


def test_evaluate_to_uris(trained):
    from synthgap.io import storage

    root, _, test_dir = trained
    result = CliRunner().invoke(main, ["evaluate", "--checkpoint-file", str(root / "ck" / "FasterRCNN.last.estimator"),
                                       "--test-data", test_dir, "--output", "memory://eval-out", "--tb-log-dir",
                                       "memory://eval-tb", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert storage.exists("memory://eval-out/metrics_unity.json")
    assert storage.glob("memory://eval-tb/events.out.tfevents.*")


def test_predict_draws_images(trained, tmp_path):
    root, train_dir, _ = trained
    images = sorted(str(p) for p in (root / "train" / "images").iterdir())[:2]
    result = CliRunner().invoke(main, ["predict", "--checkpoint-file", str(root / "ck" / "FasterRCNN.last.estimator"),
                                       *images, "--out", str(tmp_path / "pred"), "--score-thresh", "0"])
    assert result.exit_code == 0, result.output
    listing = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert [r["image"] for r in listing] == images
    for r in listing:
        drawn = Image.open(tmp_path / "pred" / r["drawn"])
        assert drawn.size == (64, 64)
        for d in r["detections"]:
            assert d["label"] == LABEL_MAP.get(d["category_id"], str(d["category_id"]))


def test_bad_config_and_missing_data_are_clear_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["train", "--train-data", "x", "--override", "train.epoch=3"])
    assert result.exit_code == 2 and "unknown key 'train.epoch'" in result.output
    result = runner.invoke(main, ["train", "--train-data", "x", "--override", "train.epochs=many"])
    assert result.exit_code == 2 and "train.epochs must be an integer" in result.output
    result = runner.invoke(main, ["train", "--config", "nope"])
    assert result.exit_code == 2 and "config not found" in result.output
    result = runner.invoke(main, ["train"])
    assert result.exit_code == 2 and "no training data" in result.output
    evil = tmp_path / "evil.estimator"
    evil.write_bytes(b"cos\nsystem\n(S'echo hi'\ntR.")
    result = runner.invoke(main, ["predict", "--checkpoint-file", str(evil), str(evil), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "refused to load" in result.output and "os.system" in result.output
    help_text = runner.invoke(main, ["train", "--help"]).output
    for flag in ("--config", "--train-data", "--val-data", "--checkpoint-file", "--tb-log-dir", "--checkpoint-dir",
                 "--workers", "--no-cuda", "--no-val", "--override", "--resume"):
        assert flag in help_text


@pytest.mark.slow
def test_evaluate_a_datasetinsights_estimator(trained, tmp_path, monkeypatch):
    """A file shaped like datasetinsights' published models (fasterrcnn_resnet50_fpn, 64 classes,
    {"model", "config": yacs CfgNode}) is evaluated without yacs and without unpickling code."""
    from synthgap.config import ModelConfig
    from synthgap.models import build_model

    root, _, test_dir = trained
    site = tmp_path / "site" / "yacs"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text("")
    (site / "config.py").write_text(textwrap.dedent("""
        class CfgNode(dict):
            def __init__(self, d=None):
                super().__init__(d or {})
                self.__dict__["__immutable__"] = False
    """))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    from yacs.config import CfgNode

    model = build_model(ModelConfig(name="fasterrcnn_resnet50_fpn"), 64)
    path = tmp_path / "FasterRCNN.estimator"
    torch.save({"model": model.state_dict(), "config": CfgNode({"backbone": "resnet50", "num_classes": 64})}, path)
    sys.path.remove(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "yacs.config")
    monkeypatch.delitem(sys.modules, "yacs")
    result = CliRunner().invoke(main, ["evaluate", "--checkpoint-file", str(path), "--test-data", test_dir,
                                       "--output", str(tmp_path / "out"), "--no-progress",
                                       "--override", "model.min_size=64", "--override", "model.max_size=64"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "metrics_coco.json").read_text())["stats"]["AP"] is not None
    assert "yacs" not in sys.modules
    assert os.path.exists(tmp_path / "out" / "predictions.json")


def test_evaluate_reads_the_test_split_of_a_groceries_real_folder(trained, tmp_path):
    """UnityGroceries-Real: `evaluate` reads its test split unless --test-split says otherwise."""
    from tests.data.test_groceries_real import make_groceries

    root, _, _ = trained
    groceries = make_groceries(tmp_path / "groceries")  # 5 images; split files: test = [4]
    checkpoint = str(root / "ck" / "FasterRCNN.best.estimator")
    for args, images in (([], 1), (["--test-split", "all"], 5), (["--test-split", "train"], 3)):
        result = CliRunner().invoke(main, ["evaluate", "-p", checkpoint, "-t", str(groceries), "--output",
                                           str(tmp_path / "eval"), "--no-progress", *args])
        assert result.exit_code == 0, result.output
        assert f"{images} images, " in result.output
    result = CliRunner().invoke(main, ["evaluate", "-p", checkpoint, "-t", str(groceries), "--output",
                                       str(tmp_path / "eval"), "--no-progress", "--test-split", "nope"])
    assert result.exit_code != 0 and "unknown split 'nope'" in result.output


def test_train_split_flags_reach_the_data(trained, tmp_path):
    root, train_dir, test_dir = trained
    for flag in ("--train-split", "--val-split"):
        result = CliRunner().invoke(main, ["train", "-t", train_dir, "-e", test_dir, "--checkpoint-dir",
                                           str(tmp_path / "ck"), "--no-progress", flag, "nope"])
        assert result.exit_code != 0 and "unknown split 'nope'; coco datasets have: all, train, val" in result.output
