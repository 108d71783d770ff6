"""The pipeline steps' plain-Python side: CLI arguments, checkpoint choice, dataset root."""

from __future__ import annotations

import json
import shutil

import click
import pytest
from PIL import Image

from synthgap.data import DatasetError, open_dataset
from synthgap.pipelines import steps


def test_train_args_follow_the_cli_flags():
    args = steps.train_args(config="real", train_data="/data/d", val_data="/data/v", checkpoint_dir="ck",
                            tb_log_dir="tb", checkpoint_file="gs://b/FasterRCNN.estimator",
                            overrides=["train.epochs=1", "train.batch_size=2"], num_gpus=0)
    assert args == ["train", "--config", "real", "--train-data", "/data/d", "--val-data", "/data/v",
                    "--checkpoint-dir", "ck", "--tb-log-dir", "tb", "--output", "ck/summary.json",
                    "--checkpoint-file", "gs://b/FasterRCNN.estimator",
                    "--override", "train.epochs=1", "--override", "train.batch_size=2", "--no-cuda"]
    gpu = steps.train_args(config="real", train_data="d", val_data="v", checkpoint_dir="ck", tb_log_dir="tb",
                           num_gpus=1)
    assert "--no-cuda" not in gpu and "--checkpoint-file" not in gpu


def test_several_gpus_in_one_pod_run_under_torchrun():
    assert steps.pod_launcher(0) == steps.pod_launcher(1) == []
    assert steps.pod_launcher(4) == ["torch.distributed.run", "--standalone", "--nproc-per-node=4"]


def test_train_args_match_the_train_command():
    """Every flag the steps pass exists on `synthgap train` / `synthgap evaluate`."""
    from synthgap.cli import main

    ctx = click.Context(main)
    train_flags = {opt for p in main.get_command(ctx, "train").params for opt in p.opts}
    used = {a for a in steps.train_args(config="c", train_data="d", val_data="v", checkpoint_dir="x", tb_log_dir="t",
                                        checkpoint_file="f", overrides=["a=1"], num_gpus=0) if a.startswith("--")}
    assert used <= train_flags
    evaluate_flags = {opt for p in main.get_command(ctx, "evaluate").params for opt in p.opts}
    assert {"--config", "--checkpoint-file", "--test-data", "--output", "--tb-log-dir", "--override",
            "--no-cuda"} <= evaluate_flags


def test_trained_checkpoint_prefers_best_then_last(tmp_path):
    with pytest.raises(FileNotFoundError, match="FasterRCNN.last.estimator"):
        steps.trained_checkpoint(str(tmp_path))
    (tmp_path / "FasterRCNN.ep1.estimator").write_bytes(b"x")
    (tmp_path / "FasterRCNN.last.estimator").write_bytes(b"x")
    assert steps.trained_checkpoint(str(tmp_path)) == str(tmp_path / "FasterRCNN.last.estimator")
    (tmp_path / "FasterRCNN.best.estimator").write_bytes(b"x")
    assert steps.trained_checkpoint(str(tmp_path)) == str(tmp_path / "FasterRCNN.best.estimator")


def test_dataset_root_descends_into_the_single_unpacked_folder(tmp_path, solo_fixture):
    shutil.copytree(solo_fixture, tmp_path / "out" / "v3")
    assert steps.dataset_root(str(tmp_path / "out")) == str(tmp_path / "out" / "v3")
    assert steps.dataset_root(str(tmp_path / "out" / "v3")) == str(tmp_path / "out" / "v3")
    (tmp_path / "out" / "other").mkdir()
    with pytest.raises(DatasetError):
        steps.dataset_root(str(tmp_path / "out"))


def _groceries_real(root, n=5):
    """A tiny UnityGroceries-Real v3 folder: n images, one box each, train/val/test split files."""
    (root / "images").mkdir(parents=True)
    records = []
    for i in range(n):
        Image.new("RGB", (40, 30)).save(root / "images" / f"IMG_{i}.JPG", format="JPEG")
        records.append({"file_name": f"IMG_{i}.JPG", "annotations": [{"label_id": 1, "bbox": [2, 3, 10, 8]}]})
    (root / "annotations.json").write_text(json.dumps(records))
    (root / "annotation_definitions.json").write_text(json.dumps({"annotation_definitions": [
        {"id": "b", "name": "bounding box", "format": "JSON", "spec": [{"label_id": 1, "label_name": "soup"}]}]}))
    for name, idx in {"train": "0 1 2", "val": "3", "test": "4"}.items():
        (root / f"groceries_real_{name}.txt").write_text(idx + "\n")
    return root


def test_select_split_writes_a_coco_view_of_one_split(tmp_path):
    root = _groceries_real(tmp_path / "download" / "v3")
    download = steps.dataset_root(str(tmp_path / "download"))  # the groceries reader accepts v3's parent
    assert steps.select_split(download, "", str(tmp_path / "unused")) == download
    assert not (tmp_path / "unused").exists()
    train = steps.select_split(download, "train", str(tmp_path / "splits" / "train"))
    test = steps.select_split(download, "test", str(tmp_path / "splits" / "test"))
    assert sorted(p.name for p in (tmp_path / "splits" / "train").iterdir()) == ["annotations.json"]  # no copies
    train_set, test_set = open_dataset(train), open_dataset(test)
    assert len(train_set) == 3 and len(test_set) == 1
    assert test_set[0].image == str(root / "images" / "IMG_4.JPG")
    assert test_set[0].boxes.tolist() == [[2, 3, 10, 8]] and train_set.label_map == {1: "soup"}


def _evaluation_folder(tmp_path):
    """What `synthgap evaluate --output` writes, made with the real metrics code on tiny samples."""
    from synthgap.generate.shapes import LABEL_MAP, make_samples
    from synthgap import metrics

    (tmp_path / "img").mkdir()
    samples = make_samples(tmp_path / "img", 3, seed=2)
    dets = [{"image_id": s.image_id, "category_id": int(label), "bbox": [x + 1, y, w, h], "score": 0.8}
            for s in samples for (x, y, w, h), label in zip(s.boxes.tolist(), s.labels.tolist())]
    out = tmp_path / "eval"
    out.mkdir()
    for protocol in ("coco", "unity"):
        result = metrics.evaluate(samples, dets, protocol, label_map=LABEL_MAP)
        (out / f"metrics_{protocol}.json").write_text(json.dumps(result.to_dict()))
        (out / f"per_class_{protocol}.txt").write_text(result.table() + "\n")
    return out


def test_evaluation_metrics_and_markdown_for_the_kfp_ui(tmp_path):
    out = _evaluation_folder(tmp_path)
    values = steps.evaluation_metrics(str(out))
    coco = json.loads((out / "metrics_coco.json").read_text())["stats"]
    unity = json.loads((out / "metrics_unity.json").read_text())["stats"]
    assert len(coco) == 12
    assert values == {**{f"coco_{k}": v for k, v in coco.items()}, **{f"unity_{k}": v for k, v in unity.items()}}
    text = steps.evaluation_markdown(str(out), "ck/FasterRCNN.best.estimator", "/data/test")
    assert "## coco" in text and "## unity" in text and "`ck/FasterRCNN.best.estimator`" in text
    assert "| " + " | ".join(coco) + " |" in text
    assert (out / "per_class_coco.txt").read_text().strip() in text


def test_training_metrics_read_the_summary(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps(
        {"epochs": 2, "steps": 6, "best_ap": 0.25, "images_per_s": 3.5, "loss": {"loss": 1.0},
         "metrics": {"AP": 0.2, "AP50": 0.4, "APs": -1.0}}))
    assert steps.training_metrics(str(tmp_path)) == {"val_AP": 0.2, "val_AP50": 0.4, "val_APs": -1.0,
                                                     "best_val_AP": 0.25, "epochs": 2.0, "steps": 6.0,
                                                     "images_per_s": 3.5}
    (tmp_path / "summary.json").write_text(json.dumps({"epochs": 1, "steps": 1, "best_ap": None, "metrics": {}}))
    assert steps.training_metrics(str(tmp_path)) == {"epochs": 1.0, "steps": 1.0}


def test_a_retried_step_resumes_the_earlier_attempt_instead_of_passing_the_initial_weights(tmp_path):
    args = steps.train_args(config="c", train_data="d", val_data="v", checkpoint_dir="ck", tb_log_dir="t",
                            checkpoint_file="init.estimator", resume=True)
    assert "--resume" in args and "--checkpoint-file" not in args
    assert not steps.is_retry(str(tmp_path))
    (tmp_path / "FasterRCNN.last.estimator").write_bytes(b"x")
    assert steps.is_retry(str(tmp_path))


@pytest.mark.slow
def test_a_retried_train_step_runs_where_the_first_attempt_left_its_checkpoints(tmp_path):
    """Kubeflow retries a step with the same arguments; the retry finds the first attempt's files and resumes
    (before: `synthgap train` refused the folder as another run's)."""
    from synthgap.generate.shapes import make_coco

    data = make_coco(tmp_path / "data", 4)
    kw = dict(config="cpu_small", train_data=data, val_data=data, checkpoint_dir=str(tmp_path / "ck"),
              tb_log_dir=str(tmp_path / "tb"), overrides=["train.epochs=1", "data.image_size=[96,80]"])
    first = steps.train(**kw)
    assert steps.is_retry(kw["checkpoint_dir"])
    assert steps.train(**kw) == first
