"""Read datasetinsights' estimator YAML (``faster_rcnn_synthetic.yaml`` and friends) as a synthgap config.

datasetinsights configured training with one yacs YAML per run (``estimator: FasterRCNN``,
``backbone``, ``train.dataset.args.split``, ``optimizer.args.lr`` ...). `translate` maps each of its
keys onto `synthgap.config.Config`'s mapping and says what it did, one line per key: translated, accepted
with no effect here (and why), or refused by name (a key or value synthgap cannot honour, e.g. another
estimator, or a key datasetinsights never had). A pure mapping -> mapping translation: the one loader,
`synthgap.config.load.read_config`, recognises such a file and calls it.

datasetinsights' ``--override "a=1 b=2"`` set keys of *its* YAML; here an override whose key is in
the datasetinsights file sets it there, before translation, and any other is a synthgap key
(``train.epochs=3``), set after.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Iterable

import yaml

from synthgap.errors import ConfigError

# datasetinsights' `backbone` -> torchvision architecture (its FasterRCNN used torchvision's builders).
BACKBONES = {"resnet50": "fasterrcnn_resnet50_fpn"}
OPTIMIZERS = {"adam": "adam", "sgd": "sgd", "adamw": "adamw"}
# optimizer.args keys -> synthgap optimizer keys
OPTIMIZER_ARGS = {"lr": "lr", "momentum": "momentum", "weight_decay": "weight_decay"}
# datasetinsights dataset names: GroceriesReal has split files (train, val, test...); SynDetection2D split
# one synthetic run 90/10 seeded by its random_seed, which `synthgap.data.splits` reproduces.
DATASETS = ("GroceriesReal", "SynDetection2D")
ROLES = {"train": "train_split", "val": "val_split", "test": "test_split"}

_KEY = r"[A-Za-z_][\w.\-]*"


def is_estimator_config(raw: Any) -> bool:
    """True for a parsed datasetinsights estimator YAML (a mapping with an ``estimator`` key)."""
    return isinstance(raw, dict) and "estimator" in raw


def split_overrides(values: Iterable[str]) -> list[str]:
    """datasetinsights' ``--override "a=1 b=2"`` form -> ``["a=1", "b=2"]``.

    A value may hold spaces (``eval.protocols=[coco, unity]``): text is split only before a
    ``key=`` that follows whitespace.
    """
    out = []
    for value in values:
        parts = re.split(rf"\s+(?={_KEY}=)", value.strip())
        out.extend(p for p in parts if p)
    return out


def _none(value: Any) -> bool:
    """yacs configs wrote ``None`` as text (``checkpoint_file: None``); YAML reads it as the string."""
    return value is None or (isinstance(value, str) and value.strip() in ("None", "null", "~", ""))


def _set_path(raw: dict, dotted: str, value: Any) -> None:
    node = raw
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _has_path(raw: dict, dotted: str) -> bool:
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _flatten(raw: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(raw, dict) and raw:
        out = {}
        for key, value in raw.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: raw}


def translate(raw: dict, source: str = "<datasetinsights config>",
              overrides: Iterable[str] = ()) -> tuple[dict, list[str], list[str]]:
    """datasetinsights estimator mapping -> (synthgap config mapping, lines saying what became of each key,
    overrides left for synthgap keys).

    Raises ConfigError naming ``source`` and the dotted key for keys or values that have no meaning here.
    """
    raw = copy.deepcopy(raw)
    rest = []
    for text in split_overrides(overrides):
        key, sep, value = text.partition("=")
        if sep and _has_path(raw, key.strip()):
            _set_path(raw, key.strip(), yaml.safe_load(value) if value.strip() else None)
        else:
            rest.append(text)

    out: dict = {}
    lines: list[str] = []
    refused: list[str] = []

    def to(di_key: str, value: Any, key: str, new: Any) -> None:
        _set_path(out, key, new)
        lines.append(f"{di_key}: {value!r} -> {key}: {new!r}")

    def note(di_key: str, value: Any, why: str) -> None:
        lines.append(f"{di_key}: {value!r} -> (no effect) {why}")

    def refuse(di_key: str, value: Any, why: str) -> None:
        refused.append(f"'{di_key}' ({value!r}): {why}")

    for key, value in _flatten(raw).items():
        if key == "estimator":
            if value != "FasterRCNN":
                refuse(key, value, "synthgap trains torchvision Faster R-CNN only (estimator: FasterRCNN)")
            else:
                note(key, value, "synthgap trains torchvision Faster R-CNN")
        elif key == "backbone":
            if value not in BACKBONES:
                refuse(key, value, f"backbones with a Faster R-CNN here: {', '.join(BACKBONES)}")
            else:
                to(key, value, "model.name", BACKBONES[value])
        elif key == "num_classes":
            note(key, value, "the number of classes comes from the training data's label map (max id + 1, "
                             "background included, as datasetinsights counted it)")
        elif key == "task":
            if value != "object_detection":
                refuse(key, value, "synthgap does object detection only")
            else:
                note(key, value, "object detection is all synthgap does")
        elif key == "pretrained":
            if value is True and _none(raw.get("checkpoint_file")):
                # torchvision's COCO-trained detector, its box predictor replaced for our classes
                to(key, value, "model.weights", "coco")
            elif value is True:
                note(key, value, "checkpoint_file gives the starting weights (datasetinsights loaded it last)")
            else:
                note(key, value, "the detector's weights start random unless -p/--checkpoint-file is given")
        elif key == "pretrained_backbone":
            if value is True and raw.get("pretrained") is not True:
                # torchvision's ImageNet classifier with frozen BatchNorm, fetched through torch.hub's cache
                to(key, value, "model.weights_backbone", "imagenet")
            elif value is True:
                note(key, value, "pretrained: True loads the whole COCO detector (torchvision ignores the "
                                 "backbone weights then)")
            else:
                note(key, value, "the backbone starts random")
        elif key == "checkpoint_file":
            if _none(value):
                note(key, value, "no starting weights")
            else:
                to(key, value, "model.weights", value)
        elif key == "val_interval":
            to(key, value, "train.val_interval", value)
        elif key == "synchronize_metrics":
            note(key, value, "validation detections are always gathered from every process before scoring")
        elif key.startswith("metrics."):
            note(key, value, "every COCO stat and the datasetinsights (unity) metrics are computed")
        elif key.startswith("mlflow."):
            note(key, value, "experiment tracking is --mlflow-uri URI (synthgap[mlflow])")
        elif key.startswith("optimizer."):
            if key == "optimizer.name":
                name = str(value).lower()
                if name not in OPTIMIZERS:
                    refuse(key, value, f"optimizers here: {', '.join(OPTIMIZERS)}")
                else:
                    to(key, value, "optimizer.name", OPTIMIZERS[name])
            elif key.startswith("optimizer.args.") and key[len("optimizer.args."):] in OPTIMIZER_ARGS:
                to(key, value, f"optimizer.{OPTIMIZER_ARGS[key[len('optimizer.args.'):]]}", value)
            else:
                refuse(key, value, f"optimizer arguments here: {', '.join(OPTIMIZER_ARGS)}")
        elif key.split(".")[0] in ROLES:
            _translate_role(key, value, raw, to, note, refuse)
        else:
            refuse(key, value, "not a datasetinsights Faster R-CNN key synthgap knows")
    sizes = {role: (raw.get(role) or {}).get("batch_size") for role in ("val", "test")}
    if None not in sizes.values() and sizes["val"] != sizes["test"]:
        _set_path(out, "eval.batch_size", sizes["test"])
        lines.append(f"eval.batch_size: {sizes['test']!r} (test's; val's {sizes['val']!r} differs, and synthgap "
                     "has one evaluation batch size)")
    if refused:
        raise ConfigError(f"{source}: datasetinsights keys with no meaning in synthgap: " + "; ".join(refused))
    return out, lines, rest


def _translate_role(key: str, value: Any, raw: dict, to, note, refuse) -> None:
    """train/val/test sections: batch sizes, epochs, logging and the dataset split."""
    role, _, rest = key.partition(".")
    dataset_name = ((raw.get(role) or {}).get("dataset") or {}).get("name")
    if rest == "batch_size":
        to(key, value, "train.batch_size" if role == "train" else "eval.batch_size", value)
    elif role == "train" and rest == "epochs":
        to(key, value, "train.epochs", value)
    elif role == "train" and rest == "accumulation_steps":
        to(key, value, "train.accumulation_steps", value)
    elif role == "train" and rest == "log_frequency":
        to(key, value, "train.log_every", value)
    elif rest == "dataset.name":
        if value not in DATASETS:
            refuse(key, value, f"datasetinsights datasets known here: {', '.join(DATASETS)}")
        else:
            note(key, value, f"the data is read from the --{role}-data path (format detected)")
    elif rest == "dataset.args.split":
        to(key, value, f"data.{ROLES[role]}", value)
    elif rest == "dataset.args.random_seed":
        seeds = {((raw.get(r) or {}).get("dataset") or {}).get("args", {}).get("random_seed") for r in ROLES}
        if len(seeds - {None}) > 1:
            refuse(key, value, "one data.split_seed splits the data for every role; the roles' random_seed differ")
        else:
            to(key, value, "data.split_seed", value)
    elif rest == "dataset.args.version":
        note(key, value, f"the version is whatever --{role}-data holds")
    elif rest == "dataset.args.def_id":
        note(key, value, f"a Unity Simulation run: synthgap reads --{role}-data (download it with "
                         "`synthgap download`)")
    else:
        refuse(key, value, "not a datasetinsights Faster R-CNN key synthgap knows")
