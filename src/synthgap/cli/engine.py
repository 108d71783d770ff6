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
_GROUP_BY_HELP = ("Keep groups of images whole in the generated train / val split (frames of one video, one "
                  "session, one SOLO sequence): regex:PATTERN (PATTERN's first capture group in the file name, e.g. "
                  "'regex:^(IMG_\\d+)_'), folder (the image's folder) or field:NAME (a sample metadata field, e.g. "
                  "field:sequence); whole groups go to val, as near to data.val_fraction as they allow (the log says "
                  "the share reached). Sets data.split_group_by. Default: image by image.")
_CLASS_MAP_HELP = ("Pair a model class with a test class whose name differs: MODEL_NAME=TEST_NAME (repeatable), or "
                   "a YAML/JSON file mapping model names to test names. Classes are matched by name (case and "
                   "whitespace ignored), never by id; default: names only.")
_MLFLOW_HELP = ("Log params, metrics, the resolved config and the results to this MLflow tracking URI "
                "(a folder, file:, http(s):, sqlite:...; needs synthgap[mlflow]).")


def _load_config(config, overrides, extra=()):
    """Load a synthgap or datasetinsights config; a datasetinsights one's translation goes to stderr."""
    from synthgap.config import read_config

    cfg, lines = read_config(config or "cpu_small", list(extra) + list(overrides))
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
@click.option("--group-by", default=None, metavar="SPEC", help=_GROUP_BY_HELP)
@click.option("--resume", is_flag=True,
              help="Continue the run in --checkpoint-dir (from its FasterRCNN.last.estimator, or --checkpoint-file) "
                   "with the config and data it recorded: --config and --train-data may be left out. A change must "
                   "be asked for with --override and only train.epochs, train.workers, train.log_every, "
                   "train.tb_images, train.keep_checkpoints and eval.* may change (logged); any other is refused. "
                   "No checkpoint there yet: a fresh start.")
@click.option("--overwrite", is_flag=True,
              help="Delete another run's checkpoints (FasterRCNN.*.estimator and config.yaml) in --checkpoint-dir "
                   "and train a new run there. Default: a folder holding another run's checkpoints is refused.")
@click.option("--seed", type=int, default=None, help="Random seed (overrides train.seed).")
@click.option("--override", "overrides", multiple=True, help=_OVERRIDE_HELP)
@click.option("--output", default=None, help="Write a JSON summary of the run here.")
@click.option("--mlflow-uri", default=None, help=_MLFLOW_HELP)
@click.option("--mlflow-experiment", default="synthgap", show_default=True, help="MLflow experiment name.")
@click.option("--mlflow-strict", is_flag=True,
              help="Stop the run when an MLflow call fails during training (after that epoch's checkpoints are "
                   "written). Default: warn once and train on without tracking. Each call is bounded (10 s per "
                   "request, 2 retries, unless MLFLOW_HTTP_REQUEST_TIMEOUT / _MAX_RETRIES are set).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def train(config, train_data, val_data, checkpoint_file, checkpoint_dir, tb_log_dir, workers, no_cuda, no_val,
          train_split, val_split, group_by, resume, overwrite, seed, overrides, output, mlflow_uri, mlflow_experiment,
          mlflow_strict, no_progress):
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
    extra += [f"data.split_group_by={json.dumps(group_by)}"] if group_by is not None else []  # quoted: a regex
    cfg = None
    if resume:  # the run's own config and data, changed only where the command line asks (resume_config)
        from synthgap.engine.train import resume_config

        cfg = resume_config(checkpoint_dir, checkpoint_file, config=_load_config(config, overrides, extra)
                            if config else None, overrides=[*extra, *overrides], train_data=train_data,
                            val_data=val_data, no_val=no_val)
    if cfg is None:
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
    with tracking.run(mlflow_uri, mlflow_experiment, params={**cfg.to_dict(), "run": inputs}, strict=mlflow_strict):
        summary = run(cfg, checkpoint_dir=checkpoint_dir, tb_log_dir=tb_log_dir, checkpoint_file=checkpoint_file,
                      resume=resume, overwrite=overwrite, no_cuda=no_cuda, no_val=no_val, progress=not no_progress)
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
@click.option("--group-by", default=None, metavar="SPEC",
              help=_GROUP_BY_HELP + " Use the training run's value with --test-split val.")
@click.option("-l", "--tb-log-dir", default=None, help="TensorBoard log dir for the test metrics.")
@click.option("-w", "--workers", type=click.IntRange(0), default=None, help="DataLoader worker processes.")
@click.option("--no-cuda", is_flag=True, help="Run on the CPU even when CUDA is available.")
@click.option("--override", "overrides", multiple=True, help=_OVERRIDE_HELP)
@click.option("--output", default="evaluation", show_default=True,
              help="Folder for predictions.json (in the test set's class ids), label_alignment.json, "
                   "metrics_<protocol>.json and per_class_<protocol>.txt.")
@click.option("--class-map", "class_map", multiple=True, metavar="MODEL_NAME=TEST_NAME", help=_CLASS_MAP_HELP)
@click.option("--mlflow-uri", default=None, help=_MLFLOW_HELP)
@click.option("--mlflow-experiment", default="synthgap", show_default=True, help="MLflow experiment name.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--ci", is_flag=True, help="Also 95 % percentile bootstrap intervals over the test images in "
                                         "metrics_coco.json and the printed table (docs/metrics.md).")
@click.option("--ci-resamples", type=click.IntRange(min=1), default=1000, show_default=True,
              help="--ci: resamples of the test images.")
@click.option("--ci-seed", type=int, default=0, show_default=True, help="--ci: seed of the image draws.")
def evaluate(config, checkpoint_file, test_data, test_split, group_by, tb_log_dir, workers, no_cuda, overrides, output,
             class_map, mlflow_uri, mlflow_experiment, no_progress, ci, ci_resamples, ci_seed):
    """Predict on a test dataset and score it with the COCO and datasetinsights (unity) protocols.

    The model's classes are matched to the test set's by name (the line printed says how); test classes
    the model does not know are left out of the metrics.

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
    extra += [f"data.split_group_by={json.dumps(group_by)}"] if group_by is not None else []  # quoted: a regex
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
                                   tb_log_dir=tb_log_dir, no_cuda=no_cuda, progress=not no_progress,
                                   class_map=list(class_map), ci_resamples=ci_resamples if ci else 0,
                                   ci_seed=ci_seed)
        for protocol, result in done["results"].items():
            tracking.log_final(result.stats, prefix=f"test_{protocol}_")
        if isinstance(config, Config):
            tracking.log_text(dump_config(config), "config.yaml")
        tracking.log_files([storage.join(output, name) for name in storage.walk_files(output)
                            if name != "predictions.json"], "evaluation")
    if done["left_out"]:
        click.echo(f"note: {done['left_out']} detections of model classes absent from {test_data or 'the test set'} "
                   "are left out of the metrics and of predictions.json", err=True)
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
@click.option("--test-data", default=None,
              help="A dataset (path or URI) whose class ids predictions.json is written in (classes matched by "
                   "name; null for a class it lacks). Default: the model's own ids.")
@click.option("--class-map", "class_map", multiple=True, metavar="MODEL_NAME=TEST_NAME",
              help="With --test-data: " + _CLASS_MAP_HELP)
def predict(checkpoint_file, images, out, config, score_thresh, batch_size, no_cuda, overrides, test_data,
            class_map):
    """Detect objects in IMAGES (paths or URIs); write predictions.json and images with boxes drawn.

    \b
    Example:
        synthgap predict --checkpoint-file runs/synth/checkpoints/FasterRCNN.best.estimator \\
            --out predictions shelf1.jpg shelf2.jpg
    """
    _setup_logging()
    from synthgap.engine.evaluate import load_trained_model
    from synthgap.engine.predict import predict_images, select_device

    if class_map and not test_data:
        raise click.UsageError("--class-map goes with --test-data (the dataset whose ids predictions.json uses)")
    cfg, model, label_map = load_trained_model(checkpoint_file, config, overrides)
    alignment = None
    if test_data:
        from synthgap.data import open_dataset
        from synthgap.data.labels import align_label_maps

        alignment = align_label_maps(label_map, open_dataset(test_data).label_map, class_map=list(class_map),
                                     model_source=checkpoint_file, test_source=test_data)
        click.echo(alignment.log_line(), err=True)
    device = select_device(no_cuda)
    results = predict_images(model.to(device), list(images), out, device, label_map=label_map or {},
                             batch_size=batch_size or cfg.eval.batch_size, workers=cfg.eval.workers,
                             image_size=cfg.data.image_size, alignment=alignment,
                             score_thresh=cfg.eval.draw_score_thresh if score_thresh is None else score_thresh)
    n = sum(len(r["detections"]) for r in results)
    click.echo(f"{len(images)} images, {n} detections; drawn images and predictions.json in {out}")


CHECKPOINT_SUFFIXES = (".estimator", ".pth", ".pt")  # what `synthgap info` reads as a checkpoint, not a dataset


def checkpoint_info(path: str, as_json: bool = False) -> bool:
    """`synthgap info PATH` for a checkpoint file (by its suffix, `CHECKPOINT_SUFFIXES`): print what it
    holds (`synthgap.models.checkpoint.describe_checkpoint`) and return True; False for anything else."""
    if not path.lower().endswith(CHECKPOINT_SUFFIXES):
        return False
    import yaml

    from synthgap.models.checkpoint import describe_checkpoint

    d = describe_checkpoint(path)
    if as_json:
        click.echo(json.dumps(d, indent=2, default=str))
        return True
    version = f", written by synthgap {d['synthgap_version']}" if d["synthgap_version"] else ""
    click.echo(f"checkpoint:   {path} ({d['bytes'] / 1e6:.1f} MB)")
    click.echo(f"kind:         {d['kind']}" + (f" ({d['format']}{version})" if d["format"] else ""))
    click.echo(f"architecture: {d['architecture'] or 'unknown (a bare state_dict)'} ({d['parameters']:,} weights)")
    classes = d["classes"] or {}
    click.echo(f"classes:      {d['num_classes']}" + ("" if classes else " (the file has no label map)"))
    width = max([len(name) for name in classes.values()] + [4])
    for label, name in classes.items():
        click.echo(f"  {name:<{width}}  id {label:>4}")
    if d["epoch"] is not None:
        click.echo(f"epoch:        {d['epoch']} (step {d['step']})")
    if d["kind"] == "synthgap":
        click.echo("resumable:    " + ("yes (the full resume state)" if d["resumable"] else
                                       "no (FasterRCNN.best/ep files hold the model and config only)"))
    if d["metrics"]:
        click.echo("metrics:      val " + ", ".join(f"{k} {v:.4f}" for k, v in d["metrics"].items()) +
                   (f"; best val AP so far {d['best_ap']:.4f}" if d["best_ap"] is not None else ""))
    if d["config"] is not None:
        click.echo("config:")
        for line in yaml.safe_dump(d["config"], sort_keys=False).splitlines():
            click.echo(f"  {line}")
    return True
