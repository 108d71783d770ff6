"""A trained checkpoint -> a model (`load_trained_model`), and a scored test set (`evaluate_checkpoint`).

Predictions come from `synthgap.engine.predict` (COCO result records, xywh pixels of each image); every
metric number from `synthgap.metrics`. The model's classes are matched to the test set's by name
(`synthgap.data.labels`), never by id number.
"""

from __future__ import annotations

import copy
import logging
from typing import Mapping, Sequence

from synthgap.io import storage
from synthgap.engine import tblog
from synthgap.models.checkpoint import label_map_of, load_checkpoint, model_state
from synthgap.config import Config, ModelConfig, apply_overrides, load_config
from synthgap.data.labels import align_label_maps
from synthgap.data.splits import open_split
from synthgap.errors import ConfigError
from synthgap.metrics import bootstrap_intervals, evaluate
from synthgap.models import build_model, load_model_weights
from synthgap.engine.predict import predict_samples, select_device

log = logging.getLogger(__name__)

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
                        tb_log_dir: str | None = None, no_cuda: bool = False, progress: bool = True,
                        class_map=None, ci_resamples: int = 0, ci_seed: int = 0) -> dict:
    """Predict on ``test_data`` (None: the config's ``data.test``) with a trained checkpoint and score
    with each of ``cfg.eval.protocols``.

    The checkpoint's classes are matched to the test set's by name (`synthgap.data.labels.align_label_maps`;
    ``class_map`` {model name: test name} or ``MODEL=TEST`` items / mapping files pairs names that differ;
    the alignment's one-line description is logged): only the classes the model knows are evaluated.

    Writes into ``output`` (local folder or URI): ``predictions.json`` (COCO results, xywh pixels, in the
    test set's class ids), ``label_alignment.json`` (`LabelAlignment.to_dict`), ``metrics_<protocol>.json``
    (coco: with the TIDE error breakdown and AP by object attribute) and ``per_class_<protocol>.txt``; with
    ``tb_log_dir``, the test metrics as TensorBoard scalars. ``ci_resamples`` > 0: metrics_coco.json also
    carries 95 % bootstrap intervals over the test images (`synthgap.metrics.bootstrap`, seed ``ci_seed``).
    Returns ``{"results": {protocol: MetricsResult},
    "images": n, "detections": n, "left_out": n, "alignment": LabelAlignment}`` where ``left_out`` counts
    detections of model classes the test set lacks (dropped: they have no test id).
    """
    cfg, model, label_map = load_trained_model(checkpoint_file, config, overrides)
    test_data = test_data or cfg.data.test
    if not test_data:
        raise ConfigError("no test data: set data.test (synthgap evaluate --test-data)")
    ds = open_split(test_data, cfg.data.test_split, role="test", format=test_format or cfg.data.format,
                    skip_invalid=cfg.data.skip_invalid, seed=cfg.data.split_seed, val_fraction=cfg.data.val_fraction,
                    group_by=cfg.data.split_group_by)
    alignment = align_label_maps(label_map, ds.label_map, class_map=class_map, model_source=checkpoint_file,
                                 test_source=test_data)
    log.info("%s", alignment.log_line())
    samples = list(ds)
    device = select_device(no_cuda)
    model.to(device)
    detections = predict_samples(model, samples, device, batch_size=cfg.eval.batch_size, workers=cfg.eval.workers,
                                 image_size=cfg.data.image_size, progress=progress)
    n_detections = len(detections)
    scored, left_out = alignment.detections_to_test(detections)  # in the test set's ids
    storage.write_json(storage.join(output, "predictions.json"), scored, indent=None)
    storage.write_json(storage.join(output, "label_alignment.json"), alignment.to_dict())
    known = alignment.test_samples(samples, root=test_data)  # boxes of test classes the model does not know: out
    results = {}
    for protocol in cfg.eval.protocols:
        diagnose = protocol == "coco"  # TIDE error breakdown and AP by object attribute into metrics_coco.json
        result = evaluate(known, scored, protocol=protocol, label_map=alignment.test_label_map, errors=diagnose,
                          attributes=diagnose, attributes_root=test_data if diagnose else None)
        if ci_resamples and protocol == "coco":
            result.intervals = bootstrap_intervals(result, resamples=ci_resamples, seed=ci_seed)
        storage.write_json(storage.join(output, f"metrics_{protocol}.json"), result.to_dict())
        storage.write_text(storage.join(output, f"per_class_{protocol}.txt"), result.table() + "\n")
        results[protocol] = result
    if tb_log_dir:
        _write_test_scalars(results, tb_log_dir)
    return {"results": results, "images": len(samples), "detections": n_detections, "left_out": left_out,
            "alignment": alignment}


def _write_test_scalars(results: Mapping, tb_log_dir: str) -> None:
    """TensorBoard scalars ``test_<protocol>/<stat>`` (step 0), in a local folder or at a URI."""
    writer = tblog.open_writer(tb_log_dir)
    for protocol, result in results.items():
        for name, value in result.stats.items():
            writer.add_scalar(f"test_{protocol}/{name}", float(value), 0)
    tblog.close(writer, tb_log_dir)
