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
from synthgap.config import load_config

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
                                           str(tmp_path / "eval"), "--no-progress", *args,
                                           # other class names: paired explicitly (matched by name otherwise)
                                           "--class-map", "red=book_dorkdiaries_aladdin",
                                           "--class-map", "green=candy_minipralines_lindt"])
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


def test_evaluate_and_predict_match_classes_by_name_with_a_class_map(trained, tmp_path, caplog):
    """Issue 23: a test set naming a class differently and numbering all of them differently; --class-map
    pairs the names, the printed line says how the classes were matched, ids come out in the test set's."""
    from tests.helpers.labels import PERMUTED, renumbered_coco

    root, _, test_dir = trained
    checkpoint = str(root / "ck" / "FasterRCNN.last.estimator")
    other = renumbered_coco(test_dir, tmp_path / "renamed", names={"red": "crimson"})
    (tmp_path / "map.yaml").write_text("red: crimson\n")
    with caplog.at_level("INFO", logger="synthgap.engine.evaluate"):  # the command logs it to stderr
        result = CliRunner().invoke(main, ["evaluate", "-p", checkpoint, "-t", other, "--output", str(tmp_path / "e"),
                                           "--no-progress", "--class-map", str(tmp_path / "map.yaml")])
    assert result.exit_code == 0, result.output
    assert "3 matched by name (case and whitespace ignored) and by the class map (red=crimson)" in caplog.text
    assert json.loads((tmp_path / "e" / "label_alignment.json").read_text())["model_to_test"] == {
        str(k): v for k, v in PERMUTED.items()}
    assert "crimson" in (tmp_path / "e" / "per_class_coco.txt").read_text()
    images = sorted(str(p) for p in (root / "test" / "images").iterdir())[:1]
    result = CliRunner().invoke(main, ["predict", "-p", checkpoint, *images, "--out", str(tmp_path / "p"),
                                       "--score-thresh", "0", "--test-data", other, "--class-map", "red=crimson"])
    assert result.exit_code == 0, result.output
    back = {v: k for k, v in PERMUTED.items()}
    for d in json.loads((tmp_path / "p" / "predictions.json").read_text())[0]["detections"]:
        assert LABEL_MAP[back[d["category_id"]]] == d["label"]
    result = CliRunner().invoke(main, ["evaluate", "-p", checkpoint, "-t", other, "--output", str(tmp_path / "x"),
                                       "--no-progress", "--class-map", "rot=crimson"])
    assert result.exit_code == 1 and "'rot' is not a class of the model" in result.output


# ---------------------------------------------------------------------------------------------
# hardening round 3 (issue 23): one run per folder, resume as recorded, one-line errors, info on checkpoints

ONE_STEP = ["model.min_size=64", "model.max_size=64", "data.image_size=null", "train.max_steps_per_epoch=1",
            "eval.batch_size=4", "train.tb_images=0"]


def _train(*args):
    return CliRunner().invoke(main, ["train", "--no-progress", *args])


def test_resume_continues_the_run_as_recorded(trained, tmp_path, caplog):
    """issue 23: after `--val-data ./real-val`, batch 2 and N epochs, `train --train-data X --checkpoint-dir run1
    --resume` trained to cpu_small's 10 epochs at its batch 8, validated on a 90/10 split and rewrote config.yaml,
    without a word. Now the run's recorded config and data are used; changes must be asked for."""
    _, train_dir, test_dir = trained
    ck = tmp_path / "run1"
    result = _train("-t", train_dir, "-e", test_dir, "--checkpoint-dir", str(ck),
                    *_overrides(ONE_STEP + ["train.batch_size=2", "train.epochs=1"]))
    assert result.exit_code == 0, result.output
    recorded = (ck / "config.yaml").read_text()
    # the command line: no --config, no --val-data
    result = _train("-t", train_dir, "--checkpoint-dir", str(ck), "--resume")
    assert result.exit_code == 0, result.output
    assert "trained 1 epochs" in result.output and (ck / "config.yaml").read_text() == recorded
    # a resumable change, asked for; not even --train-data is needed
    with caplog.at_level("INFO", logger="synthgap.engine.train"):
        result = _train("--checkpoint-dir", str(ck), "--resume", "--override", "train.epochs=2")
    assert result.exit_code == 0, result.output
    assert "resuming with train.epochs 1 -> 2" in caplog.text and f"validating on {test_dir}" in caplog.text
    saved = load_config(str(ck / "config.yaml"))
    assert (saved.train.epochs, saved.train.batch_size, saved.data.val) == (2, 2, test_dir)
    # another batch size: refused, folder untouched
    before = {p.name: p.stat().st_mtime_ns for p in ck.iterdir()}
    result = _train("--checkpoint-dir", str(ck), "--resume", "--override", "train.epochs=3", "--override",
                    "train.batch_size=4")
    assert result.exit_code == 1 and "cannot resume: the run was trained with other settings (train.batch_size: 2 " \
        "in the run, 4 now)" in result.output, result.output
    assert "Traceback" not in result.output and {p.name: p.stat().st_mtime_ns for p in ck.iterdir()} == before
    # --config on resume: its defaults must not replace the run's settings unnoticed
    result = _train("--config", "cpu_small", "--checkpoint-dir", str(ck), "--resume")
    assert result.exit_code == 2 and "--config differs from it" in result.output and "train.batch_size: 2 in the run, " \
        "8 in --config" in result.output, result.output


def test_a_used_checkpoint_dir_needs_resume_or_overwrite(trained, tmp_path):
    _, train_dir, _ = trained
    ck = tmp_path / "ck"
    args = ["-t", train_dir, "--no-val", "--checkpoint-dir", str(ck), *_overrides(ONE_STEP + ["train.epochs=2"])]
    assert _train(*args).exit_code == 0
    result = _train(*args[:-2], "--override", "train.epochs=1")
    assert result.exit_code == 1 and f"Error: {ck} holds the checkpoints of another run" in result.output
    assert result.output.count("\n") == 1
    result = _train(*args[:-2], "--override", "train.epochs=1", "--overwrite")
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(ck)) == ["FasterRCNN.ep1.estimator", "FasterRCNN.last.estimator", "config.yaml"]


def test_bad_training_input_is_a_one_line_error(trained, tmp_path):
    """issue 23: label id 0 (ValueError) and a diverging run (FloatingPointError, or exit 0 with AdamW) were
    tracebacks or silent; now one line each, exit 1."""
    from synthgap.data.coco import CocoWriter
    from synthgap.generate.shapes import make_samples

    _, train_dir, test_dir = trained
    samples = make_samples(tmp_path, 2, size=(64, 64))
    with CocoWriter(str(tmp_path / "zero"), {0: "thing", 1: "red", 2: "green", 3: "blue"}) as w:
        for s in samples:
            w.add(s)
    result = _train("-t", str(tmp_path / "zero"), "--checkpoint-dir", str(tmp_path / "ck0"))
    assert result.exit_code == 1 and "label id 0 ('thing')" in result.output and result.output.count("\n") == 1
    result = _train("-t", train_dir, "-e", test_dir, "--checkpoint-dir", str(tmp_path / "ck1"),
                    *_overrides(ONE_STEP[:3] + ["train.batch_size=2", "optimizer.name=sgd", "optimizer.lr=10",
                                                "optimizer.warmup_steps=0"]))
    assert result.exit_code == 1 and result.output.startswith("Error: training diverged at step 2 (epoch 1, batch 1)")
    assert "Traceback" not in result.output and not list((tmp_path / "ck1").glob("*.estimator"))


def test_info_describes_a_checkpoint(trained):
    """issue 23: `synthgap info FasterRCNN.best.estimator` said "no reader recognises this path"."""
    root, _, _ = trained
    path = str(root / "ck" / "FasterRCNN.best.estimator")
    result = CliRunner().invoke(main, ["info", path])
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"checkpoint:   {path}" in out and "architecture: fasterrcnn_small_gn" in out
    assert "classes:      3" in out and "red" in out and "epoch:        1 (step 1)" in out
    assert "resumable:    no (FasterRCNN.best/ep files hold the model and config only)" in out
    assert "val AP " in out and "\nconfig:\n  model:\n    name: fasterrcnn_small_gn" in out
    report = json.loads(CliRunner().invoke(main, ["info", path, "--json"]).output)
    assert report["architecture"] == "fasterrcnn_small_gn" and report["classes"] == {"1": "red", "2": "green",
                                                                                      "3": "blue"}
    assert report["epoch"] == 1 and report["config"]["train"]["epochs"] == 1
    result = CliRunner().invoke(main, ["info", str(root / "ck" / "missing.estimator")])
    assert result.exit_code == 1 and "checkpoint file not found" in result.output
