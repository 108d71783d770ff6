"""The training loop, on tiny generated data (coloured rectangles, tests/shapes.py)."""

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from synthgap.generate.shapes import LABEL_MAP, make_coco, make_samples
from synthgap.io import storage
from synthgap.models.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from synthgap.config import load_config
from synthgap.data.coco import CocoWriter
from synthgap.errors import CheckpointError, ConfigError, DatasetError
from synthgap.models import build_model
from synthgap.engine.train import train

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
TINY = ["model.min_size=64", "model.max_size=64", "data.image_size=null", "optimizer.warmup_steps=0",
        "train.batch_size=4", "eval.batch_size=4", "train.log_every=1", "train.tb_images=2"]


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
    assert ck["config"]["model"]["name"] == "fasterrcnn_small_gn"
    assert set(ck["rng"]) == {"torch", "cuda", "numpy", "python"} and ck["optimizer"]["state"]
    assert ck["synthgap_version"] and "AP" in ck["metrics"] and ck["best_ap"] == ck["metrics"]["AP"]
    saved = load_config(str(tmp_path / "ck" / "config.yaml"))  # the run's config names the data it used
    assert (saved.data.train, saved.data.val) == (train_dir, val_dir) and cfg.data.train is None

    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in ("train/loss", "train/loss_classifier", "train/loss_objectness", "train/lr", "train/images_per_s",
                "epoch/images_per_s", "val/AP", "val/AP50", "val/AR100"):
        assert tag in tags["scalars"], tag
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2]
    assert acc.Scalars("train/lr")[0].value == pytest.approx(cfg.optimizer.lr)  # no warm-up (TINY)
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
    with caplog.at_level(logging.INFO, logger="synthgap.engine.train"):  # checkpoints and events to a URI
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
    """The from-scratch CPU model (fasterrcnn_small_gn), trained on 64 images of coloured rectangles
    (96x96 px, 1-2 boxes of 19-48 px, 3 classes by colour), detects them on 32 held-out images.

    Measured (CPU, seed 47, box_score_thresh 0 so that an untrained model also ranks detections;
    10 epochs x 8 steps of batch 8, AdamW 1e-3, 20 warm-up steps), validation AP50 per epoch:
      torch.set_num_threads(1): 0.011, 0.047, 0.156, 0.280, 0.470, 0.639, 0.615, 0.788, 0.759, 0.886
      torch.set_num_threads(2): 0.011, 0.044, 0.158, 0.222, 0.442, 0.688, 0.791, 0.710, 0.774, 0.841
    Thread counts change the kernels and so the numbers (as another CPU does), not the shape: the
    model takes off at epoch 3-5 and stays >= 0.6 from epoch 6 on. The threshold, last-epoch AP50
    >= 0.3 (and >= 10x the untrained score), is 2.8-3x below the measured values. The recipe is
    pinned here (not taken from cpu_small) so that tuning the demo's model cannot move this test.
    The untrained model scores AP50 ~0.01. About 60 s on an idle 2-core machine.
    """
    from synthgap.data import open_dataset
    from synthgap.metrics import evaluate
    from synthgap.engine.predict import predict_samples

    train_dir = make_coco(tmp_path / "train", 64, size=(96, 96), seed=1)
    val_dir = make_coco(tmp_path / "val", 32, size=(96, 96), seed=2)
    cfg = load_config("cpu_small", [
        "model.name=fasterrcnn_small_gn", "model.backbone_widths=[32,64,128,128]", "model.backbone_norm=group",
        "model.min_size=96", "model.max_size=96", "data.image_size=null", "model.anchor_sizes=[16,32,64]",
        "model.rpn_pre_nms_top_n_train=600", "model.rpn_post_nms_top_n_train=300", "model.box_score_thresh=0.0",
        "model.rpn_pre_nms_top_n_test=300", "model.rpn_post_nms_top_n_test=150", "model.rpn_batch_size_per_image=64",
        "model.box_batch_size_per_image=32", "model.box_positive_fraction=0.25", "model.backbone_depths=null",
        "train.epochs=10", "train.batch_size=8", "optimizer.name=adamw", "optimizer.lr=1e-3",
        "optimizer.warmup_steps=20", "optimizer.weight_decay=1e-4", "optimizer.lr_schedule=step",
        "optimizer.lr_step_size=0", "train.tb_images=0"])
    val = list(open_dataset(val_dir))
    torch.manual_seed(cfg.train.seed)  # the same initial weights train() starts from
    untrained = build_model(cfg.model, 4)
    device = torch.device("cpu")
    detections = predict_samples(untrained, val, device, batch_size=8, processes=1)
    untrained_ap50 = evaluate(val, detections, "coco", label_map=LABEL_MAP).stats["AP50"]

    summary = train(cfg, train_data=train_dir, val_data=val_dir, checkpoint_dir=str(tmp_path / "ck"), progress=False)
    last = summary["metrics"]
    assert last["AP50"] >= 0.3 and last["AP50"] >= 10 * max(untrained_ap50, 0.0), (untrained_ap50, last)

class _Line(torch.nn.Module):
    """y = w x on scalar "images": a loss dict ``{"loss": mean squared error}`` like a detector's."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images, targets):
        x, y = torch.stack(images), torch.stack([t["y"] for t in targets])
        return {"loss": ((self.w * x - y) ** 2).mean()}


def _batch(*pairs):
    return [torch.tensor([x]) for x, _ in pairs], [{"y": torch.tensor([y])} for _, y in pairs]


def _one_epoch(batches, accumulation_steps):
    from synthgap.engine.train import StepSettings, train_one_epoch

    model = _Line()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    stats = train_one_epoch(model, optimizer, scheduler, batches, torch.device("cpu"), 0,
                            StepSettings(accumulation_steps=accumulation_steps))
    return model.w.item(), stats, scheduler.last_epoch


def test_train_one_epoch_accumulates_gradients_over_a_window():
    """Accumulating 2 batches of 2 = one batch of 4 (the mean loss); a short last window counts alone."""
    a, b, c = _batch((1.0, 2.0), (2.0, 4.0)), _batch((3.0, 6.0), (-1.0, -2.0)), _batch((0.5, 1.0), (4.0, 8.0))
    merged = _batch((1.0, 2.0), (2.0, 4.0), (3.0, 6.0), (-1.0, -2.0))
    w_accumulated, stats, steps = _one_epoch([a, b, c], accumulation_steps=2)
    w_merged, merged_stats, merged_steps = _one_epoch([merged, c], accumulation_steps=1)
    assert w_accumulated == pytest.approx(w_merged, rel=1e-6) and w_accumulated != 0.0
    assert stats["steps"] == steps == merged_steps == 2
    # mean loss per image, weighted by batch size (6 images); the model's only loss is "loss"
    assert set(stats["loss"]) == {"loss"} and stats["loss"]["loss"] > 0 and stats["images_per_s"] > 0


def test_train_one_epoch_stops_on_a_non_finite_loss():
    batches = [_batch((1.0, 2.0)), _batch((1.0, float("nan")))]
    with pytest.raises(FloatingPointError, match=r"diverged at step 2 \(epoch 1, batch 1\): the loss is nan "
                                                 r"\(\{'loss': nan\}\)"):
        _one_epoch(batches, accumulation_steps=1)


def test_deterministic_restores_torch_settings():
    from synthgap.engine.train import deterministic

    before = torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory
    with pytest.raises(RuntimeError, match="inside"):
        with deterministic():
            assert torch.are_deterministic_algorithms_enabled()
            assert not torch.utils.deterministic.fill_uninitialized_memory
            raise RuntimeError("inside")
    assert (torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory) == before


def test_without_val_data_a_held_out_split_chooses_the_best_checkpoint(data, tmp_path, caplog):
    """datasetinsights' 90/10 split (seed 47) of the training data: 7 of the 8 images train, 1 validates;
    the log and the summary say which data chose the best checkpoint."""
    train_dir, _ = data
    cfg = load_config("cpu_small", TINY + ["train.epochs=1"])
    with caplog.at_level(logging.INFO, logger="synthgap.engine.train"):
        summary = train(cfg, train_data=train_dir, checkpoint_dir=str(tmp_path / "ck"), progress=False)
    assert f"on {train_dir} (split 'train': 7 of 8 images (90% / 10%, seed 47))" in caplog.text
    assert f"validating on {train_dir} (split 'val': 1 of 8 images (90% / 10%, seed 47)): " in caplog.text
    assert "epoch 1 is the best so far: val AP" in caplog.text
    assert summary["best_epoch"] == 1 and "split 'val': 1 of 8 images" in summary["best_chosen_on"]
    assert (tmp_path / "ck" / "FasterRCNN.best.estimator").exists()
    # validating on images that are also trained on is refused
    with pytest.raises(ConfigError, match=r"the validation data \(split 'val': 1 of 8 images.*\) shares 1 images "
                                          r"with the training data \(all 8 images\)"):
        train(load_config("cpu_small", TINY + ["data.train_split=all"]), train_data=train_dir,
              checkpoint_dir=str(tmp_path / "ck2"), progress=False)


@pytest.mark.slow
def test_epoch_files_are_lean_last_resumes_and_keep_checkpoints_prunes(data, tmp_path):
    """Four short runs (the pieces: tests/test_checkpoint.py)."""
    train_dir, val_dir = data
    cfg = load_config("cpu_small", TINY + ["train.epochs=3", "train.max_steps_per_epoch=1", "train.keep_checkpoints=1",
                                           "train.val_interval=3"])
    train(cfg, train_data=train_dir, val_data=val_dir, checkpoint_dir=str(tmp_path / "ck"), progress=False)
    names = set(os.listdir(tmp_path / "ck"))
    assert names == {"FasterRCNN.ep3.estimator", "FasterRCNN.best.estimator", "FasterRCNN.last.estimator",
                     "config.yaml"}
    ep3, last = load_checkpoint(str(tmp_path / "ck" / "FasterRCNN.ep3.estimator")), \
        load_checkpoint(str(tmp_path / "ck" / "FasterRCNN.last.estimator"))
    assert "optimizer" not in ep3 and "rng" not in ep3 and ep3["config"] and ep3["label_map"] == LABEL_MAP
    assert ep3["epoch"] == 3 and _same_weights(ep3["model"], last["model"])
    assert last["optimizer"]["state"] and "rng" in last
    best = load_checkpoint(str(tmp_path / "ck" / "FasterRCNN.best.estimator"))
    assert "optimizer" not in best and best["metrics"]["AP"] == best["best_ap"]
    # Adam keeps two moments per weight: the lean file is about a third of the full one
    size = {n: os.path.getsize(tmp_path / "ck" / f"FasterRCNN.{n}.estimator") for n in ("ep3", "last")}
    assert size["ep3"] < 0.4 * size["last"]
    # an epoch file cannot resume, and says what can
    more = load_config("cpu_small", TINY + ["train.epochs=4", "train.max_steps_per_epoch=1"])
    with pytest.raises(CheckpointError, match=r"FasterRCNN.ep3.estimator: cannot resume from it: it has no "
                                              r"optimizer, rng state .*resume from FasterRCNN.last.estimator"):
        train(more, train_data=train_dir, checkpoint_dir=str(tmp_path / "ck"), no_val=True, resume=True,
              checkpoint_file=str(tmp_path / "ck" / "FasterRCNN.ep3.estimator"), progress=False)
    # keep_checkpoints=0: only best and last
    zero = load_config("cpu_small", TINY + ["train.epochs=1", "train.max_steps_per_epoch=1",
                                            "train.keep_checkpoints=0"])
    train(zero, train_data=train_dir, checkpoint_dir=str(tmp_path / "ck0"), no_val=True, progress=False)
    assert set(os.listdir(tmp_path / "ck0")) == {"FasterRCNN.last.estimator", "config.yaml"}


def test_learning_rate_schedules():
    """Warm-up, then: "step" (x gamma every lr_step_size epochs; 0 = constant) or "cosine" from lr to
    lr * lr_min_ratio at the last step of epochs x steps_per_epoch."""
    from synthgap.config import OptimizerConfig
    from synthgap.engine.train import build_scheduler

    def lrs(cfg, steps_per_epoch=5, epochs=4):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
        scheduler = build_scheduler(cfg, optimizer, steps_per_epoch, epochs)
        out = []
        for _ in range(steps_per_epoch * epochs):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return out

    constant = lrs(OptimizerConfig(lr=0.1, warmup_steps=4))
    assert constant[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1]) and constant[4:] == pytest.approx([0.1] * 16)
    step = lrs(OptimizerConfig(lr=0.1, lr_step_size=2, lr_gamma=0.5))
    assert step[9] == pytest.approx(0.1) and step[10] == pytest.approx(0.05) and step[-1] == pytest.approx(0.05)
    cosine = lrs(OptimizerConfig(lr=0.1, lr_schedule="cosine", lr_min_ratio=0.1))
    assert cosine[0] == pytest.approx(0.1) and cosine[10] == pytest.approx(0.1 * (0.1 + 0.9 * 0.5))
    assert all(a > b for a, b in zip(cosine, cosine[1:]))  # decreasing every step
    assert cosine[-1] == pytest.approx(0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 19 / 20))))
    with pytest.raises(ConfigError, match="optimizer.lr_schedule"):
        load_config("cpu_small", ["optimizer.lr_schedule=linear"])


# ---------------------------------------------------------------------------------------------
# hardening round 3 (issue 23) and the loop's leftovers (issue 20 §5)

ONE_STEP = TINY + ["train.max_steps_per_epoch=1"]


def _listing(folder):
    """{name: (size, mtime_ns)} of a folder: to show that a refused command left it untouched."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in Path(folder).iterdir()}


def _no_boxes(root, n=4):
    """A COCO dataset of ``n`` images without a single box (the classes are declared)."""
    from synthgap.data import Sample

    (Path(root) / "images").mkdir(parents=True)
    samples = make_samples(Path(root) / "images", n, size=(64, 64))
    with CocoWriter(str(root), LABEL_MAP) as w:
        for s in samples:
            w.add(Sample(image=s.image, width=s.width, height=s.height, boxes=[], labels=[], image_id=s.image_id))
    return str(root)


def test_the_loop_reads_top_to_bottom_and_one_epoch_takes_its_settings_as_one_object():
    """issue 20 §5: train() was 123 lines, train_one_epoch took 14 parameters. The step's settings are one
    frozen dataclass now, built from the config by `StepSettings.of`."""
    import dataclasses
    import inspect

    from synthgap.engine.train import StepSettings, train_one_epoch

    body = inspect.getsource(train).splitlines()
    assert len(body) <= 100, len(body)
    assert len(inspect.signature(train_one_epoch).parameters) <= 11
    cfg = load_config("cpu_small", ["train.accumulation_steps=2", "train.max_steps_per_epoch=3", "train.amp=bf16"])
    settings = StepSettings.of(cfg.train, batches=10, progress=False)
    assert (settings.n_batches, settings.steps_per_epoch, settings.accumulation_steps) == (3, 2, 2)
    assert settings.amp_dtype is torch.bfloat16 and settings.log_every == cfg.train.log_every
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.n_batches = 4


def test_a_second_run_into_a_used_folder_is_refused_unless_resumed_or_overwritten(data, tmp_path):
    """issue 23: a second, different run into a used checkpoint folder mixed runs (`last` and `ep1` from the new
    one, `ep2`/`ep3` from the old). Now it is refused before anything is read or written; `overwrite=True`
    removes the old run's files first; `resume=True` continues the same run."""
    train_dir, _ = data
    ck = tmp_path / "ck"
    train(load_config("cpu_small", ONE_STEP + ["train.epochs=3"]), train_data=train_dir, checkpoint_dir=str(ck),
          no_val=True, progress=False)
    before = _listing(ck)
    assert set(before) == {"FasterRCNN.ep1.estimator", "FasterRCNN.ep2.estimator", "FasterRCNN.ep3.estimator",
                           "FasterRCNN.last.estimator", "config.yaml"}
    other = load_config("cpu_small", ONE_STEP + ["train.epochs=1", "train.seed=3"])
    with pytest.raises(CheckpointError, match=rf"{ck} holds the checkpoints of another run \(FasterRCNN.last.estimator: "
                                              r"epoch 3 .*\): continue it with --resume, or pass --overwrite"):
        train(other, train_data=train_dir, checkpoint_dir=str(ck), no_val=True, progress=False)
    assert _listing(ck) == before
    train(other, train_data=train_dir, checkpoint_dir=str(ck), no_val=True, overwrite=True, progress=False)
    assert set(os.listdir(ck)) == {"FasterRCNN.ep1.estimator", "FasterRCNN.last.estimator", "config.yaml"}
    assert load_config(str(ck / "config.yaml")).train.seed == 3
    with pytest.raises(ConfigError, match="--overwrite and --resume"):
        train(other, train_data=train_dir, checkpoint_dir=str(ck), resume=True, overwrite=True, progress=False)


def test_a_training_set_without_boxes_is_refused(data, tmp_path, caplog):
    """issue 23: training on images without any box exited 0 (and with validation picked a "best" at AP -1).
    Validation data without boxes trains, says that its AP is undefined, and writes no best."""
    empty = _no_boxes(tmp_path / "empty")
    with pytest.raises(DatasetError, match=r"empty: the training data .*has no boxes"):
        train(load_config("cpu_small", ONE_STEP), train_data=empty, checkpoint_dir=str(tmp_path / "ck"),
              no_val=True, progress=False)
    assert not (tmp_path / "ck").exists() or not os.listdir(tmp_path / "ck")
    train_dir, _ = data
    with caplog.at_level(logging.INFO, logger="synthgap.engine.train"):
        summary = train(load_config("cpu_small", ONE_STEP + ["train.epochs=2"]), train_data=train_dir,
                        val_data=empty, checkpoint_dir=str(tmp_path / "ck"), progress=False)
    assert "empty: the validation data (all 4 images) has no boxes of the training classes: its AP is undefined" \
        in caplog.text
    assert summary["metrics"]["AP"] == -1.0 and summary["best_ap"] is None and "best_epoch" not in summary
    assert not (tmp_path / "ck" / "FasterRCNN.best.estimator").exists()


def test_an_undefined_metric_is_never_recorded_as_a_best(tmp_path):
    """COCO's -1 ("no ground truth") and NaN are not an AP: no best checkpoint, best AP unchanged."""
    from synthgap.config import Config
    from synthgap.engine.train import save_epoch_checkpoints

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    common = dict(model=model, optimizer=optimizer, scheduler=scheduler, scaler=None, step=1, cfg=Config(),
                  label_map=LABEL_MAP)
    for ap in (-1.0, float("nan")):
        assert save_epoch_checkpoints(str(tmp_path), 1, metrics={"AP": ap}, best_ap=-math.inf, **common) == -math.inf
        assert not (tmp_path / "FasterRCNN.best.estimator").exists()
    assert save_epoch_checkpoints(str(tmp_path), 2, metrics={"AP": 0.0}, best_ap=-math.inf, **common) == 0.0
    assert load_checkpoint(str(tmp_path / "FasterRCNN.best.estimator"))["epoch"] == 2


def test_label_id_zero_or_no_classes_is_a_dataset_error_naming_the_file(tmp_path):
    """issue 23: both were a bare ValueError (a traceback from the CLI)."""
    from synthgap.errors import DatasetError

    samples = make_samples(tmp_path, 2, size=(64, 64))
    with CocoWriter(str(tmp_path / "zero"), {0: "thing", 1: "red", 2: "green", 3: "blue"}) as w:
        for s in samples:
            w.add(s)
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "annotations.json").write_text(json.dumps({  # images, no categories, no annotations
        "images": [{"id": s.image_id, "file_name": s.image, "width": 64, "height": 64} for s in samples],
        "annotations": [], "categories": []}))
    for name, message in (("zero", "label id 0 .*reserves label 0 for the background"),
                          ("none", "the training data declares no classes")):
        with pytest.raises(DatasetError, match=rf"{tmp_path / name}: field 'categories': {message}"):
            train(load_config("cpu_small"), train_data=str(tmp_path / name), checkpoint_dir=str(tmp_path / "ck"))


def test_the_loss_guard_stops_an_exploding_run_naming_the_step():
    """Exploding = above `DIVERGENCE_FACTOR` x the median of the run's first `EARLY_BATCHES` batch losses; a
    non-finite loss stops at once. Both name the optimizer step, epoch and batch."""
    from synthgap.engine.train import LossGuard
    from synthgap.errors import TrainingError

    guard = LossGuard(factor=100.0, window=3)
    # batch 2: 250 is not above 100 x 2.5 (the median so far); from batch 3 on the reference is fixed
    for i, loss in enumerate([2.0, 3.0, 250.0, 1.0, 299.0]):
        guard.check(loss, step=i + 1, epoch=0, batch=i)
    assert guard.reference == 3.0  # the median of the first three: 2, 3, 250
    with pytest.raises(TrainingError, match=r"step 7 \(epoch 2, batch 1\): the loss 301 is more than 100x the "
                                            r"run's early loss 3 \(the median of its first 3 batches\)"):
        guard.check(301.0, step=7, epoch=1, batch=1)
    with pytest.raises(FloatingPointError, match="step 8 .*: the loss is nan"):  # TrainingError is one too
        LossGuard().check(float("nan"), step=8, epoch=1, batch=2)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_a_diverging_run_stops_and_keeps_no_diverged_checkpoint(data, tmp_path, optimizer):
    """issue 23: `optimizer.name=sgd optimizer.lr=10 optimizer.warmup_steps=0` raised FloatingPointError in epoch
    2 after saving epoch 1 (loss 5.9e23) as "best"; with AdamW the loss reached 4.5e11 and the run exited 0. Here
    the loss jumps from 3 to 6e3 (sgd) / 2e8 (adamw) at the second step."""
    from synthgap.errors import TrainingError

    train_dir, val_dir = data
    cfg = load_config("cpu_small", TINY + ["train.batch_size=2", "train.epochs=3", f"optimizer.name={optimizer}",
                                           f"optimizer.lr={10 if optimizer == 'sgd' else 1}"])
    with pytest.raises(TrainingError, match=r"training diverged at step 2 \(epoch 1, batch 1\): the loss .* is more "
                                            r"than 100x the run's early loss"):
        train(cfg, train_data=train_dir, val_data=val_dir, checkpoint_dir=str(tmp_path / "ck"), progress=False)
    assert not list((tmp_path / "ck").glob("*.estimator"))  # nothing of the diverged epoch, no "best"


def test_resume_refuses_a_changed_model_or_optimizer_without_touching_the_folder(data, tmp_path):
    """issue 23: a changed architecture or widths raised RuntimeError from load_state_dict, a changed optimizer
    KeyError 'momentum' after config.yaml had been rewritten. The config is compared first."""
    train_dir, _ = data
    ck = tmp_path / "ck"
    cfg = load_config("cpu_small", ONE_STEP + ["train.epochs=1", "optimizer.name=adamw"])
    train(cfg, train_data=train_dir, checkpoint_dir=str(ck), no_val=True, progress=False)
    before = _listing(ck)
    more = ["train.epochs=2"]
    for change, key in ((["model.backbone_widths=[16,32,64,64]"], "model.backbone_widths"),
                        (["model.name=fasterrcnn_mobilenet_v3_large_320_fpn"], "model.name"),
                        (["optimizer.name=sgd"], "optimizer.name"), (["train.batch_size=2"], "train.batch_size")):
        changed = load_config("cpu_small", ONE_STEP + ["optimizer.name=adamw"] + more + change)
        with pytest.raises(CheckpointError, match=rf"FasterRCNN.last.estimator: cannot resume: .*{key}"):
            train(changed, train_data=train_dir, checkpoint_dir=str(ck), no_val=True, resume=True, progress=False)
        assert _listing(ck) == before
    # a damaged last checkpoint is refused too (it resumed silently)
    from tests.models.test_checkpoint import _damage

    _damage(ck / "FasterRCNN.last.estimator", (ck / "FasterRCNN.last.estimator").stat().st_size // 2)
    with pytest.raises(CheckpointError, match="FasterRCNN.last.estimator: the file is damaged"):
        train(load_config("cpu_small", ONE_STEP + ["optimizer.name=adamw"] + more), train_data=train_dir,
              checkpoint_dir=str(ck), no_val=True, resume=True, progress=False)


def test_resume_takes_resumable_changes_and_logs_them(data, tmp_path, caplog):
    """`train.epochs` (and the other keys of `RESUMABLE_KEYS`) may change on resume; the log says so."""
    from synthgap.engine.train import RESUMABLE_KEYS

    train_dir, val_dir = data
    ck = tmp_path / "ck"
    cfg = load_config("cpu_small", ONE_STEP + ["train.epochs=1"])
    train(cfg, train_data=train_dir, val_data=val_dir, checkpoint_dir=str(ck), progress=False)
    assert "train.epochs" in RESUMABLE_KEYS and "train.batch_size" not in RESUMABLE_KEYS
    with caplog.at_level(logging.INFO, logger="synthgap.engine.train"):
        summary = train(load_config("cpu_small", ONE_STEP + ["train.epochs=2"]), train_data=train_dir,
                        val_data=val_dir, checkpoint_dir=str(ck), resume=True, progress=False)
    assert "resuming with train.epochs 1 -> 2" in caplog.text
    assert summary["epochs"] == 2 and load_checkpoint(str(ck / "FasterRCNN.last.estimator"))["epoch"] == 2
    assert load_config(str(ck / "config.yaml")).train.epochs == 2
    # the validation data is part of the run: another one is refused (the best AP was measured on the first)
    with pytest.raises(CheckpointError, match=r"cannot resume: .*data.val"):
        train(load_config("cpu_small", ONE_STEP + ["train.epochs=3"]), train_data=train_dir, val_data=train_dir,
              checkpoint_dir=str(ck), resume=True, progress=False)


def test_validation_data_numbering_the_classes_differently_is_matched_by_name(tmp_path, caplog):
    """Issue 23: `train --val-data` with the training classes in another id order was scored by id, so the
    best checkpoint was chosen on the wrong mapping; the validation ground truth now comes in the training
    label map's ids (synthgap.data.labels), and the log says how the classes were matched."""
    from synthgap.data import open_dataset
    from synthgap.engine.train import load_data
    from tests.helpers.labels import renumbered_coco

    train_dir = make_coco(tmp_path / "train", 2, size=(64, 48), seed=1)
    val_dir = make_coco(tmp_path / "val", 3, size=(64, 48), seed=2)
    renumbered = renumbered_coco(val_dir, tmp_path / "val_renumbered")
    cfg = load_config("cpu_small", [f"data.train={train_dir}", f"data.val={renumbered}"])
    with caplog.at_level(logging.INFO, logger="synthgap.engine.train"):
        _, samples, _ = load_data(cfg, validating=True)
    assert [s.labels.tolist() for s in samples] == [s.labels.tolist() for s in open_dataset(val_dir)]
    assert any(s.labels.tolist() for s in samples) and "red 1->3" in caplog.text
