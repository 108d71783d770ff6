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
    from synthgap import storage
    from synthgap.checkpoint import CheckpointError
    from synthgap.data import DatasetError, open_dataset
    from synthgap.evaluate import compute_metrics, eval_dataset, make_eval_loader, original_sizes, \
        predict_detections, select_device

    try:
        cfg, model, label_map = _model_from_checkpoint(checkpoint_file, config, overrides, workers)
        ds = open_dataset(test_data, cfg.data.format, skip_invalid=cfg.data.skip_invalid)
        if label_map is None:
            label_map = dict(ds.label_map)
        unknown = set(ds.label_map) - set(label_map)
        if unknown:
            raise click.ClickException(f"{test_data}: label ids {sorted(unknown)} are unknown to the model")
        samples = list(ds)
        device = select_device(no_cuda)
        model.to(device)
        loader = make_eval_loader(eval_dataset(samples, cfg.data.image_size), cfg.eval.batch_size,
                                  cfg.eval.workers, device)
        detections = predict_detections(model, loader, device, original_sizes(samples), progress=not no_progress)
    except (DatasetError, CheckpointError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    storage.write_json(storage.join(output, "predictions.json"), detections, indent=None)
    writer = tb_local = None
    if tb_log_dir:
        import tempfile

        from torch.utils.tensorboard import SummaryWriter

        tb_local = storage.local_path(tb_log_dir) if storage.is_local(tb_log_dir) else tempfile.mkdtemp("-tb")
        writer = SummaryWriter(tb_local)
    scored = [d for d in detections if d["category_id"] in ds.label_map]
    if len(scored) < len(detections):
        click.echo(f"note: {len(detections) - len(scored)} detections of classes absent from {test_data}'s label "
                   "map are left out of the metrics (kept in predictions.json)", err=True)
    for protocol in cfg.eval.protocols:
        result = compute_metrics(samples, scored, dict(ds.label_map), protocol)
        storage.write_json(storage.join(output, f"metrics_{protocol}.json"), result.to_dict())
        table = result.table()
        storage.write_text(storage.join(output, f"per_class_{protocol}.txt"), table + "\n")
        click.echo(f"== {protocol} ==\n{table}")
        if writer is not None:
            for name, value in result.stats.items():
                writer.add_scalar(f"test_{protocol}/{name}", float(value), 0)
    if writer is not None:
        from synthgap.train import upload_tb_dir

        writer.close()
        upload_tb_dir(tb_local, tb_log_dir)  # remote --tb-log-dir: copy the event files there
        if not storage.is_local(tb_log_dir):
            import shutil

            shutil.rmtree(tb_local, ignore_errors=True)
    click.echo(f"{len(samples)} images, {len(detections)} detections; results in {output}")


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
    from synthgap.evaluate import ImageFiles, draw_detections, make_eval_loader, predict_detections, select_device

    try:
        cfg, model, label_map = _model_from_checkpoint(checkpoint_file, config, overrides, None)
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


def _model_from_checkpoint(checkpoint_file, config, overrides, workers):
    """(config, model with the checkpoint's weights, label map or None) for evaluate/predict.

    The model section comes from the checkpoint's own config when it is a synthgap checkpoint (so
    the architecture matches); --config/--override still apply on top. datasetinsights files carry
    a yacs config: their architecture is fasterrcnn_{backbone}_fpn with num_classes classes.
    """
    from synthgap.checkpoint import label_map_of, load_checkpoint, model_state
    from synthgap.config import ConfigError, apply_overrides, config_from_dict
    from synthgap.models import build_model, load_model_weights

    ckpt = load_checkpoint(checkpoint_file)
    state = model_state(ckpt, checkpoint_file)
    extra = [f"eval.workers={workers}"] if workers is not None else []
    cfg = _load_config(config, (), ())
    stored = ckpt.get("config") if isinstance(ckpt, dict) else None
    if isinstance(stored, dict) and "model" in stored and isinstance(stored["model"], dict):
        try:
            stored_model = config_from_dict({"model": stored["model"]}, checkpoint_file).model
        except ConfigError as e:
            raise click.ClickException(str(e)) from None
        stored_model.weights = stored_model.backbone_weights = None
        cfg.model = stored_model
        if config is None:  # feed images as the model was trained (resize or not)
            cfg.data.image_size = (stored.get("data") or {}).get("image_size", cfg.data.image_size)
    elif isinstance(stored, dict) and "backbone" in stored:  # datasetinsights yacs config
        cfg.model.name = f"fasterrcnn_{stored['backbone']}_fpn"
    try:
        cfg = apply_overrides(cfg, extra + list(overrides))
    except ConfigError as e:
        raise click.BadParameter(str(e), param_hint="--override") from None
    num_classes = int(state["roi_heads.box_predictor.cls_score.weight"].shape[0])
    model = build_model(cfg.model, num_classes)
    load_model_weights(model, state, source=checkpoint_file)
    model.eval()
    return cfg, model, label_map_of(ckpt)
