"""torchvision Faster R-CNN models, built from a `ModelConfig`, never downloading weights.

``num_classes`` counts the background: it is max label id + 1 (torchvision reserves label 0 for
the background, so a dataset whose label map uses id 0 for an object cannot be trained as is).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torchvision.models import detection
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

from synthgap.config import ModelConfig

ARCHITECTURES = {
    "fasterrcnn_resnet50_fpn": detection.fasterrcnn_resnet50_fpn,
    "fasterrcnn_mobilenet_v3_large_fpn": detection.fasterrcnn_mobilenet_v3_large_fpn,
    "fasterrcnn_mobilenet_v3_large_320_fpn": detection.fasterrcnn_mobilenet_v3_large_320_fpn,
}

# ModelConfig fields passed to torchvision's FasterRCNN as keyword arguments when not None.
_MODEL_KWARGS = ("min_size", "max_size", "box_score_thresh", "box_detections_per_img",
                 "rpn_pre_nms_top_n_train", "rpn_post_nms_top_n_train", "rpn_pre_nms_top_n_test",
                 "rpn_post_nms_top_n_test", "rpn_batch_size_per_image", "box_batch_size_per_image")


def num_classes_for(label_map: Mapping[int, str]) -> int:
    """Classes the model predicts (background included) for a dataset's label map."""
    if not label_map:
        raise ValueError("the dataset's label map is empty: nothing to train")
    if 0 in label_map:
        raise ValueError(f"label id 0 ({label_map[0]!r}) is used for an object class, but Faster R-CNN "
                         "reserves label 0 for the background; renumber the label map from 1 "
                         "(e.g. `synthgap convert` to COCO with 1-based category ids)")
    if min(label_map) < 0:
        raise ValueError(f"negative label id {min(label_map)} in the label map")
    return max(label_map) + 1


def build_model(cfg: ModelConfig, num_classes: int) -> detection.FasterRCNN:
    """A randomly initialised Faster R-CNN (or loaded from ``cfg.weights`` / ``cfg.backbone_weights``)."""
    if cfg.name not in ARCHITECTURES:
        raise ValueError(f"unknown model {cfg.name!r}; known: {', '.join(ARCHITECTURES)}")
    kwargs = {k: getattr(cfg, k) for k in _MODEL_KWARGS if getattr(cfg, k) is not None}
    if cfg.trainable_backbone_layers is not None:
        kwargs["trainable_backbone_layers"] = cfg.trainable_backbone_layers
    model = ARCHITECTURES[cfg.name](weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
    if cfg.backbone_weights:
        load_backbone_weights(model, cfg.backbone_weights)
    if cfg.weights:
        from synthgap.checkpoint import load_checkpoint, model_state

        load_model_weights(model, model_state(load_checkpoint(cfg.weights), cfg.weights), source=cfg.weights)
    return model


def load_backbone_weights(model: detection.FasterRCNN, uri: str) -> None:
    """Load a classification backbone's state_dict (e.g. torchvision's resnet50 ``.pth``) from a file/URI.

    Keys of the classifier head (``fc.*``, ``classifier.*``) are ignored; every other key must match.
    """
    from synthgap.checkpoint import load_checkpoint, model_state

    state = model_state(load_checkpoint(uri), uri)
    body = model.backbone.body
    own = body.state_dict()
    wanted = {k: v for k, v in state.items() if k in own}
    if not wanted:
        # mobilenet backbones keep the features under "features.N", the body names them "N"
        wanted = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")
                  and k[len("features."):] in own}
    missing = [k for k in own if k not in wanted and not k.endswith("num_batches_tracked")]
    if not wanted or len(missing) > len(own) // 2:
        raise ValueError(f"{uri}: backbone weights do not match {type(body).__name__} "
                         f"({len(wanted)} of {len(own)} tensors found)")
    body.load_state_dict(wanted, strict=False)


def load_model_weights(model: detection.FasterRCNN, state: Mapping[str, torch.Tensor], source: str = "") -> bool:
    """Load a full model state_dict; when only the box predictor's shape differs (another label map),
    keep it freshly initialised and return False (True when everything was loaded)."""
    own = model.state_dict()
    predictor = {k for k in own if k.startswith("roi_heads.box_predictor.")}
    mismatched = {k for k in own if k in state and state[k].shape != own[k].shape}
    if mismatched - predictor:
        raise ValueError(f"{source}: weights do not fit this model (shape differs for "
                         f"{', '.join(sorted(mismatched - predictor)[:3])} ...); check model.name")
    if mismatched:
        state = {k: v for k, v in state.items() if k not in predictor}
        model.load_state_dict(state, strict=False)
        missing = [k for k in own if k not in state and k not in predictor]
    else:
        missing = [k for k in own if k not in state]
        model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    if missing:
        raise ValueError(f"{source}: weights lack {len(missing)} tensors of this model, e.g. {missing[0]}")
    return not mismatched


def reset_box_predictor(model: detection.FasterRCNN, num_classes: int) -> None:
    """A fresh classification/regression head for ``num_classes`` (background included)."""
    in_features = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = FastRCNNPredictor(in_features, num_classes)
