"""The training loop, on tiny generated data (coloured rectangles, tests/shapes.py)."""

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from shapes import LABEL_MAP, make_coco, make_samples
from synthgap import storage
from synthgap.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from synthgap.config import load_config
from synthgap.data.coco import CocoWriter
from synthgap.models import build_model
from synthgap.train import train

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
TINY = ["model.min_size=64", "model.max_size=64", "data.image_size=null", "train.batch_size=4", "eval.batch_size=4",
        "train.log_every=1", "train.tb_images=2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return make_coco(root / "train", 8, size=(64, 64), seed=1), make_coco(root / "val", 4, size=(64, 64), seed=2)


def _weights(path):
    return load_checkpoint(str(path))["model"]


def _same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_one_epoch_writes_checkpoints_and_tensorboard(data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_dir, val_dir = data
    cfg = load_config("cpu_small", TINY + ["train.epochs=1"])
    summary = train(cfg, train_data=train_dir, val_data=val_dir, checkpoint_dir=str(tmp_path / "ck"),
                    tb_log_dir=str(tmp_path / "tb"), progress=False)
    assert summary["epochs"] == 1 and summary["steps"] == 2 and np.isfinite(summary["loss"]["loss"])
    assert set(os.listdir(tmp_path / "ck")) == {"FasterRCNN.ep1.estimator", "FasterRCNN.best.estimator",
                                               "FasterRCNN.last.estimator", "config.yaml"}
    ck = load_checkpoint(str(tmp_path / "ck" / "FasterRCNN.last.estimator"))
    assert ck["epoch"] == 1 and ck["step"] == 2 and ck["label_map"] == LABEL_MAP
    assert ck["config"]["model"]["name"] == "fasterrcnn_mobilenet_v3_large_320_fpn"
    assert set(ck["rng"]) == {"torch", "cuda", "numpy", "python"} and ck["optimizer"]["state"]
    assert ck["synthgap_version"] and "AP" in ck["metrics"] and ck["best_ap"] == ck["metrics"]["AP"]

    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in ("train/loss", "train/loss_classifier", "train/loss_objectness", "train/lr", "train/images_per_s",
                "epoch/images_per_s", "val/AP", "val/AP50", "val/AR100"):
        assert tag in tags["scalars"], tag
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2]
    assert acc.Scalars("train/lr")[0].value == pytest.approx(cfg.optimizer.lr)
    assert acc.Scalars("val/AP")[0].value == pytest.approx(ck["metrics"]["AP"])
    assert {t for t in tags["scalars"] if t.startswith("val_per_class_AP/")} <= {f"val_per_class_AP/{n}"
                                                                               for n in LABEL_MAP.values()}
    assert tags["images"] == ["val_images/0", "val_images/1"]
    image = acc.Images("val_images/0")[0]
    assert (image.width, image.height) == (64, 64)
    assert all(t.startswith("val_pr_iou50/") for t in tags["tensors"])


def test_bf16_autocast_on_cpu_trains(data, tmp_path):
    train_dir, _ = data
    cfg = load_config("cpu_small", TINY + ["train.epochs=1", "train.amp=bf16", "train.max_steps_per_epoch=1"])
    initial = build_model(cfg.model, 4).state_dict()
    summary = train(cfg, train_data=train_dir, checkpoint_dir=str(tmp_path / "ck"), progress=False)
    assert summary["steps"] == 1 and np.isfinite(summary["loss"]["loss"])
    trained = _weights(tmp_path / "ck" / "FasterRCNN.last.estimator")
    assert all(v.dtype == initial[k].dtype for k, v in trained.items())  # weights stay fp32 under autocast
    assert not _same_weights(initial, trained)
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        train(load_config("cpu_small", ["train.amp=fp16"]), train_data=train_dir, checkpoint_dir=str(tmp_path),
              no_cuda=True, progress=False)


def test_finetune_from_other_label_map_reinitialises_predictor(data, tmp_path, caplog):
    """--checkpoint-file without --resume: backbone weights are taken, the optimizer is fresh, and a
    different label map gets a new box predictor (and a log line saying so)."""
    train_dir, _ = data
    cfg = load_config("cpu_small", TINY + ["train.epochs=1", "train.max_steps_per_epoch=1"])
    torch.manual_seed(123)
    source = build_model(cfg.model, 3)
    path = tmp_path / "other.estimator"
    save_checkpoint(make_checkpoint(model=source, epoch=5, step=50, config=cfg.to_dict(),
                                    label_map={1: "cat", 2: "dog"}), str(path))
    with caplog.at_level(logging.INFO, logger="synthgap.train"):  # checkpoints and events to a URI
        summary = train(cfg, train_data=train_dir, checkpoint_dir="memory://run-ft/ck", checkpoint_file=str(path),
                        tb_log_dir="memory://run-ft/tb", progress=False)
    assert "box predictor was re-initialised for 3 classes" in caplog.text
    assert summary["steps"] == 1  # a fresh run: epoch/step counters start at 0
    assert storage.glob("memory://run-ft/tb/events.out.tfevents.*")
    ck = load_checkpoint("memory://run-ft/ck/FasterRCNN.last.estimator")
    assert ck["model"]["roi_heads.box_predictor.cls_score.weight"].shape[0] == 4
    assert ck["optimizer"]["state"][0]["step"] == 1  # fresh Adam state


def test_gradient_accumulation_steps_once_per_window(data, tmp_path):
    train_dir, _ = data
    cfg = load_config("cpu_small", TINY + ["train.epochs=1", "train.accumulation_steps=2"])
    summary = train(cfg, train_data=train_dir, checkpoint_dir=str(tmp_path / "ck"), progress=False)
    assert summary["steps"] == 1  # 2 batches, one optimizer step
    assert load_checkpoint(str(tmp_path / "ck" / "FasterRCNN.last.estimator"))["optimizer"]["state"][0]["step"] == 1


def test_label_zero_is_refused(tmp_path):
    samples = make_samples(tmp_path, 2, size=(64, 64))
    with CocoWriter(str(tmp_path / "ds"), {0: "thing", 1: "red", 2: "green", 3: "blue"}) as w:
        for s in samples:
            w.add(s)
    with pytest.raises(ValueError, match="label id 0 .*reserves label 0 for the background"):
        train(load_config("cpu_small"), train_data=str(tmp_path / "ds"), checkpoint_dir=str(tmp_path / "ck"))


def _cli(*args, env=None):
    return [PYTHON, "-m", "synthgap", "train", "--config", "cpu_small", "--no-progress", *args]


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(data, tmp_path):
    """Run A trains 3 epochs. Run B is SIGKILLed as soon as its first `last` checkpoint exists, then resumed
    with --resume; its final weights must equal A's bit for bit (CPU, same seed)."""
    train_dir, _ = data
    common = ["--train-data", train_dir, "--no-val", "--seed", "5"] + \
        [a for o in TINY + ["train.epochs=3"] for a in ("--override", o)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    subprocess.run(_cli(*common, "--checkpoint-dir", str(tmp_path / "a")), check=True, env=env, capture_output=True)

    b = tmp_path / "b"
    proc = subprocess.Popen(_cli(*common, "--checkpoint-dir", str(b)), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (b / "FasterRCNN.last.estimator").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (b / "FasterRCNN.ep3.estimator").exists(), "the run finished before it could be killed"
    killed_at = load_checkpoint(str(b / "FasterRCNN.last.estimator"))["epoch"]
    assert killed_at in (1, 2)
    subprocess.run(_cli(*common, "--checkpoint-dir", str(b), "--resume"), check=True, env=env, capture_output=True)
    final_a, final_b = _weights(tmp_path / "a" / "FasterRCNN.last.estimator"), _weights(b / "FasterRCNN.last.estimator")
    assert _same_weights(final_a, final_b)
    ep1_a = _weights(tmp_path / "a" / "FasterRCNN.ep1.estimator")
    assert not _same_weights(ep1_a, final_a)  # the weights did change over the two last epochs


@pytest.mark.slow
def test_ddp_two_processes_gloo(data, tmp_path):
    """torchrun with 2 CPU processes (gloo): one set of checkpoints, written by rank 0, identical
    weights on both ranks (train() all-gathers a parameter checksum and logs it), finite loss."""
    train_dir, val_dir = data
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    torchrun = str(Path(PYTHON).parent / "torchrun")
    out = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", "-m", "synthgap", "train", "--config", "cpu_small",
         "--no-progress", "--train-data", train_dir, "--val-data", val_dir, "--checkpoint-dir", str(tmp_path / "ck"),
         "--output", str(tmp_path / "summary.json")] + [a for o in TINY + ["train.epochs=1"]
                                                         for a in ("--override", o)],
        env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "ck")) == ["FasterRCNN.best.estimator", "FasterRCNN.ep1.estimator",
                                                  "FasterRCNN.last.estimator", "config.yaml"]
    ck = load_checkpoint(str(tmp_path / "ck" / "FasterRCNN.last.estimator"))
    assert ck["step"] == 1  # 8 images / (2 ranks x batch 4) = 1 step per epoch
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert out.stdout.count("trained 1 epochs") == 2  # both ranks finished
    assert "AP" in ck["metrics"]  # validation predictions gathered from both ranks, scored on rank 0
    assert "weights identical on 2 ranks" in out.stderr


@pytest.mark.slow
def test_learns_coloured_rectangles(tmp_path):
    """The small CPU model, trained from scratch on 64 images of coloured rectangles (128x128 px,
    1-2 boxes, 3 classes by colour), reaches a real learning signal on 16 held-out images.

    Measured on the 2-core dev machine (CPU, seed 47, box_score_thresh 0 so that an untrained model
    also produces ranked detections): the untrained model scores AP50 0.002; training for 10 epochs
    x 8 steps of batch 8 (Adam 1e-3), validation AP50 per epoch was 0.004, 0.001, 0.002, 0.003,
    0.003, 0.005, 0.07, 0.09, 0.27, 0.40 (the run is deterministic: two runs gave the same figures).
    The best checkpoint (by AP@[.5:.95]) is epoch 9, AP50 0.27. The threshold, AP50 >= 0.15 and
    >= 10x the untrained score, sits well below the trained value and 75x above the untrained one.
    About 90 s on an idle machine.
    """
    from synthgap.evaluate import compute_metrics, eval_dataset, make_eval_loader, original_sizes, predict_detections
    from synthgap.data import open_dataset

    train_dir = make_coco(tmp_path / "train", 64, size=(128, 128), seed=1)
    val_dir = make_coco(tmp_path / "val", 16, size=(128, 128), seed=2)
    cfg = load_config("cpu_small", ["model.min_size=128", "model.max_size=128", "data.image_size=null",
                                    "model.box_score_thresh=0.0", "train.epochs=10", "train.batch_size=8",
                                    "optimizer.lr=1e-3", "train.tb_images=0"])
    val = list(open_dataset(val_dir))
    torch.manual_seed(cfg.train.seed)  # the same initial weights train() starts from
    untrained = build_model(cfg.model, 4)
    device = torch.device("cpu")
    detections = predict_detections(untrained, make_eval_loader(eval_dataset(val, None), 8, 0, device), device,
                                    original_sizes(val))
    untrained_ap50 = compute_metrics(val, detections, LABEL_MAP).stats["AP50"]

    train(cfg, train_data=train_dir, val_data=val_dir, checkpoint_dir=str(tmp_path / "ck"), progress=False)
    best = load_checkpoint(str(tmp_path / "ck" / "FasterRCNN.best.estimator"))["metrics"]
    assert best["AP50"] >= 0.15 and best["AP50"] >= 10 * max(untrained_ap50, 0.0), (untrained_ap50, best)
