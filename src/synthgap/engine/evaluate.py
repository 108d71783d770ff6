"""A trained checkpoint -> a model (`load_trained_model`), and a scored test set (`evaluate_checkpoint`).

Predictions come from `synthgap.engine.predict` (COCO result records, xywh pixels of each image); every
metric number from `synthgap.metrics`.
"""

from __future__ import annotations

import copy
from typing import Mapping, Sequence

from synthgap.io import storage
from synthgap.engine import tblog
from synthgap.models.checkpoint import label_map_of, load_checkpoint, model_state
from synthgap.config import Config, ModelConfig, apply_overrides, load_config
from synthgap.data.splits import open_split
from synthgap.errors import ConfigError, DatasetError
from synthgap.metrics import evaluate
from synthgap.models import build_model, load_model_weights
from synthgap.engine.predict import predict_samples, select_device


def load_trained_model(checkpoint_file: str, config=None, overrides: Sequence[str] = ()):
    """(config, model in eval mode with the checkpoint's weights, label map or None).

    ``config`` is a `Config`, a config source (path, URI, packaged name) or None (cpu_small). The
    model section comes from the checkpoint's own config when it is a synthgap checkpoint, so the
    architecture matches; with ``config=None`` the images are also fed at the size the model was
    trained on. datasetinsights files carry a yacs config: their architecture is
    fasterrcnn_{backbone}_fpn with as many classes as the predictor has, at torchvision's default input
    size (``Config()``'s model section, images fed as they are), FrozenBatchNorm2d when
    ``pretrained_backbone`` (or ``pretrained``) was set. Their torchvision 0.5 key layout loads through
    torchvision's own migrations (`synthgap.models.load_model_weights`). ``overrides`` apply last.
    """
    ckpt = load_checkpoint(checkpoint_file)
    state = model_state(ckpt, checkpoint_file)
    stored = ckpt.get("config") if isinstance(ckpt, dict) else None
    datasetinsights = isinstance(stored, dict) and "backbone" in stored and "model" not in stored
    if isinstance(config, Config):
        cfg = copy.deepcopy(config)
    else:  # datasetinsights trained at torchvision's default input size: Config()'s, not cpu_small's
        cfg = load_config(config) if config else Config() if datasetinsights else load_config("cpu_small")
    if isinstance(stored, dict) and isinstance(stored.get("model"), dict):
        cfg.model = Config.from_dict({"model": stored["model"]}, checkpoint_file).model
        if config is None:
            cfg.data.image_size = (stored.get("data") or {}).get("image_size", cfg.data.image_size)
    elif datasetinsights:  # a yacs config: torchvision's builder with pretrained / pretrained_backbone flags
        cfg.model = ModelConfig(name=f"fasterrcnn_{stored['backbone']}_fpn")
        frozen = not any(k.startswith("backbone.body.") and k.endswith("num_batches_tracked") for k in state)
        cfg.model.weights_backbone = "imagenet" if _true(stored.get("pretrained_backbone", frozen)) else None
        cfg.model.weights = "coco" if _true(stored.get("pretrained")) else None
        if config is None:
            cfg.data.image_size = None
    cfg = apply_overrides(cfg, list(overrides))
    num_classes = int(state["roi_heads.box_predictor.cls_score.weight"].shape[0])
    # the layout the weights were trained in (FrozenBatchNorm2d when pretrained), without reading those weights
    model = build_model(cfg.model, num_classes, load_weights=False)
    load_model_weights(model, state, source=checkpoint_file)
    model.eval()
    return cfg, model, label_map_of(ckpt)


def _true(value) -> bool:
    """A yacs flag: True, or the text yacs configs wrote (``"True"``)."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def evaluate_checkpoint(checkpoint_file: str, test_data: str | None, output: str, *, config=None,
                        overrides: Sequence[str] = (), test_format: str | None = None,
                        tb_log_dir: str | None = None, no_cuda: bool = False, progress: bool = True) -> dict:
    """Predict on ``test_data`` (None: the config's ``data.test``) with a trained checkpoint and score
    with each of ``cfg.eval.protocols``.

    Writes into ``output`` (local folder or URI): ``predictions.json`` (COCO results, xywh pixels),
    ``metrics_<protocol>.json`` (coco: with the TIDE error breakdown and AP by object attribute) and
    ``per_class_<protocol>.txt``; with ``tb_log_dir``, the test
    metrics as TensorBoard scalars. Returns ``{"results": {protocol: MetricsResult}, "images": n,
    "detections": n, "left_out": n}`` where ``left_out`` counts detections of classes absent from
    the test set's label map (kept in predictions.json, not scored).
    """
    cfg, model, label_map = load_trained_model(checkpoint_file, config, overrides)
    test_data = test_data or cfg.data.test
    if not test_data:
        raise ConfigError("no test data: set data.test (synthgap evaluate --test-data)")
    ds = open_split(test_data, cfg.data.test_split, role="test", format=test_format or cfg.data.format,
                    skip_invalid=cfg.data.skip_invalid, seed=cfg.data.split_seed, val_fraction=cfg.data.val_fraction)
    unknown = set(ds.label_map) - set(label_map if label_map is not None else ds.label_map)
    if unknown:
        raise DatasetError(f"label ids {sorted(unknown)} are unknown to the model {checkpoint_file}", file=test_data)
    samples = list(ds)
    device = select_device(no_cuda)
    model.to(device)
    detections = predict_samples(model, samples, device, batch_size=cfg.eval.batch_size, workers=cfg.eval.workers,
                                 image_size=cfg.data.image_size, progress=progress)
    storage.write_json(storage.join(output, "predictions.json"), detections, indent=None)
    scored = [d for d in detections if d["category_id"] in ds.label_map]
    results = {}
    for protocol in cfg.eval.protocols:
        diagnose = protocol == "coco"  # TIDE error breakdown and AP by object attribute into metrics_coco.json
        result = evaluate(samples, scored, protocol=protocol, label_map=dict(ds.label_map), errors=diagnose,
                          attributes=diagnose, attributes_root=test_data if diagnose else None)
        storage.write_json(storage.join(output, f"metrics_{protocol}.json"), result.to_dict())
        storage.write_text(storage.join(output, f"per_class_{protocol}.txt"), result.table() + "\n")
        results[protocol] = result
    if tb_log_dir:
        _write_test_scalars(results, tb_log_dir)
    return {"results": results, "images": len(samples), "detections": len(detections),
            "left_out": len(detections) - len(scored)}


def _write_test_scalars(results: Mapping, tb_log_dir: str) -> None:
    """TensorBoard scalars ``test_<protocol>/<stat>`` (step 0), in a local folder or at a URI."""
    writer = tblog.open_writer(tb_log_dir)
    for protocol, result in results.items():
        for name, value in result.stats.items():
            writer.add_scalar(f"test_{protocol}/{name}", float(value), 0)
    tblog.close(writer, tb_log_dir)
