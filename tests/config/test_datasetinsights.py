"""datasetinsights' estimator YAML (the files it shipped, in tests/fixtures/datasetinsights) read as synthgap
configs, its --override "a=1 b=2" form, and its short CLI flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from synthgap.cli import main
from synthgap.config import datasetinsights
from synthgap.config import Config, ConfigError, load_config, read_config
from synthgap.data import open_dataset

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "datasetinsights"
SYNTHETIC = str(FIXTURES / "faster_rcnn_synthetic.yaml")
REAL = str(FIXTURES / "faster_rcnn_groceries_real.yaml")
FINE_TUNE = str(FIXTURES / "faster_rcnn_fine_tune.yaml")


def test_synthetic_config_translates():
    cfg, lines = read_config(SYNTHETIC)
    assert cfg.model.name == "fasterrcnn_resnet50_fpn"
    assert (cfg.optimizer.name, cfg.optimizer.lr) == ("adam", 2e-4)
    assert (cfg.train.batch_size, cfg.train.accumulation_steps, cfg.train.epochs) == (4, 8, 10)
    assert (cfg.train.log_every, cfg.train.val_interval, cfg.eval.batch_size) == (10, 1, 4)
    # SynDetection2D's seeded 90/10 train/val split of one run, and GroceriesReal's named test split
    assert (cfg.data.train_split, cfg.data.val_split, cfg.data.split_seed) == ("train", "val", 47)
    assert cfg.data.test_split == "test"
    text = "\n".join(lines)
    for key in ("estimator", "backbone", "num_classes", "train.dataset.args.split", "optimizer.args.lr",
                "pretrained_backbone", "metrics.mean-average-precision.name", "train.dataset.args.def_id"):
        assert f"{key}:" in text, key
    assert "optimizer.args.lr: 0.0002 -> optimizer.lr: 0.0002" in lines
    # datasetinsights' torchvision ImageNet backbone (frozen BatchNorm), fetched through torch.hub's cache
    assert "pretrained_backbone: True -> model.weights_backbone: 'imagenet'" in lines
    assert cfg.model.weights_backbone == "imagenet" and cfg.model.weights is None


def test_real_and_fine_tune_configs_translate():
    real, _ = read_config(REAL)
    assert (real.data.train_split, real.data.val_split, real.data.test_split) == ("train", "val", "test")
    assert (real.train.epochs, real.train.batch_size, real.eval.batch_size, real.train.log_every) == (80, 8, 8, 30)
    assert real.model.weights is None  # `checkpoint_file: None` is yacs' text for "none"
    fine, lines = read_config(FINE_TUNE)
    assert fine.optimizer.lr == 2e-5 and fine.train.epochs == 30
    assert any(line.startswith("mlflow.experiment_name") and "--mlflow-uri" in line for line in lines)


def test_load_config_reads_datasetinsights_yaml_too():
    """The library entry point (used by evaluate, study) translates as well."""
    assert load_config(REAL) == read_config(REAL)[0]


def test_synthgap_configs_pass_through():
    cfg, lines = read_config("cpu_small", ["train.epochs=2 eval.batch_size=3"])
    assert lines == [] and cfg == load_config("cpu_small", ["train.epochs=2", "eval.batch_size=3"])


def _write(tmp_path, raw) -> str:
    path = tmp_path / "di.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_keys_without_meaning_are_refused_by_name(tmp_path):
    raw = yaml.safe_load(Path(SYNTHETIC).read_text())
    raw["estimator"] = "DenseDepth"
    raw["optimizer"]["args"]["betas"] = [0.9, 0.99]
    raw["lr_scheduler"] = {"name": "StepLR"}
    with pytest.raises(ConfigError) as err:
        read_config(_write(tmp_path, raw))
    message = str(err.value)
    assert "'estimator' ('DenseDepth')" in message and "'optimizer.args.betas'" in message
    assert "'lr_scheduler.name'" in message and "di.yaml" in message
    raw = yaml.safe_load(Path(SYNTHETIC).read_text())
    raw["val"]["dataset"]["args"]["random_seed"] = 48
    with pytest.raises(ConfigError, match="'val.dataset.args.random_seed'"):
        read_config(_write(tmp_path, raw))
    for key, value in [("backbone", "resnet18"), ("task", "segmentation")]:
        raw = yaml.safe_load(Path(SYNTHETIC).read_text())
        raw[key] = value
        with pytest.raises(ConfigError, match=f"'{key}'"):
            read_config(_write(tmp_path, raw))


def test_pretrained_maps_to_torchvision_weights(tmp_path):
    """datasetinsights' `pretrained: True` was torchvision's COCO detector; a checkpoint_file replaces it."""
    raw = yaml.safe_load(Path(SYNTHETIC).read_text())
    raw["pretrained"] = True
    cfg, lines = read_config(_write(tmp_path, raw))
    assert (cfg.model.weights, cfg.model.weights_backbone) == ("coco", None)
    assert "pretrained: True -> model.weights: 'coco'" in lines
    raw["checkpoint_file"] = "gs://bucket/FasterRCNN.estimator"
    cfg, _ = read_config(_write(tmp_path, raw))
    assert cfg.model.weights == "gs://bucket/FasterRCNN.estimator"


def test_overrides_in_both_namespaces():
    cfg, lines = read_config(REAL, ["optimizer.args.lr=0.001 train.epochs=3",
                                             "model.min_size=320 eval.protocols=[coco, unity]"])
    assert cfg.optimizer.lr == 0.001 and cfg.train.epochs == 3  # set in the datasetinsights YAML, then translated
    assert "optimizer.args.lr: 0.001 -> optimizer.lr: 0.001" in lines
    assert cfg.model.min_size == 320 and cfg.eval.protocols == ["coco", "unity"]  # synthgap keys, after
    with pytest.raises(ConfigError, match="unknown key 'train.nope'"):
        read_config(REAL, ["train.nope=1"])


def test_split_overrides():
    assert datasetinsights.split_overrides(["a=1 b.c=2", "d=[1, 2]  e=x y"]) == ["a=1", "b.c=2", "d=[1, 2]",
                                                                                 "e=x y"]
    assert datasetinsights.split_overrides(["  train.epochs=3  "]) == ["train.epochs=3"]


def test_split_reaches_the_reader(tmp_path):
    from tests.data.test_groceries_real import make_groceries

    root = str(make_groceries(tmp_path / "groceries"))
    assert len(open_dataset(root, split=load_config(REAL).data.train_split)) == 3
    assert len(open_dataset(root, split=None)) == 5
    with pytest.raises(ValueError, match="split='train' does not apply to coco"):
        from synthgap.generate.shapes import make_coco

        open_dataset(make_coco(tmp_path / "coco", 1), split="train")


@pytest.mark.slow
def test_cli_short_flags_and_printed_translation(tmp_path):
    """datasetinsights' `train -c CONFIG -t DATA -e DATA -p -l -w --override "a=1 b=2"` works as written."""
    from synthgap.generate.shapes import make_coco

    data = make_coco(tmp_path / "train", 2, size=(64, 64), seed=1)
    overrides = ("model.name=fasterrcnn_mobilenet_v3_large_320_fpn model.weights_backbone=null "
                 "model.min_size=64 model.max_size=64 "
                 "train.epochs=1 train.batch_size=2 train.accumulation_steps=1 train.tb_images=0")
    result = CliRunner().invoke(main, ["train", "-c", SYNTHETIC, "-t", data, "-e", data, "-l", str(tmp_path / "tb"),
                                       "-w", "0", "--checkpoint-dir", str(tmp_path / "ck"), "--no-progress",
                                       "--override", overrides, "--output", str(tmp_path / "summary.json")])
    assert result.exit_code == 0, result.output
    assert "datasetinsights config, translated:" in result.output
    assert "backbone: 'resnet50' -> model.name: 'fasterrcnn_resnet50_fpn'" in result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["steps"] == 1
    written = load_config(str(tmp_path / "ck" / "config.yaml"))
    assert written.model.name == "fasterrcnn_mobilenet_v3_large_320_fpn" and written.optimizer.lr == 2e-4
    assert list((tmp_path / "tb").iterdir())

    result = CliRunner().invoke(main, ["evaluate", "-c", REAL, "-p", str(tmp_path / "ck" / "FasterRCNN.last.estimator"),
                                       "-t", data, "-w", "0", "--override", "data.test_split=null eval.batch_size=2",
                                       "--output", str(tmp_path / "eval"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "eval" / "metrics_coco.json").exists()


def test_cli_refusal_names_the_key(tmp_path):
    raw = yaml.safe_load(Path(SYNTHETIC).read_text())
    raw["train"]["dataset"]["args"]["shuffle"] = True
    result = CliRunner().invoke(main, ["train", "-c", _write(tmp_path, raw), "-t", str(tmp_path)])
    assert result.exit_code == 2
    assert "'train.dataset.args.shuffle'" in result.output


def test_is_a_config():
    assert isinstance(read_config(SYNTHETIC)[0], Config)


def test_val_and_test_batch_sizes_that_differ_are_reported(tmp_path):
    raw = yaml.safe_load(Path(REAL).read_text())
    raw["test"]["batch_size"], raw["val"]["batch_size"] = 2, 16
    raw = {k: raw[k] for k in ["test", *[k for k in raw if k != "test"]]}  # test before val in the file
    cfg, lines = read_config(_write(tmp_path, raw))
    assert cfg.eval.batch_size == 2
    assert any(line.startswith("eval.batch_size: 2 (test's; val's 16 differs") for line in lines)
