"""The training/evaluation config: one YAML file validated into one typed object.

Every default lives in the dataclasses below. A YAML file only lists what differs; unknown keys and
values of the wrong type are a `ConfigError` naming the dotted key and the file. ``--override
train.epochs=3`` sets one dotted key (the value is parsed as a YAML scalar and checked against the
field's type). A config is named by a local path, a URI (through `synthgap.io.storage`) or the name of
a config shipped in ``synthgap/config/recipes`` (``synthetic``, ``real``, ``finetune``, ``cpu_small``).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import types
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Optional

import yaml

from synthgap.io import storage
from synthgap.errors import ConfigError


@dataclass
class ModelConfig:
    """torchvision Faster R-CNN. ``None`` means "torchvision's default for this architecture"."""

    name: Literal["fasterrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn",
                  "fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_small_gn"] = "fasterrcnn_resnet50_fpn"
    # coco (torchvision's COCO-trained detector, its box predictor replaced) | a full model file: path or URI
    weights: Optional[str] = None
    # imagenet (torchvision's ImageNet classifier) | a classification backbone's state_dict: path or URI
    weights_backbone: Optional[str] = None
    trainable_backbone_layers: Optional[int] = None
    min_size: Optional[int] = None           # the model's own resize: shorter side, pixels
    max_size: Optional[int] = None           # longer side cap, pixels
    box_score_thresh: float = 0.05           # datasetinsights' value
    box_detections_per_img: int = 100        # datasetinsights' MAX_BOXES_PER_IMAGE
    rpn_pre_nms_top_n_train: Optional[int] = None
    rpn_post_nms_top_n_train: Optional[int] = None
    rpn_pre_nms_top_n_test: Optional[int] = None
    rpn_post_nms_top_n_test: Optional[int] = None
    rpn_batch_size_per_image: Optional[int] = None
    box_batch_size_per_image: Optional[int] = None
    box_positive_fraction: Optional[float] = None  # of the sampled RoIs at most this share are objects (0.25)
    # fasterrcnn_small_gn only (a from-scratch CPU model, synthgap.models.small_gn_backbone):
    backbone_widths: list[int] = field(default_factory=lambda: [32, 64, 128, 128])  # channels per stride-2 stage
    backbone_depths: Optional[list[int]] = None  # stride-1 convs after each stage's stride-2 conv (None: 1 each)
    backbone_norm: Literal["group", "batch", "none"] = "group"  # GroupNorm(8): batch-size independent
    anchor_sizes: list[int] = field(default_factory=lambda: [16, 32, 64, 128])  # anchor sides, pixels
    anchor_aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])  # height / width
    box_head_width: int = 256                # the two-layer box head's hidden width


@dataclass
class DataConfig:
    """Where the data is (CLI flags override these) and how images are fed to the model."""

    train: Optional[str] = None      # dataset path/URI (any format `open_dataset` reads)
    val: Optional[str] = None
    test: Optional[str] = None
    format: Optional[str] = None     # force a reader (solo, perception, groceries-real, coco)
    image_size: Optional[list[int]] = None  # [width, height] pixels to resize to on load
    skip_invalid: bool = False
    # split of the train/val/test data to read (synthgap.data.splits; datasetinsights' dataset.args.split):
    # UnityGroceries-Real's split files (train, val, test, train_small ...), for other data train / val
    # (a seeded split) or all. None = the role's default: UnityGroceries-Real's train / val / test split;
    # other data whole, or its train / val split when training data is also the validation data.
    train_split: Optional[str] = None
    val_split: Optional[str] = None
    test_split: Optional[str] = None
    split_seed: int = 47             # the train / val split of data without split files (datasetinsights')
    val_fraction: float = 0.1        # its validation share


@dataclass
class OptimizerConfig:
    name: Literal["adam", "sgd", "adamw"] = "adam"
    lr: float = 2e-4
    momentum: float = 0.9            # sgd only
    weight_decay: float = 0.0
    # after warm-up: "step" multiplies lr by lr_gamma every lr_step_size epochs (0 = constant lr,
    # datasetinsights' Adam); "cosine" decays lr to lr * lr_min_ratio over the whole run (all epochs)
    lr_schedule: Literal["step", "cosine"] = "step"
    lr_step_size: int = 0            # StepLR period in epochs (lr_schedule "step")
    lr_gamma: float = 0.1
    lr_min_ratio: float = 0.0        # cosine: final lr as a fraction of lr
    warmup_steps: int = 0            # linear warm-up over this many optimizer steps


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 4
    accumulation_steps: int = 1      # optimizer step every N batches (effective batch = N * batch_size)
    seed: int = 47                   # datasetinsights' random_seed
    workers: int = 0                 # DataLoader worker processes
    amp: Literal["none", "fp16", "bf16"] = "none"  # fp16 needs CUDA; bf16 works on CPU
    deterministic: bool = True       # torch.use_deterministic_algorithms (CPU runs are repeatable)
    val_interval: int = 1            # validate every N epochs (0 = never)
    log_every: int = 10              # TensorBoard scalars every N optimizer steps
    max_steps_per_epoch: int = 0     # cap batches per epoch (0 = all); for smoke runs and benchmarks
    tb_images: int = 4               # validation images drawn into TensorBoard each epoch
    keep_checkpoints: Optional[int] = None  # newest FasterRCNN.ep{N} files kept (best and last always); None = all


@dataclass
class EvalConfig:
    batch_size: int = 4
    workers: int = 0
    protocols: list[str] = field(default_factory=lambda: ["coco", "unity"])
    draw_score_thresh: float = 0.5   # boxes drawn by `predict` and in TensorBoard images


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict, source: str = "<dict>") -> "Config":
        """Validate a plain mapping (a YAML document, the ``config`` stored in a checkpoint) into a Config;
        a bad key or value raises ConfigError naming it and ``source``."""
        return from_dict(cls, raw, source)


# ---------------------------------------------------------------------------------------------
# validation


def _check_value(value: Any, tp: Any, key: str, source: str) -> Any:
    """Return ``value`` converted to type ``tp`` or raise ConfigError naming ``key`` and ``source``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_value(value, inner[0], key, source)
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, str):
            value = value.lower()
        if value not in choices:
            raise ConfigError(f"{source}: {key} must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        return [_check_value(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, source)
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a bug in this module


def _build(cls: type, raw: Any, prefix: str, source: str):
    """Instantiate dataclass ``cls`` from mapping ``raw``, checking every key and value."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {prefix or 'the config'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    raw = {_renamed(f"{prefix}.{k}" if prefix else str(k), source, v).rsplit(".", 1)[-1]: v for k, v in raw.items()}
    for key in raw:
        if key not in names:
            dotted = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"{source}: unknown key '{dotted}' (known keys here: {', '.join(names)})")
    kwargs = {k: _check_value(v, hints[k], f"{prefix}.{k}" if prefix else k, source) for k, v in raw.items()}
    obj = cls(**kwargs)
    _check_ranges(obj, prefix, source)
    return obj


# old dotted key -> its new name; the old one is still read (a FutureWarning says so when it is set)
RENAMED = {"model.backbone_weights": "model.weights_backbone"}


def _renamed(dotted: str, source: str, value: Any = None) -> str:
    if dotted in RENAMED:
        if value is not None:  # older checkpoints store `backbone_weights: null`: nothing to warn about
            warnings.warn(f"{source}: '{dotted}' is now '{RENAMED[dotted]}' (the old name will go)", FutureWarning,
                          stacklevel=3)
        return RENAMED[dotted]
    return dotted


_POSITIVE = {"train.epochs", "train.batch_size", "train.accumulation_steps", "eval.batch_size",
             "optimizer.lr", "model.box_detections_per_img", "train.log_every"}
_NON_NEGATIVE = {"train.workers", "eval.workers", "train.val_interval", "train.max_steps_per_epoch",
                 "optimizer.weight_decay", "optimizer.lr_step_size", "optimizer.warmup_steps", "train.tb_images",
                 "train.keep_checkpoints", "optimizer.lr_min_ratio"}


def _check_ranges(obj: Any, prefix: str, source: str) -> None:
    for f in dataclasses.fields(obj):
        key, value = f"{prefix}.{f.name}" if prefix else f.name, getattr(obj, f.name)
        if key in _POSITIVE and not value > 0:
            raise ConfigError(f"{source}: {key} must be > 0, got {value!r}")
        if key in _NON_NEGATIVE and value is not None and not value >= 0:
            raise ConfigError(f"{source}: {key} must be >= 0, got {value!r}")
    if prefix == "data" and obj.image_size is not None and (len(obj.image_size) != 2 or min(obj.image_size) <= 0):
        raise ConfigError(f"{source}: data.image_size must be [width, height] > 0, got {obj.image_size!r}")
    if prefix == "model" and obj.box_positive_fraction is not None and not 0 < obj.box_positive_fraction <= 1:
        raise ConfigError(f"{source}: model.box_positive_fraction must be in (0, 1], got {obj.box_positive_fraction!r}")
    if prefix == "model" and obj.backbone_depths is not None and (
            len(obj.backbone_depths) != len(obj.backbone_widths) or min(obj.backbone_depths, default=0) < 0):
        raise ConfigError(f"{source}: model.backbone_depths needs one count >= 0 per model.backbone_widths entry "
                          f"({len(obj.backbone_widths)}), got {obj.backbone_depths!r}")
    if prefix == "data" and not 0 < obj.val_fraction < 1:
        raise ConfigError(f"{source}: data.val_fraction must be between 0 and 1, got {obj.val_fraction!r}")
    if prefix == "eval":
        for p in obj.protocols:
            if p not in ("coco", "unity"):
                raise ConfigError(f"{source}: eval.protocols entries must be 'coco' or 'unity', got {p!r}")


def from_dict(cls: type, raw: Any, source: str = "<dict>"):
    """Instantiate the config dataclass ``cls`` (`Config`, or another one built the same way, such as
    the study's) from mapping ``raw``, checking every key and value (ConfigError naming ``source``)."""
    return _build(cls, raw, "", source)


def config_from_dict(raw: dict, source: str = "<dict>") -> Config:
    """`Config.from_dict` (kept: older call sites use this name)."""
    return Config.from_dict(raw, source)


# ---------------------------------------------------------------------------------------------
# loading


def packaged_configs() -> list[str]:
    """Names of the configs shipped inside the package."""
    root = importlib.resources.files("synthgap.config") / "recipes"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def _read_source(source: str) -> str:
    name = source[:-5] if source.endswith(".yaml") else source
    if "/" not in source and os.sep not in source and not os.path.exists(source) and name in packaged_configs():
        return (importlib.resources.files("synthgap.config") / "recipes" / f"{name}.yaml").read_text("utf-8")
    if not storage.exists(source):
        raise ConfigError(f"{source}: config not found (neither a file/URI nor a packaged config: "
                          f"{', '.join(packaged_configs())})")
    return storage.read_text(source)


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.epochs=3"`` -> ``("train.epochs", 3)``; the value is read as a YAML scalar."""
    if "=" not in text:
        raise ConfigError(f"--override {text!r}: expected KEY=VALUE with a dotted key, e.g. train.epochs=3")
    key, value = text.split("=", 1)
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--override {text!r}: value is not valid YAML ({e})") from None
    return key.strip(), parsed


def apply_overrides(cfg: Config, overrides: Iterable[str]) -> Config:
    """Set dotted keys on a copy of ``cfg``; each value is validated against its field's type."""
    cfg = dataclasses.replace(cfg, **{f.name: dataclasses.replace(getattr(cfg, f.name))
                                      for f in dataclasses.fields(cfg)})
    for text in overrides:
        key, value = parse_override(text)
        key = _renamed(key, f"--override {text}", value)
        parts = key.split(".")
        source = f"--override {text}"
        node: Any = cfg
        for i, part in enumerate(parts):
            names = [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else []
            if part not in names:
                raise ConfigError(f"{source}: unknown key '{'.'.join(parts[:i + 1])}'"
                                  + (f" (known keys here: {', '.join(names)})" if names else ""))
            if i == len(parts) - 1:
                hint = typing.get_type_hints(type(node))[part]
                if dataclasses.is_dataclass(hint):
                    raise ConfigError(f"{source}: '{key}' is a section; override one of its keys instead")
                setattr(node, part, _check_value(value, hint, key, source))
                _check_ranges(node, ".".join(parts[:-1]), source)
            else:
                node = getattr(node, part)
    return cfg


def load_config(source: str | None = None, overrides: Iterable[str] = ()) -> Config:
    """Load and validate a config from a path, URI or packaged name (None = all defaults)."""
    if source is None:
        cfg = Config()
    else:
        text = _read_source(source)
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: not valid YAML ({e})") from None
        if isinstance(raw, dict) and "estimator" in raw:  # datasetinsights' estimator YAML: translate it
            from synthgap.config.datasetinsights import translate

            raw, _, overrides = translate(raw, source, overrides)
        cfg = Config.from_dict(raw, source)
    return apply_overrides(cfg, overrides)


def dump_config(cfg: Config) -> str:
    """YAML text of a config (every key, defaults included)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
