"""torchvision's Faster R-CNN variants and synthgap's from-scratch CPU model, built from a `ModelConfig`;
the weights files they load. The architectures are registered by name in `synthgap.models.registry`.

Every builder here has the registry's one signature, ``(cfg, num_classes, *, load_weights=True)``.
``num_classes`` counts the background: it is max label id + 1 (torchvision reserves label 0 for
the background, so a dataset whose label map uses id 0 for an object cannot be trained as is).

Weights (``model.weights_backbone``, ``model.weights``): ``imagenet`` / ``coco`` are torchvision's
own published files for the architecture, given to torchvision's builders, so everything torchvision
does with pretrained weights happens (FrozenBatchNorm2d in the backbone, ``trainable_backbone_layers``
honoured, default 3; the COCO box predictor is then replaced for our classes). The files come through
torch.hub's cache (``$TORCH_HOME/hub/checkpoints``; a download is verified against the sha256 prefix in
the file name); offline and not cached is a `WeightsError` naming the file, the URL and the cache path.
A path or URI is loaded into that same pretrained layout; ``http(s)://`` ones are cached like
torchvision's. Every file is read with synthgap's restricted unpickler (`synthgap.models.checkpoint`).
"""

from __future__ import annotations

import collections
import os
import urllib.error
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import nn
from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights, detection, mobilenet_v3_large, resnet50
from torchvision.models.detection._utils import overwrite_eps
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import (_mobilenet_extractor, _resnet_fpn_extractor,
                                                         _validate_trainable_layers)
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

from synthgap.config import ModelConfig
from synthgap.errors import SynthgapError


class WeightsError(SynthgapError):
    """Pretrained weights cannot be had (offline and not cached, a bad hash) or do not fit the model."""


# ModelConfig fields passed to torchvision's FasterRCNN as keyword arguments when not None.
_MODEL_KWARGS = ("min_size", "max_size", "box_score_thresh", "box_detections_per_img",
                 "rpn_pre_nms_top_n_train", "rpn_post_nms_top_n_train", "rpn_pre_nms_top_n_test",
                 "rpn_post_nms_top_n_test", "rpn_batch_size_per_image", "box_batch_size_per_image",
                 "box_positive_fraction")


def fasterrcnn_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    """The `ModelConfig` settings every architecture hands to torchvision's ``FasterRCNN`` (resize in
    pixels, RPN / RoI sampling budgets, score threshold); ``None`` leaves torchvision's default."""
    return {k: getattr(cfg, k) for k in _MODEL_KWARGS if getattr(cfg, k) is not None}


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


# ---------------------------------------------------------------- torchvision's variants


@dataclass(frozen=True)
class _Torchvision:
    """How torchvision builds one Faster R-CNN variant: its builder, its published ImageNet backbone and
    COCO detector weights, and (for a backbone file) the classification model, FPN extractor and number
    of backbone stages its builder uses."""

    builder: Callable[..., detection.FasterRCNN]
    imagenet: Any
    coco: Any
    classifier: Callable[..., nn.Module]
    extractor: Callable[[nn.Module, int], nn.Module]
    stages: int


def _mobilenet_fpn(net: nn.Module, trainable_layers: int) -> nn.Module:
    return _mobilenet_extractor(net, True, trainable_layers)


_RESNET50_FPN = _Torchvision(detection.fasterrcnn_resnet50_fpn, ResNet50_Weights.IMAGENET1K_V1,
                             detection.FasterRCNN_ResNet50_FPN_Weights.COCO_V1, resnet50, _resnet_fpn_extractor, 5)
_MOBILENET_V3_LARGE_FPN = _Torchvision(detection.fasterrcnn_mobilenet_v3_large_fpn,
                                       MobileNet_V3_Large_Weights.IMAGENET1K_V1,
                                       detection.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1,
                                       mobilenet_v3_large, _mobilenet_fpn, 6)
_MOBILENET_V3_LARGE_320_FPN = _Torchvision(detection.fasterrcnn_mobilenet_v3_large_320_fpn,
                                           MobileNet_V3_Large_Weights.IMAGENET1K_V1,
                                           detection.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1,
                                           mobilenet_v3_large, _mobilenet_fpn, 6)


def fasterrcnn_resnet50_fpn(cfg: ModelConfig, num_classes: int, *, load_weights: bool = True) -> detection.FasterRCNN:
    """torchvision's ``fasterrcnn_resnet50_fpn`` (datasetinsights' model): ResNet-50 + FPN, 5 backbone stages."""
    return _torchvision_fasterrcnn(_RESNET50_FPN, cfg, num_classes, load_weights)


def fasterrcnn_mobilenet_v3_large_fpn(cfg: ModelConfig, num_classes: int, *,
                                      load_weights: bool = True) -> detection.FasterRCNN:
    """torchvision's ``fasterrcnn_mobilenet_v3_large_fpn``: MobileNetV3-Large + FPN, 6 backbone stages."""
    return _torchvision_fasterrcnn(_MOBILENET_V3_LARGE_FPN, cfg, num_classes, load_weights)


def fasterrcnn_mobilenet_v3_large_320_fpn(cfg: ModelConfig, num_classes: int, *,
                                          load_weights: bool = True) -> detection.FasterRCNN:
    """torchvision's ``fasterrcnn_mobilenet_v3_large_320_fpn``: the same at 320 px with a smaller RPN budget."""
    return _torchvision_fasterrcnn(_MOBILENET_V3_LARGE_320_FPN, cfg, num_classes, load_weights)


def _torchvision_fasterrcnn(variant: _Torchvision, cfg: ModelConfig, num_classes: int,
                            load_weights: bool) -> detection.FasterRCNN:
    """``cfg.weights`` is None or ``coco`` here (a full model file is loaded by `registry.build_model`)."""
    kwargs = fasterrcnn_kwargs(cfg)
    layers = cfg.trainable_backbone_layers
    if cfg.weights == "coco":
        if not load_weights:
            model = _pretrained_layout(variant, 91, layers, kwargs)
            if variant.coco == detection.FasterRCNN_ResNet50_FPN_Weights.COCO_V1:
                overwrite_eps(model, 0.0)  # what the builder does for this file
        else:
            hub_file(variant.coco.url)
            model = variant.builder(weights=variant.coco, num_classes=None, trainable_backbone_layers=layers, **kwargs)
        reset_box_predictor(model, num_classes)
        return model
    if not cfg.weights_backbone:
        return variant.builder(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
    if cfg.weights_backbone == "imagenet" and load_weights:
        hub_file(variant.imagenet.url)
        return variant.builder(weights=None, weights_backbone=variant.imagenet, num_classes=num_classes,
                               trainable_backbone_layers=layers, **kwargs)
    state = None
    if load_weights:  # a classification backbone's state_dict: path or URI
        state = read_weights(cfg.weights_backbone)
    return _pretrained_layout(variant, num_classes, layers, kwargs, state, source=cfg.weights_backbone)


def _pretrained_layout(variant: _Torchvision, num_classes: int, trainable_layers: int | None, kwargs: dict,
                       backbone_state: Mapping[str, torch.Tensor] | None = None,
                       source: str = "") -> detection.FasterRCNN:
    """What torchvision's builder makes when given backbone weights, with ``backbone_state`` (a
    classification model's state_dict) or none: FrozenBatchNorm2d in the backbone, all but the last
    ``trainable_layers`` stages (default 3) frozen. tests/models/test_detectors.py checks it against the builder."""
    model = variant.builder(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
    layers = _validate_trainable_layers(True, trainable_layers, variant.stages, 3)
    net = variant.classifier(weights=None, norm_layer=FrozenBatchNorm2d)
    if backbone_state is not None:
        load_backbone_weights(net, backbone_state, source)
    model.backbone = variant.extractor(net, layers)
    return model


# ---------------------------------------------------------------- synthgap's from-scratch CPU model


def small_gn_backbone(widths: list[int], norm: str = "group", depths: list[int] | None = None) -> nn.Module:
    """A plain from-scratch CNN: per width, a stride-2 3x3 conv then ``depths[i]`` (default 1) stride-1
    3x3 convs, each + norm + ReLU.

    Output stride 2**len(widths) pixels (16 for 4 stages), one feature map of ``widths[-1]`` channels.
    Each extra conv of the last stage widens the receptive field by 2 x stride pixels (context to tell
    classes apart) at the cost of one conv on the smallest map. GroupNorm(8) trains from scratch at small
    batches (BatchNorm statistics of 4-8 images are noisy).
    """
    def block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
        layer = {"group": lambda: nn.GroupNorm(min(8, c_out), c_out), "batch": lambda: nn.BatchNorm2d(c_out),
                 "none": nn.Identity}[norm]
        return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=norm == "none"), layer(), nn.ReLU(inplace=True)]

    layers, c_in = [], 3
    for width, depth in zip(widths, depths or [1] * len(widths)):
        layers += block(c_in, width, 2)
        for _ in range(depth):
            layers += block(width, width, 1)
        c_in = width
    for m in layers:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    backbone = nn.Sequential()
    backbone.add_module("body", nn.Sequential(*layers))  # model.backbone.body, like torchvision's backbones
    backbone.out_channels = widths[-1]
    return backbone


def fasterrcnn_small_gn(cfg: ModelConfig, num_classes: int, *, load_weights: bool = True) -> detection.FasterRCNN:
    """torchvision's FasterRCNN on `small_gn_backbone`: one feature map, anchors ``cfg.anchor_sizes``
    (pixels of the model's input) x ``cfg.anchor_aspect_ratios``, RoIAlign 7x7, a two-layer box head.
    Built to learn fast from scratch on a CPU (BENCHMARKS.md, "A from-scratch CPU recipe"); it has no
    pretrained weights, so ``load_weights`` changes nothing."""
    backbone = small_gn_backbone(cfg.backbone_widths, cfg.backbone_norm, cfg.backbone_depths)
    anchors = AnchorGenerator(sizes=(tuple(cfg.anchor_sizes),), aspect_ratios=(tuple(cfg.anchor_aspect_ratios),))
    roi_pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2)
    head = TwoMLPHead(backbone.out_channels * 7 * 7, cfg.box_head_width)
    return detection.FasterRCNN(backbone, rpn_anchor_generator=anchors, box_roi_pool=roi_pool, box_head=head,
                                box_predictor=FastRCNNPredictor(cfg.box_head_width, num_classes),
                                **fasterrcnn_kwargs(cfg))


# ---------------------------------------------------------------- weights files


def hub_file(url: str, progress: bool = True) -> str:
    """Local path of ``url`` in torch.hub's cache (``$TORCH_HOME/hub/checkpoints/<file name>``), downloaded
    there first when absent, exactly as ``torch.hub.load_state_dict_from_url`` does for torchvision's
    weights: the sha256 prefix in the file name (``resnet50-0676ba61.pth``) must match the download."""
    filename = os.path.basename(urllib.parse.urlparse(url).path)
    cache = os.path.join(torch.hub.get_dir(), "checkpoints")
    path = os.path.join(cache, filename)
    if os.path.exists(path):
        return path
    match = torch.hub.HASH_REGEX.search(filename)
    try:
        os.makedirs(cache, exist_ok=True)
        torch.hub.download_url_to_file(url, path, match.group(1) if match else None, progress=progress)
    except RuntimeError as e:  # torch.hub's hash check
        raise WeightsError(f"{url}: the download does not match the sha256 prefix in its name {filename!r} ({e}); "
                           "nothing was cached") from None
    except (urllib.error.URLError, OSError) as e:
        raise WeightsError(f"cannot download {filename} from {url} ({getattr(e, 'reason', e)}) and it is not in "
                           f"torch.hub's cache: on a machine without network, copy that file to {path} (the "
                           "cache is $TORCH_HOME/hub/checkpoints; TORCH_HOME defaults to ~/.cache/torch)") from None
    return path


def read_weights(uri: str) -> "collections.OrderedDict[str, torch.Tensor]":
    """The model state_dict in a weights file: a bare state_dict (torchvision's ``.pth``), a synthgap or a
    datasetinsights checkpoint. ``http(s)://`` files go through torch.hub's cache (`hub_file`); other
    paths and URIs are read with `synthgap.io.storage`. Never runs code from the file."""
    from synthgap.models.checkpoint import load_checkpoint, model_state

    local = hub_file(uri) if uri.startswith(("http://", "https://")) else uri
    return model_state(load_checkpoint(local), uri)


def load_backbone_weights(net: nn.Module, state: Mapping[str, torch.Tensor], source: str = "") -> None:
    """Load a classification model's state_dict (torchvision's ``resnet50`` / ``mobilenet_v3_large`` files)
    into ``net``; only its classifier head (``fc.*``, ``classifier.*``, dropped by the detector) may be absent."""
    result = _load_state(net, state, source)
    missing = [k for k in result.missing_keys if not k.startswith(("fc.", "classifier."))]
    if missing or result.unexpected_keys:
        raise WeightsError(f"{source}: not a {type(net).__name__} backbone's weights ("
                           + (f"{len(missing)} tensors missing, e.g. {missing[0]}" if missing else
                              f"{len(result.unexpected_keys)} unknown tensors, e.g. {result.unexpected_keys[0]}")
                           + ")")


def _load_state(module: nn.Module, state: Mapping[str, torch.Tensor], source: str):
    """``module.load_state_dict(state, strict=False)``: torch's and torchvision's own migrations of older
    layouts run (FrozenBatchNorm2d drops ``num_batches_tracked``, FPN and RPN head rename the keys
    torchvision 0.5-0.7 wrote, BatchNorm adds a missing ``num_batches_tracked``); a shape mismatch is a
    WeightsError."""
    if not isinstance(state, collections.OrderedDict):
        state = collections.OrderedDict(state)
    try:
        return module.load_state_dict(state, strict=False)
    except RuntimeError as e:
        sizes = [line.strip() for line in str(e).splitlines() if "size mismatch" in line]
        raise WeightsError(f"{source}: weights do not fit this model ({'; '.join(sizes[:2]) or e}); "
                           "check model.name") from None


def load_model_weights(model: detection.FasterRCNN, state: Mapping[str, torch.Tensor], source: str = "") -> bool:
    """Load a full model state_dict (any torchvision version's layout, see `_load_state`); when only the
    box predictor's shape differs (another label map), keep it freshly initialised and return False
    (True when everything was loaded). Missing or unknown tensors are a WeightsError."""
    own = model.state_dict()
    predictor = {k for k in own if k.startswith("roi_heads.box_predictor.")}
    mismatched = {k for k in own if k in state and state[k].shape != own[k].shape}
    if mismatched - predictor:
        raise WeightsError(f"{source}: weights do not fit this model (shape differs for "
                           f"{', '.join(sorted(mismatched - predictor)[:3])} ...); check model.name")
    if mismatched:
        kept = collections.OrderedDict((k, v) for k, v in state.items() if k not in predictor)
        if hasattr(state, "_metadata"):  # the layout versions torchvision's migrations read
            kept._metadata = state._metadata
        state = kept
    result = _load_state(model, state, source)
    missing = [k for k in result.missing_keys if not (mismatched and k in predictor)]
    if missing:
        raise WeightsError(f"{source}: weights lack {len(missing)} tensors of this model, e.g. {missing[0]}; "
                           "check model.name")
    if result.unexpected_keys:
        raise WeightsError(f"{source}: weights hold {len(result.unexpected_keys)} tensors this model does not have, "
                           f"e.g. {result.unexpected_keys[0]}; check model.name")
    return not mismatched


def reset_box_predictor(model: detection.FasterRCNN, num_classes: int) -> None:
    """A fresh classification/regression head for ``num_classes`` (background included)."""
    in_features = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = FastRCNNPredictor(in_features, num_classes)
