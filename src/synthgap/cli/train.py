"""`synthgap train`, `synthgap evaluate`, `synthgap predict` (flags follow datasetinsights where they overlap).

Heavy imports (torch, torchvision) happen inside the commands so `synthgap --help` stays fast.
"""

from __future__ import annotations

import json
import logging

import click

_CONFIG_HELP = ("YAML config: a path, a URI, or a packaged name (synthetic, real, finetune, cpu_small); "
                "datasetinsights' estimator YAML (faster_rcnn_*.yaml) is translated and the translation printed. "
                "Default: cpu_small.")
_OVERRIDE_HELP = ("Set config keys, e.g. --override train.epochs=3 (repeatable; dotted keys, YAML values); "
                  "datasetinsights' form --override \"a=1 b=2\" sets several.")
_SPLIT_HELP = ("Split of {what}: a UnityGroceries-Real split file's name (train, val, test, train_small ...); "
               "for other data train / val (datasetinsights' 90/10, seed 47) or all. Default: {default}. "
               "Sets data.{key}.")
_MLFLOW_HELP = ("Log params, metrics, the resolved config and the results to this MLflow tracking URI "
                "(a folder, file:, http(s):, sqlite:...; needs synthgap[mlflow]).")


def _load_config(config, overrides, extra=()):
    """Load a synthgap or datasetinsights config; a datasetinsights one's translation goes to stderr."""
    from synthgap.config import datasetinsights

    cfg, lines = datasetinsights.load(config or "cpu_small", list(extra) + list(overrides))
    if lines:
        click.echo(f"{config}: datasetinsights config, translated:", err=True)
        for line in lines:
            click.echo(f"  {line}", err=True)
    return cfg


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")


@click.command()
@click.option("-c", "--config", "config", default=None, help=_CONFIG_HELP)
@click.option("-t", "--train-data", required=False,
              help="Training dataset (path or URI; any format synthgap reads). Overrides data.train.")
@click.option("-e", "--val-data", default=None,
              help="Validation dataset, validated each train.val_interval epochs. Overrides data.val.")
@click.option("-p", "--checkpoint-file", default=None,
              help="Start from these weights (fresh optimizer: fine-tuning); with --resume, resume this file.")
@click.option("--checkpoint-dir", default="checkpoints", show_default=True,
              help="Where FasterRCNN.ep{N}/best/last.estimator are written (local dir or URI).")
@click.option("-l", "--tb-log-dir", default=None, help="TensorBoard log dir (local or URI).")
@click.option("-w", "--workers", type=click.IntRange(0), default=None, help="DataLoader worker processes.")
@click.option("--no-cuda", is_flag=True, help="Train on the CPU even when CUDA is available.")
@click.option("--no-val", is_flag=True, help="Skip validation.")
@click.option("--train-split", default=None, help=_SPLIT_HELP.format(
    what="--train-data", key="train_split", default="UnityGroceries-Real's train; other data whole, or its "
    "train split when validating without --val-data"))
@click.option("--val-split", default=None, help=_SPLIT_HELP.format(
    what="--val-data (without it: of --train-data)", key="val_split", default="UnityGroceries-Real's val; other "
    "data whole, or --train-data's val split"))
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run from --checkpoint-file or CHECKPOINT_DIR/FasterRCNN.last.estimator.")
@click.option("--seed", type=int, default=None, help="Random seed (overrides train.seed).")
@click.option("--override", "overrides", multiple=True, help=_OVERRIDE_HELP)
@click.option("--output", default=None, help="Write a JSON summary of the run here.")
@click.option("--mlflow-uri", default=None, help=_MLFLOW_HELP)
@click.option("--mlflow-experiment", default="synthgap", show_default=True, help="MLflow experiment name.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def train(config, train_data, val_data, checkpoint_file, checkpoint_dir, tb_log_dir, workers, no_cuda, no_val,
          train_split, val_split, resume, seed, overrides, output, mlflow_uri, mlflow_experiment, no_progress):
    """Train Faster R-CNN on a dataset and write per-epoch checkpoints.

    Runs distributed when started with `torchrun --nproc_per_node=N -m synthgap train ...`.

    \b
    Example:
        synthgap train --config cpu_small --train-data data/synth --val-data data/real/val \\
            --checkpoint-dir runs/synth/checkpoints --tb-log-dir runs/synth/tb --override train.epochs=3
    """
    extra = []
    if workers is not None:
        extra += [f"train.workers={workers}", f"eval.workers={workers}"]
    if seed is not None:
        extra.append(f"train.seed={seed}")
    extra += [f"data.{key}={value}" for key, value in (("train_split", train_split), ("val_split", val_split))
              if value is not None]
    cfg = _load_config(config, overrides, extra)
    cfg.data.train = train_data or cfg.data.train  # the flags override data.train / data.val
    cfg.data.val = val_data or cfg.data.val
    if not cfg.data.train:
        raise click.UsageError("no training data: pass --train-data (or set data.train in the config)")
    _setup_logging()
    from synthgap.io import storage
    from synthgap.engine import tracking
    from synthgap.config import dump_config
    from synthgap.engine.train import train as run

    inputs = {"train_data": cfg.data.train, "val_data": cfg.data.val, "checkpoint_file": checkpoint_file,
              "checkpoint_dir": checkpoint_dir}
    with tracking.run(mlflow_uri, mlflow_experiment, params={**cfg.to_dict(), "run": inputs}):
        summary = run(cfg, checkpoint_dir=checkpoint_dir, tb_log_dir=tb_log_dir, checkpoint_file=checkpoint_file,
                      resume=resume, no_cuda=no_cuda, no_val=no_val, progress=not no_progress)
        tracking.log_final({"best_val_AP": summary.get("best_ap"), "epochs": summary["epochs"],
                            "steps": summary["steps"], "images_per_s": summary.get("images_per_s"),
                            **{f"final_val_{k}": v for k, v in (summary.get("metrics") or {}).items()}})
        tracking.log_text(dump_config(cfg), "config.yaml")
        tracking.log_text(json.dumps(summary, indent=2, default=str), "summary.json")
    if output:
        storage.write_json(output, summary)
    best = summary.get("best_ap")
    click.echo(f"trained {summary['epochs']} epochs ({summary['steps']} steps); best val AP "
               f"{best if best is None else round(best, 4)}; checkpoints in {checkpoint_dir}")


@click.command()
@click.option("-c", "--config", "config", default=None,
              help=_CONFIG_HELP + " Model settings come from the checkpoint.")
@click.option("-p", "--checkpoint-file", required=True, help="Trained weights (synthgap or datasetinsights .estimator).")
@click.option("-t", "--test-data", default=None, help="Test dataset (path or URI). Overrides data.test.")
@click.option("--test-split", default=None, help=_SPLIT_HELP.format(
    what="--test-data", key="test_split", default="UnityGroceries-Real's test; other data whole"))
@click.option("-l", "--tb-log-dir", default=None, help="TensorBoard log dir for the test metrics.")
@click.option("-w", "--workers", type=click.IntRange(0), default=None, help="DataLoader worker processes.")
@click.option("--no-cuda", is_flag=True, help="Run on the CPU even when CUDA is available.")
@click.option("--override", "overrides", multiple=True, help=_OVERRIDE_HELP)
@click.option("--output", default="evaluation", show_default=True,
              help="Folder for predictions.json, metrics_<protocol>.json and per_class_<protocol>.txt.")
@click.option("--mlflow-uri", default=None, help=_MLFLOW_HELP)
@click.option("--mlflow-experiment", default="synthgap", show_default=True, help="MLflow experiment name.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def evaluate(config, checkpoint_file, test_data, test_split, tb_log_dir, workers, no_cuda, overrides, output,
             mlflow_uri, mlflow_experiment, no_progress):
    """Predict on a test dataset and score it with the COCO and datasetinsights (unity) protocols.

    \b
    Example:
        synthgap evaluate --checkpoint-file runs/synth/checkpoints/FasterRCNN.best.estimator \\
            --test-data data/real/test --output runs/synth/eval
    """
    _setup_logging()
    from synthgap.config.datasetinsights import split_overrides
    from synthgap.engine.evaluate import evaluate_checkpoint

    extra = [f"eval.workers={workers}"] if workers is not None else []
    extra += [f"data.test_split={test_split}"] if test_split is not None else []
    overrides = [*extra, *split_overrides(overrides)]
    if config is not None:  # a synthgap or datasetinsights config, resolved here (its translation printed)
        config, overrides = _load_config(config, overrides), []
    from synthgap.io import storage
    from synthgap.engine import tracking
    from synthgap.config import Config, dump_config

    params = {**(config.to_dict() if isinstance(config, Config) else {"config": config or "cpu_small"}),
              "run": {"checkpoint_file": checkpoint_file, "test_data": test_data, "overrides": " ".join(overrides)}}
    with tracking.run(mlflow_uri, mlflow_experiment, params=params):
        done = evaluate_checkpoint(checkpoint_file, test_data, output, config=config, overrides=overrides,
                                   tb_log_dir=tb_log_dir, no_cuda=no_cuda, progress=not no_progress)
        for protocol, result in done["results"].items():
            tracking.log_final(result.stats, prefix=f"test_{protocol}_")
        if isinstance(config, Config):
            tracking.log_text(dump_config(config), "config.yaml")
        tracking.log_files([storage.join(output, name) for name in storage.walk_files(output)
                            if name != "predictions.json"], "evaluation")
    if done["left_out"]:
        click.echo(f"note: {done['left_out']} detections of classes absent from {test_data or 'the test set'}'s "
                   "label map are left out of the metrics (kept in predictions.json)", err=True)
    for protocol, result in done["results"].items():
        click.echo(f"== {protocol} ==\n{result.table()}")
    click.echo(f"{done['images']} images, {done['detections']} detections; results in {output}")


@click.command()
@click.option("-p", "--checkpoint-file", required=True,
              help="Trained weights (synthgap or datasetinsights .estimator).")
@click.argument("images", nargs=-1, required=True)
@click.option("--out", "out", required=True, help="Folder for predictions.json and the drawn images.")
@click.option("--config", "config", default=None, help=_CONFIG_HELP + " Model settings come from the checkpoint.")
@click.option("--score-thresh", type=float, default=None,
              help="Draw boxes scoring at least this (default: eval.draw_score_thresh).")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Images per forward pass.")
@click.option("--no-cuda", is_flag=True, help="Run on the CPU even when CUDA is available.")
@click.option("--override", "overrides", multiple=True, help=_OVERRIDE_HELP)
def predict(checkpoint_file, images, out, config, score_thresh, batch_size, no_cuda, overrides):
    """Detect objects in IMAGES (paths or URIs); write predictions.json and images with boxes drawn.

    \b
    Example:
        synthgap predict --checkpoint-file runs/synth/checkpoints/FasterRCNN.best.estimator \\
            --out predictions shelf1.jpg shelf2.jpg
    """
    _setup_logging()
    from synthgap.engine.evaluate import load_trained_model
    from synthgap.engine.predict import predict_images, select_device

    cfg, model, label_map = load_trained_model(checkpoint_file, config, overrides)
    device = select_device(no_cuda)
    results = predict_images(model.to(device), list(images), out, device, label_map=label_map or {},
                             batch_size=batch_size or cfg.eval.batch_size, workers=cfg.eval.workers,
                             image_size=cfg.data.image_size,
                             score_thresh=cfg.eval.draw_score_thresh if score_thresh is None else score_thresh)
    n = sum(len(r["detections"]) for r in results)
    click.echo(f"{len(images)} images, {n} detections; drawn images and predictions.json in {out}")
