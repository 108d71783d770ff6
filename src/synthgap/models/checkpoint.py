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
import zipfile
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


def verify_integrity(data: bytes, uri: str) -> None:
    """CheckpointError unless every entry of a torch zip checkpoint matches the CRC-32 recorded for it.

    torch's loader never checks them, so a damaged block in a weight tensor (a bad disk, a broken copy)
    loaded as other weights, silently. ``torch.save`` writes a CRC-32 per entry (unless
    ``torch.serialization.set_crc32_options(False)``, which writes 0: such entries are not checked);
    torch's legacy non-zip format has none and is not checked. About 1 s per GB."""
    if not data.startswith(b"PK"):
        return
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for entry in archive.infolist():
                if entry.CRC == 0:
                    continue
                try:
                    with archive.open(entry) as f:  # zipfile compares the CRC-32 when the entry is read through
                        while f.read(1 << 22):
                            pass
                except zipfile.BadZipFile as e:
                    if "CRC" not in str(e):
                        raise
                    raise CheckpointError(f"{uri}: the file is damaged: its entry {entry.filename} fails its "
                                          "CRC-32 check (the bytes changed after torch wrote them); use another "
                                          "copy or checkpoint") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as e:
        raise CheckpointError(f"{uri}: the file is damaged or cut off: not a readable zip container ({e})") from None


def _read(uri: str) -> bytes:
    try:
        return storage.read_bytes(uri)
    except FileNotFoundError:
        raise CheckpointError(f"{uri}: checkpoint file not found") from None
    except (PermissionError, IsADirectoryError) as e:
        raise CheckpointError(f"{uri}: cannot read the checkpoint ({e.strerror or type(e).__name__})") from None


def load_checkpoint(uri: str, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint (synthgap's, datasetinsights', or a bare state_dict) without executing code,
    after checking its CRC-32s (`verify_integrity`)."""
    return _load(_read(uri), uri, map_location)


def _load(data: bytes, uri: str, map_location: str | torch.device = "cpu") -> Any:
    verify_integrity(data, uri)
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
                    best_ap: float | None = None, early_losses=()) -> dict:
    """The dict saved as a checkpoint (the format documented in docs/training.md). ``early_losses``: the
    run's first batch losses, the reference of its divergence check (`synthgap.engine.train.LossGuard`)."""
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
        "early_losses": [float(v) for v in early_losses],
    }


# what only a resume needs: FasterRCNN.last.estimator carries it, epoch files and best do not
RESUME_KEYS = ("optimizer", "scheduler", "scaler", "rng", "early_losses")


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
    """Serialise in memory (with a CRC-32 per entry, which `load_checkpoint` checks), then write atomically
    (local dir or any URI)."""
    buffer = io.BytesIO()
    crc = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(True)
    try:
        torch.save(dict(checkpoint), buffer)
    finally:
        torch.serialization.set_crc32_options(crc)
    storage.write_bytes(uri, buffer.getvalue())


def checkpoint_name(tag: str | int) -> str:
    """``FasterRCNN.ep3.estimator`` for an epoch number, ``FasterRCNN.best.estimator`` for a tag."""
    return f"{PREFIX}.ep{tag}.estimator" if isinstance(tag, int) else f"{PREFIX}.{tag}.estimator"


def label_map_of(checkpoint: Mapping) -> dict[int, str] | None:
    """The label map stored in a checkpoint; datasetinsights files have none (None)."""
    lm = checkpoint.get("label_map") if isinstance(checkpoint, Mapping) else None
    return {int(k): str(v) for k, v in lm.items()} if lm else None


_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")  # BatchNorm buffers, not weights


def describe_checkpoint(uri: str) -> dict:
    """What a checkpoint file holds, for `synthgap info` (loaded safely; no model is built).

    ``kind`` ("synthgap", "datasetinsights" or "state_dict"), ``architecture`` (``model.name``;
    datasetinsights' ``fasterrcnn_{backbone}_fpn``; None for a bare state_dict), ``classes`` (the label map,
    None when the file has none), ``num_classes`` (object classes: the label map's, else the box
    predictor's rows less the background), ``parameters`` (weights in the state_dict, BatchNorm statistics
    left out), ``epoch``, ``step``, ``metrics`` (that epoch's validation stats), ``best_ap``, ``resumable``
    (the full resume state of a ``last`` file), ``config`` (as trained), ``synthgap_version``, ``format``
    and ``bytes`` (file size)."""
    data = _read(uri)
    ckpt = _load(data, uri)
    state = model_state(ckpt, uri)
    meta = ckpt if isinstance(ckpt, Mapping) and isinstance(ckpt.get("model"), Mapping) else {}
    config = meta.get("config") if isinstance(meta.get("config"), Mapping) else None
    if config is not None and "backbone" in config and "model" not in config:
        kind, architecture = "datasetinsights", f"fasterrcnn_{config['backbone']}_fpn"
    elif meta:
        kind, architecture = "synthgap", ((config or {}).get("model") or {}).get("name")
    else:
        kind, architecture = "state_dict", None
    classes = label_map_of(meta) if meta else None
    predictor = state.get("roi_heads.box_predictor.cls_score.weight")
    num_classes = len(classes) if classes else int(predictor.shape[0]) - 1 if predictor is not None else None
    return {
        "path": uri, "bytes": len(data),
        "kind": kind, "format": meta.get("format"), "synthgap_version": meta.get("synthgap_version"),
        "architecture": architecture, "classes": classes, "num_classes": num_classes,
        "parameters": sum(v.numel() for k, v in state.items() if not k.endswith(_STATISTICS)),
        "epoch": meta.get("epoch"), "step": meta.get("step"), "metrics": dict(meta.get("metrics") or {}),
        "best_ap": meta.get("best_ap"), "resumable": all(meta.get(k) is not None for k in ("optimizer", "rng")),
        "config": dict(config) if config is not None else None,
    }
