"""Checkpoint files (``*.estimator``): the format, atomic saving, and a loader that never runs code.

A synthgap checkpoint is a ``torch.save`` of a dict of plain values and tensors (see
docs/training.md): model / optimizer / scheduler / GradScaler states, epoch, step, RNG states,
config, label map, validation metrics and the synthgap version. Only ``FasterRCNN.last.estimator``
keeps all of it (the resume state); epoch files and ``best`` are `lean`: the model and config
(datasetinsights' format) with the small metadata. Writing goes through
`synthgap.io.storage.atomic_write`, so a killed run leaves either the old file or the new one.

Loading is always restricted: ``torch.load`` runs with an unpickler whose ``find_class`` resolves
only an allow-list (tensor rebuilders, OrderedDict, dtypes, ...), so a malicious file (e.g. an
``os.system`` reduce) raises `CheckpointError` instead of running. The one foreign name allowed is
``yacs.config.CfgNode`` (the config inside datasetinsights' published ``.estimator`` files), rebuilt
as a plain dict, never importing yacs. (torch's own ``weights_only`` unpickler cannot rebuild a
dict subclass, hence our own.)
"""

from __future__ import annotations

import collections
import io
import pickle
import posixpath
import random
import re
import types
from typing import Any, Mapping

import numpy as np
import torch

from synthgap import __version__
from synthgap.io import storage
from synthgap.errors import CheckpointError

FORMAT = "synthgap.checkpoint/1"
PREFIX = "FasterRCNN"  # file names follow datasetinsights: FasterRCNN.ep{N}.estimator


class _CfgNodeStandIn(dict):
    """What a pickled ``yacs.config.CfgNode`` becomes: a dict whose attributes are ignored."""

    def __setstate__(self, state):  # CfgNode pickles its __dict__ (e.g. __immutable__): drop it
        pass


def _allowed_globals() -> dict[str, Any]:
    """Every global a checkpoint may name: tensor/parameter rebuilders, containers, dtypes, devices."""
    import collections

    allowed: dict[str, Any] = {
        "torch._utils._rebuild_tensor": torch._utils._rebuild_tensor,
        "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
        "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": torch._utils._rebuild_parameter_with_state,
        "torch._tensor._rebuild_from_type_v2": torch._tensor._rebuild_from_type_v2,
        "torch._tensor.Tensor": torch.Tensor,
        "torch.Tensor": torch.Tensor,
        "torch.nn.parameter.Parameter": torch.nn.Parameter,
        "torch.Size": torch.Size,
        "torch.device": torch.device,
        "collections.OrderedDict": collections.OrderedDict,
        "builtins.set": set,
        "builtins.frozenset": frozenset,
        "builtins.slice": slice,
        "builtins.complex": complex,
        "_codecs.encode": _latin1_encode,  # how protocol-2 pickles store bytes
        "yacs.config.CfgNode": _CfgNodeStandIn,
    }
    for name in dir(torch):
        if isinstance(getattr(torch, name, None), torch.dtype):
            allowed[f"torch.{name}"] = getattr(torch, name)
    return allowed


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"unexpected encoding {encoding!r} in a checkpoint")
    return text.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the allow-listed globals; anything else (os.system, builtins.eval, ...) is refused."""

    _allowed: dict[str, Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if _RestrictedUnpickler._allowed is None:
            _RestrictedUnpickler._allowed = _allowed_globals()
        target = _RestrictedUnpickler._allowed.get(f"{module}.{name}")
        if target is None:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a checkpoint")
        return target


# The ``pickle_module`` given to torch.load: the same interface as `pickle`, restricted.
_restricted_pickle = types.ModuleType("synthgap_restricted_pickle")
_restricted_pickle.Unpickler = _RestrictedUnpickler
_restricted_pickle.UnpicklingError = pickle.UnpicklingError
_restricted_pickle.load = lambda f, **kwargs: _RestrictedUnpickler(f, **kwargs).load()


def _plain(obj: Any) -> Any:
    """Turn _CfgNodeStandIn trees into plain dicts (a state_dict keeps its ``_metadata``: the per-module
    layout versions torchvision's ``_load_from_state_dict`` migrations read)."""
    if isinstance(obj, dict) and not isinstance(obj, torch.Tensor):
        if isinstance(obj, _CfgNodeStandIn):
            return {k: _plain(v) for k, v in obj.items()}
        out = type(obj)((k, _plain(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):
            out._metadata = obj._metadata
        return out
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def load_checkpoint(uri: str, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint (synthgap's, datasetinsights', or a bare state_dict) without executing code."""
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise CheckpointError(f"{uri}: checkpoint file not found") from None
    except (PermissionError, IsADirectoryError) as e:
        raise CheckpointError(f"{uri}: cannot read the checkpoint ({e.strerror or type(e).__name__})") from None
    try:
        obj = torch.load(io.BytesIO(data), map_location=map_location, weights_only=False,
                         pickle_module=_restricted_pickle)
    except pickle.UnpicklingError as e:
        if "is not allowed" not in str(e):
            raise CheckpointError(f"{uri}: not a readable torch checkpoint ({e})") from None
        raise CheckpointError(f"{uri}: refused to load: {e}; a checkpoint may hold only tensors and plain "
                              "values (other objects could run code)") from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise CheckpointError(f"{uri}: not a readable torch checkpoint ({e})") from None
    return _plain(obj)


def model_state(obj: Any, uri: str = "") -> "collections.OrderedDict[str, torch.Tensor]":
    """The model state_dict inside a loaded checkpoint (synthgap or datasetinsights) or a bare state_dict,
    with its ``_metadata`` (layout versions) when the file had them."""
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    elif not (isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())):
        raise CheckpointError(f"{uri}: no model weights found (expected a dict with a 'model' state_dict)")
    state = collections.OrderedDict(obj)
    if hasattr(obj, "_metadata"):
        state._metadata = obj._metadata
    return state


def rng_state() -> dict:
    """Every RNG the training loop touches, as tensors and plain values (loadable with weights_only)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: Mapping) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def make_checkpoint(*, model: torch.nn.Module, optimizer=None, scheduler=None, scaler=None, epoch: int,
                    step: int, config: Mapping, label_map: Mapping[int, str], metrics: Mapping | None = None,
                    best_ap: float | None = None) -> dict:
    """The dict saved as a checkpoint (the format documented in docs/training.md)."""
    return {
        "format": FORMAT,
        "synthgap_version": __version__,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "epoch": epoch,   # epochs completed
        "step": step,     # optimizer steps taken
        "rng": rng_state(),
        "config": dict(config),
        "label_map": {int(k): str(v) for k, v in label_map.items()},
        "metrics": dict(metrics or {}),
        "best_ap": best_ap,
    }


# what only a resume needs: FasterRCNN.last.estimator carries it, epoch files and best do not
RESUME_KEYS = ("optimizer", "scheduler", "scaler", "rng")


def lean(checkpoint: Mapping) -> dict:
    """``checkpoint`` without the resume state (`RESUME_KEYS`): the model and config, as in
    datasetinsights' files, plus epoch, step, label map and metrics. With Adam, a third of the full size."""
    return {k: v for k, v in checkpoint.items() if k not in RESUME_KEYS}


def check_resumable(checkpoint: Any, uri: str) -> None:
    """CheckpointError unless ``checkpoint`` holds the full resume state (synthgap's ``last`` file does)."""
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{uri}: cannot resume from it: not a synthgap checkpoint")
    missing = [k for k in ("optimizer", "rng", "epoch", "step") if checkpoint.get(k) is None]
    if missing:
        raise CheckpointError(f"{uri}: cannot resume from it: it has no {', '.join(missing)} state (epoch files and "
                              f"{checkpoint_name('best')} hold the model and config only); resume from "
                              f"{checkpoint_name('last')}, or start from these weights without --resume")


def prune_epoch_checkpoints(checkpoint_dir: str, epoch: int, keep: int | None) -> list[str]:
    """After epoch ``epoch``, delete ``FasterRCNN.ep{N}.estimator`` for N <= epoch - keep (the newest
    ``keep`` epoch files stay; ``None`` keeps all). Files of later epochs (another run's) are left alone.
    Returns the deleted URIs."""
    if keep is None:
        return []
    doomed = []
    for uri in storage.glob(storage.join(checkpoint_dir, f"{PREFIX}.ep*.estimator")):
        name = posixpath.basename(uri.replace("\\", "/"))
        match = re.fullmatch(rf"{re.escape(PREFIX)}\.ep(\d+)\.estimator", name)
        if match and int(match.group(1)) <= epoch - keep:
            storage.remove(uri)
            doomed.append(uri)
    return doomed


def save_checkpoint(checkpoint: Mapping, uri: str) -> None:
    """Serialise in memory, then write atomically (local dir or any URI)."""
    buffer = io.BytesIO()
    torch.save(dict(checkpoint), buffer)
    storage.write_bytes(uri, buffer.getvalue())


def checkpoint_name(tag: str | int) -> str:
    """``FasterRCNN.ep3.estimator`` for an epoch number, ``FasterRCNN.best.estimator`` for a tag."""
    return f"{PREFIX}.ep{tag}.estimator" if isinstance(tag, int) else f"{PREFIX}.{tag}.estimator"


def label_map_of(checkpoint: Mapping) -> dict[int, str] | None:
    """The label map stored in a checkpoint; datasetinsights files have none (None)."""
    lm = checkpoint.get("label_map") if isinstance(checkpoint, Mapping) else None
    return {int(k): str(v) for k, v in lm.items()} if lm else None
