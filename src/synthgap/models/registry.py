"""The one table of detector architectures (timm's ``register_model`` / ``create_model`` idea, without hooks).

Each architecture is a name, a builder with the one signature
``build(cfg: ModelConfig, num_classes: int, *, load_weights: bool) -> FasterRCNN``, the named weights it
has (``imagenet``, ``coco``) and the `ModelConfig` keys only it reads. `build_model` looks ``cfg.name`` up
here (an unknown name is a `ConfigError` listing the registered ones), applies the rules every
architecture shares (which weights exist, ``trainable_backbone_layers`` only with pretrained weights, a
full model file in ``model.weights``), then calls the builder. Tests iterate `list_models()`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from torchvision.models import detection

from synthgap.config import ModelConfig
from synthgap.errors import ConfigError
from synthgap.models import detectors, timm_backbone
from synthgap.models.detectors import WeightsError, load_model_weights, read_weights

Builder = Callable[..., detection.FasterRCNN]  # (cfg, num_classes, *, load_weights) -> FasterRCNN

# ModelConfig keys (None by default) that only some architectures read: set for another one, an error
_OWN_KEYS = ("backbone", "backbone_out_indices", "fpn_channels")


@dataclass(frozen=True)
class Architecture:
    name: str
    build: Builder
    weights: tuple[str, ...] = ()     # named weights it has: "imagenet" (backbone), "coco" (whole detector)
    own_keys: tuple[str, ...] = ()    # which of _OWN_KEYS it reads
    summary: str = ""                 # one line for docs and errors


_ARCHITECTURES: dict[str, Architecture] = {}


def register_model(name: str, build: Builder, *, weights: tuple[str, ...] = (), own_keys: tuple[str, ...] = (),
                   summary: str = "") -> Architecture:
    """Add an architecture to the table (a name may be registered once)."""
    if name in _ARCHITECTURES:
        raise ValueError(f"architecture {name!r} is already registered")
    unknown = (set(weights) - {"imagenet", "coco"}) | (set(own_keys) - set(_OWN_KEYS))
    if unknown:
        raise ValueError(f"architecture {name!r}: unknown weights or keys {sorted(unknown)}")
    _ARCHITECTURES[name] = Architecture(name, build, tuple(weights), tuple(own_keys), summary)
    return _ARCHITECTURES[name]


def list_models() -> list[str]:
    """The registered architecture names, in registration order."""
    return list(_ARCHITECTURES)


def get_architecture(name: str) -> Architecture:
    """The registered architecture ``name``; a ConfigError listing the registered ones otherwise."""
    if name not in _ARCHITECTURES:
        raise ConfigError(f"model.name must be one of {', '.join(_ARCHITECTURES)}, got {name!r}")
    return _ARCHITECTURES[name]


def build_model(cfg: ModelConfig, num_classes: int, *, load_weights: bool = True) -> detection.FasterRCNN:
    """Faster R-CNN ``cfg.name`` predicting ``num_classes`` (background included), initialised as
    ``cfg.weights`` / ``cfg.weights_backbone`` say (random when both are null; ``weights`` wins when both
    are set, as in torchvision).

    ``load_weights=False`` builds the same layout (frozen BatchNorm, frozen stages) without reading or
    downloading any weights: for a model whose trained weights are loaded next (evaluate, resume).
    """
    arch = get_architecture(cfg.name)
    for key in _OWN_KEYS:
        if getattr(cfg, key) is not None and key not in arch.own_keys:
            users = [a.name for a in _ARCHITECTURES.values() if key in a.own_keys]
            raise ConfigError(f"model.{key}={getattr(cfg, key)!r} applies to {', '.join(users)}, not to {cfg.name} "
                              f"(set it to null)")
    pretrained = bool(cfg.weights or cfg.weights_backbone)
    if cfg.trainable_backbone_layers is not None and not pretrained:
        raise WeightsError(f"model.trainable_backbone_layers={cfg.trainable_backbone_layers} freezes layers of a "
                           "pretrained backbone, but model.weights_backbone and model.weights are null: every layer "
                           "of a randomly initialised model trains (set one of them, or drop the key)")
    if not arch.weights and (cfg.weights_backbone or cfg.weights == "coco"
                             or cfg.trainable_backbone_layers is not None):
        with_weights = [a.name for a in _ARCHITECTURES.values() if a.weights]
        raise WeightsError(f"{cfg.name} has no pretrained weights (model.weights_backbone, model.weights=coco, "
                           f"model.trainable_backbone_layers apply to {', '.join(with_weights)})")
    if cfg.weights == "coco" and "coco" not in arch.weights:
        raise WeightsError(f"{cfg.name} has no COCO weights (model.weights=coco: torchvision's COCO detectors "
                           f"{', '.join(a.name for a in _ARCHITECTURES.values() if 'coco' in a.weights)}); "
                           "use model.weights_backbone=imagenet, or a full model file in model.weights")
    if cfg.weights and cfg.weights != "coco":  # a full model file: the pretrained layout, then the file
        layout = dataclasses.replace(cfg, weights=None,
                                     weights_backbone="imagenet" if "imagenet" in arch.weights else None)
        model = arch.build(layout, num_classes, load_weights=False)
        if load_weights:
            load_model_weights(model, read_weights(cfg.weights), source=cfg.weights)
        return model
    return arch.build(cfg, num_classes, load_weights=load_weights)


register_model("fasterrcnn_resnet50_fpn", detectors.fasterrcnn_resnet50_fpn, weights=("imagenet", "coco"),
               summary="torchvision's ResNet-50 FPN Faster R-CNN (datasetinsights' model)")
register_model("fasterrcnn_mobilenet_v3_large_fpn", detectors.fasterrcnn_mobilenet_v3_large_fpn,
               weights=("imagenet", "coco"), summary="torchvision's MobileNetV3-Large FPN Faster R-CNN")
register_model("fasterrcnn_mobilenet_v3_large_320_fpn", detectors.fasterrcnn_mobilenet_v3_large_320_fpn,
               weights=("imagenet", "coco"), summary="torchvision's MobileNetV3-Large FPN Faster R-CNN at 320 px")
register_model("fasterrcnn_small_gn", detectors.fasterrcnn_small_gn,
               summary="synthgap's from-scratch CPU model: a small GroupNorm CNN, one feature map")
register_model("fasterrcnn_timm_fpn", timm_backbone.fasterrcnn_timm_fpn, weights=("imagenet",),
               own_keys=("backbone", "backbone_out_indices", "fpn_channels"),
               summary="torchvision's Faster R-CNN with an FPN on any timm backbone (model.backbone)")
