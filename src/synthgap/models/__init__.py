"""Detector architectures, their builders and weights (`detectors`), and checkpoints (`checkpoint`)."""

from synthgap.models.detectors import (ARCHITECTURES, PRETRAINED, WeightsError, build_model, fasterrcnn_small_gn,
                                       hub_file, load_backbone_weights, load_model_weights, num_classes_for,
                                       read_weights, reset_box_predictor, small_gn_backbone)

__all__ = ["ARCHITECTURES", "PRETRAINED", "WeightsError", "build_model", "fasterrcnn_small_gn", "hub_file",
           "load_backbone_weights", "load_model_weights", "num_classes_for", "read_weights",
           "reset_box_predictor", "small_gn_backbone"]
