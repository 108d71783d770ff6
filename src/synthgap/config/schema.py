"""The training/evaluation config: one YAML file validated into one typed object.

Every default lives in the dataclasses below. A YAML file only lists what differs; unknown keys and
values of the wrong type are a `ConfigError` naming the dotted key and the file; each section's
``check`` holds the range rules of its own fields. Loading (files, URIs, packaged recipes, dotted
``--override`` strings) is `synthgap.config.load`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Optional

from synthgap.errors import ConfigError


def _at_least(section: Any, source: str, minimum: float, strict: bool, names: tuple[str, ...]) -> None:
    """ConfigError unless each ``section.<name>`` is None or >= minimum (> minimum when ``strict``)."""
    for name in names:
        value = getattr(section, name)
        if value is not None and not (value > minimum if strict else value >= minimum):
            raise ConfigError(f"{source}: {section.PREFIX}.{name} must be {'>' if strict else '>='} {minimum:g}, "
                              f"got {value!r}")


def _positive(section: Any, source: str, *names: str) -> None:
    _at_least(section, source, 0, True, names)


def _non_negative(section: Any, source: str, *names: str) -> None:
    _at_least(section, source, 0, False, names)


@dataclass
class ModelConfig:
    """A Faster R-CNN. ``None`` means "the default of this architecture" (torchvision's, for its variants)."""

    # an architecture of synthgap.models.registry (`synthgap.models.list_models()`); checked when the model
    # is built (the registry sits above the config in the import graph, so it is not checked here)
    name: str = "fasterrcnn_resnet50_fpn"
    # coco (torchvision's COCO-trained detector, its box predictor replaced) | a full model file: path or URI
    weights: Optional[str] = None
    # imagenet (torchvision's, or timm's for fasterrcnn_timm_fpn) | a classification backbone's state_dict:
    # path or URI
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
    # anchor sides, pixels of the model's input: fasterrcnn_small_gn puts all on its one feature map,
    # fasterrcnn_timm_fpn one per FPN map, finest first (the default: 2x its strides 8, 16, 32, 64)
    anchor_sizes: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    anchor_aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])  # height / width
    box_head_width: int = 256                # the two-layer box head's hidden width
    # fasterrcnn_timm_fpn only (any timm model with features_only; `pip install synthgap[timm]`):
    backbone: Optional[str] = None           # a timm model name, e.g. resnet50 (None: tf_efficientnet_lite0)
    # timm feature levels given to the FPN (indices into the model's feature_info; None: the last three,
    # strides 8, 16, 32 px on most models); the FPN adds a max-pooled map at twice the last stride
    backbone_out_indices: Optional[list[int]] = None
    fpn_channels: Optional[int] = None       # channels of every FPN map (None: 256, torchvision's)

    PREFIX: ClassVar[str] = "model"

    def check(self, source: str) -> None:
        """ConfigError for values no model can take (types were checked on the way in)."""
        _positive(self, source, "box_detections_per_img", "fpn_channels")
        if not self.name:
            raise ConfigError(f"{source}: model.name must name an architecture (synthgap.models.list_models())")
        if self.box_positive_fraction is not None and not 0 < self.box_positive_fraction <= 1:
            raise ConfigError(f"{source}: model.box_positive_fraction must be in (0, 1], got "
                              f"{self.box_positive_fraction!r}")
        if self.backbone_depths is not None and (len(self.backbone_depths) != len(self.backbone_widths)
                                                 or min(self.backbone_depths, default=0) < 0):
            raise ConfigError(f"{source}: model.backbone_depths needs one count >= 0 per model.backbone_widths "
                              f"entry ({len(self.backbone_widths)}), got {self.backbone_depths!r}")


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
    # keep groups whole in that split (synthgap.data.splits.group_keys): 'regex:PATTERN' on the file name,
    # 'folder', or 'field:NAME' of the sample metadata; None = image by image
    split_group_by: Optional[str] = None

    PREFIX: ClassVar[str] = "data"

    def check(self, source: str) -> None:
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) <= 0):
            raise ConfigError(f"{source}: data.image_size must be [width, height] > 0, got {self.image_size!r}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"{source}: data.val_fraction must be between 0 and 1, got {self.val_fraction!r}")


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

    PREFIX: ClassVar[str] = "optimizer"

    def check(self, source: str) -> None:
        _positive(self, source, "lr")
        _non_negative(self, source, "weight_decay", "lr_step_size", "warmup_steps", "lr_min_ratio")


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

    PREFIX: ClassVar[str] = "train"

    def check(self, source: str) -> None:
        _positive(self, source, "epochs", "batch_size", "accumulation_steps", "log_every")
        _non_negative(self, source, "workers", "val_interval", "max_steps_per_epoch", "tb_images", "keep_checkpoints")


@dataclass
class EvalConfig:
    batch_size: int = 4
    workers: int = 0
    protocols: list[str] = field(default_factory=lambda: ["coco", "unity"])
    draw_score_thresh: float = 0.5   # boxes drawn by `predict` and in TensorBoard images

    PREFIX: ClassVar[str] = "eval"

    def check(self, source: str) -> None:
        _positive(self, source, "batch_size")
        _non_negative(self, source, "workers")
        for p in self.protocols:
            if p not in ("coco", "unity"):
                raise ConfigError(f"{source}: eval.protocols entries must be 'coco' or 'unity', got {p!r}")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def check(self, source: str) -> None:  # each section checked itself when it was built
        pass

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict, source: str = "<dict>") -> "Config":
        """Validate a plain mapping (a YAML document, the ``config`` stored in a checkpoint) into a Config;
        a bad key or value raises ConfigError naming it and ``source``."""
        return from_dict(cls, raw, source)


# ---------------------------------------------------------------------------------------------
# validation


def check_value(value: Any, tp: Any, key: str, source: str) -> Any:
    """Return ``value`` converted to type ``tp`` or raise ConfigError naming ``key`` and ``source``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return check_value(value, inner[0], key, source)
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
        return [check_value(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
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
    raw = {renamed(f"{prefix}.{k}" if prefix else str(k), source, v).rsplit(".", 1)[-1]: v for k, v in raw.items()}
    for key in raw:
        if key not in names:
            dotted = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"{source}: unknown key '{dotted}' (known keys here: {', '.join(names)})")
    kwargs = {k: check_value(v, hints[k], f"{prefix}.{k}" if prefix else k, source) for k, v in raw.items()}
    obj = cls(**kwargs)
    obj.check(source)
    return obj


# old dotted key -> its new name; the old one is still read (a FutureWarning says so when it is set)
RENAMED = {"model.backbone_weights": "model.weights_backbone"}


def renamed(dotted: str, source: str, value: Any = None) -> str:
    if dotted in RENAMED:
        if value is not None:  # older checkpoints store `backbone_weights: null`: nothing to warn about
            warnings.warn(f"{source}: '{dotted}' is now '{RENAMED[dotted]}' (the old name will go)", FutureWarning,
                          stacklevel=3)
        return RENAMED[dotted]
    return dotted


def from_dict(cls: type, raw: Any, source: str = "<dict>"):
    """Instantiate the config dataclass ``cls`` (`Config`, or another one built the same way, such as
    the study's) from mapping ``raw``, checking every key and value (ConfigError naming ``source``)."""
    return _build(cls, raw, "", source)


def config_from_dict(raw: dict, source: str = "<dict>") -> Config:
    """`Config.from_dict` (kept: older call sites use this name)."""
    return Config.from_dict(raw, source)
