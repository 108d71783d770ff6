"""`synthgap train`, `synthgap evaluate`, `synthgap predict` (flags follow datasetinsights where they overlap).

Heavy imports (torch, torchvision) happen inside the commands so `synthgap --help` stays fast.
"""

from __future__ import annotations

import logging

import click

_CONFIG_HELP = ("YAML config: a path, a URI, or a packaged name (synthetic, real, finetune, cpu_small). "
                "Default: cpu_small.")
_OVERRIDE_HELP = "Set one config key, e.g. --override train.epochs=3 (repeatable; dotted keys, YAML values)."


def _load_config(config, overrides, extra=()):
    from synthgap.config import ConfigError, load_config

    try:
        return load_config(config or "cpu_small", list(extra) + list(overrides))
    except ConfigError as e:
        raise click.BadParameter(str(e), param_hint="--config/--override") from None


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")


@click.command()
@click.option("--config", "config", default=None, help=_CONFIG_HELP)
@click.option("--train-data", required=False, help="Training dataset (path or URI; any format synthgap reads).")
@click.option("--val-data", default=None, help="Validation dataset; validated each train.val_interval epochs.")
@click.option("--checkpoint-file", default=None,
              help="Start from these weights (fresh optimizer: fine-tuning); with --resume, resume this file.")
@click.option("--checkpoint-dir", default="checkpoints", show_default=True,
              help="Where FasterRCNN.ep{N}/best/last.estimator are written (local dir or URI).")
@click.option("--tb-log-dir", default=None, help="TensorBoard log dir (local or URI).")
@click.option("--workers", type=click.IntRange(0), default=None, help="DataLoader worker processes.")
@click.option("--no-cuda", is_flag=True, help="Train on the CPU even when CUDA is available.")
@click.option("--no-val", is_flag=True, help="Skip validation.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run from --checkpoint-file or CHECKPOINT_DIR/FasterRCNN.last.estimator.")
@click.option("--seed", type=int, default=None, help="Random seed (overrides train.seed).")
@click.option("--override", "overrides", multiple=True, help=_OVERRIDE_HELP)
@click.option("--output", default=None, help="Write a JSON summary of the run here.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def train(config, train_data, val_data, checkpoint_file, checkpoint_dir, tb_log_dir, workers, no_cuda, no_val,
          resume, seed, overrides, output, no_progress):
    """Train Faster R-CNN on a dataset and write per-epoch checkpoints.

    Runs distributed when started with `torchrun --nproc_per_node=N -m synthgap train ...`.
    """
    extra = []
    if workers is not None:
        extra += [f"train.workers={workers}", f"eval.workers={workers}"]
    if seed is not None:
        extra.append(f"train.seed={seed}")
    cfg = _load_config(config, overrides, extra)
    train_data = train_data or cfg.data.train
    if not train_data:
        raise click.UsageError("no training data: pass --train-data (or set data.train in the config)")
    _setup_logging()
    from synthgap import storage
    from synthgap.checkpoint import CheckpointError
    from synthgap.data import DatasetError
    from synthgap.train import train as run

    try:
        summary = run(cfg, train_data=train_data, val_data=val_data or cfg.data.val, checkpoint_dir=checkpoint_dir,
                      tb_log_dir=tb_log_dir, checkpoint_file=checkpoint_file, resume=resume, no_cuda=no_cuda,
                      no_val=no_val, progress=not no_progress)
    except (DatasetError, CheckpointError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    if output:
        storage.write_json(output, summary)
    best = summary.get("best_ap")
    click.echo(f"trained {summary['epochs']} epochs ({summary['steps']} steps); best val AP "
               f"{best if best is None else round(best, 4)}; checkpoints in {checkpoint_dir}")


@click.command()
@click.option("--config", "config", default=None, help=_CONFIG_HELP + " Model settings come from the checkpoint.")
@click.option("--checkpoint-file", required=True, help="Trained weights (synthgap or datasetinsights .estimator).")
@click.option("--test-data", required=True, help="Test dataset (path or URI).")
@click.option("--tb-log-dir", default=None, help="TensorBoard log dir for the test metrics.")
@click.option("--workers", type=click.IntRange(0), default=None, help="DataLoader worker processes.")
@click.option("--no-cuda", is_flag=True, help="Run on the CPU even when CUDA is available.")
@click.option("--override", "overrides", multiple=True, help=_OVERRIDE_HELP)
@click.option("--output", default="evaluation", show_default=True,
              help="Folder for predictions.json, metrics_<protocol>.json and per_class_<protocol>.txt.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def evaluate(config, checkpoint_file, test_data, tb_log_dir, workers, no_cuda, overrides, output, no_progress):
    """Predict on a test dataset and score it with the COCO and datasetinsights (unity) protocols."""
    _setup_logging()
    from synthgap.checkpoint import CheckpointError
    from synthgap.config import ConfigError
    from synthgap.data import DatasetError
    from synthgap.evaluate import evaluate_checkpoint

    extra = [f"eval.workers={workers}"] if workers is not None else []
    try:
        done = evaluate_checkpoint(checkpoint_file, test_data, output, config=config,
                                   overrides=[*extra, *overrides], tb_log_dir=tb_log_dir, no_cuda=no_cuda,
                                   progress=not no_progress)
    except ConfigError as e:
        raise click.BadParameter(str(e), param_hint="--config/--override") from None
    except (DatasetError, CheckpointError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    if done["left_out"]:
        click.echo(f"note: {done['left_out']} detections of classes absent from {test_data}'s label "
                   "map are left out of the metrics (kept in predictions.json)", err=True)
    for protocol, result in done["results"].items():
        click.echo(f"== {protocol} ==\n{result.table()}")
    click.echo(f"{done['images']} images, {done['detections']} detections; results in {output}")


@click.command()
@click.option("--checkpoint-file", required=True, help="Trained weights (synthgap or datasetinsights .estimator).")
@click.argument("images", nargs=-1, required=True)
@click.option("--out", "out", required=True, help="Folder for predictions.json and the drawn images.")
@click.option("--config", "config", default=None, help=_CONFIG_HELP + " Model settings come from the checkpoint.")
@click.option("--score-thresh", type=float, default=None,
              help="Draw boxes scoring at least this (default: eval.draw_score_thresh).")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Images per forward pass.")
@click.option("--no-cuda", is_flag=True, help="Run on the CPU even when CUDA is available.")
@click.option("--override", "overrides", multiple=True, help=_OVERRIDE_HELP)
def predict(checkpoint_file, images, out, config, score_thresh, batch_size, no_cuda, overrides):
    """Detect objects in IMAGES (paths or URIs); write predictions.json and images with boxes drawn."""
    _setup_logging()
    import io
    import posixpath

    from synthgap import storage
    from synthgap.checkpoint import CheckpointError
    from synthgap.data import DatasetError
    from synthgap.data.torch_dataset import load_image
    from synthgap.evaluate import (ImageFiles, draw_detections, load_trained_model, make_eval_loader,
                                   predict_detections, select_device)

    try:
        cfg, model, label_map = load_trained_model(checkpoint_file, config, overrides)
        label_map = label_map or {}
        device = select_device(no_cuda)
        model.to(device)
        sizes = {i: load_image(uri).size for i, uri in enumerate(images)}
        loader = make_eval_loader(ImageFiles(images, cfg.data.image_size), batch_size or cfg.eval.batch_size,
                                  cfg.eval.workers, device)
        detections = predict_detections(model, loader, device, sizes)
    except (DatasetError, CheckpointError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    thresh = cfg.eval.draw_score_thresh if score_thresh is None else score_thresh
    results = []
    for i, uri in enumerate(images):
        dets = [d for d in detections if d["image_id"] == i]
        name = f"{i:04d}_{posixpath.basename(uri.replace(chr(92), '/')).rsplit('.', 1)[0]}.png"
        drawn = draw_detections(load_image(uri), dets, label_map, thresh)
        buffer = io.BytesIO()
        drawn.save(buffer, format="PNG")
        storage.write_bytes(storage.join(out, name), buffer.getvalue())
        results.append({"image": uri, "drawn": name, "detections": [
            {**{k: d[k] for k in ("category_id", "bbox", "score")},
             "label": label_map.get(d["category_id"], str(d["category_id"]))} for d in dets]})
    storage.write_json(storage.join(out, "predictions.json"), results)
    n = sum(len(r["detections"]) for r in results)
    click.echo(f"{len(images)} images, {n} detections; drawn images and predictions.json in {out}")
