import dataclasses

import pytest

from synthgap.io import storage
from synthgap.config import Config, ConfigError, apply_overrides, dump_config, load_config, packaged_configs


def test_defaults_and_packaged_recipes():
    assert Config().optimizer.lr == 2e-4 and Config().model.name == "fasterrcnn_resnet50_fpn"
    assert set(packaged_configs()) >= {"synthetic", "real", "finetune", "cpu_small"}
    syn = load_config("synthetic")
    assert (syn.optimizer.name, syn.optimizer.lr, syn.train.batch_size, syn.train.accumulation_steps,
            syn.train.epochs) == ("adam", 2e-4, 4, 8, 10)
    assert load_config("real").train.epochs == 100
    fine = load_config("finetune.yaml")
    assert (fine.optimizer.lr, fine.train.epochs) == (2e-5, 30)
    small = load_config("cpu_small")
    assert small.model.name == "fasterrcnn_small_gn" and small.model.anchor_sizes == [16, 28, 48]
    assert (small.model.rpn_pre_nms_top_n_train, small.model.rpn_post_nms_top_n_train,
            small.model.rpn_batch_size_per_image, small.model.box_batch_size_per_image,
            small.model.box_positive_fraction) == (600, 300, 64, 32, 0.5)
    assert (small.optimizer.name, small.optimizer.lr_schedule) == ("adamw", "cosine")
    assert small.data.image_size == [224, 168]


def test_file_uri_and_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\noptimizer:\n  lr: 1e-3\n")
    cfg = load_config(str(path))
    assert cfg.train.epochs == 3 and cfg.optimizer.lr == pytest.approx(1e-3)  # YAML 1.1 "1e-3" string accepted
    assert cfg.train.batch_size == Config().train.batch_size
    storage.write_text("memory://cfgs/c.yaml", dump_config(cfg))
    assert load_config("memory://cfgs/c.yaml") == cfg


@pytest.mark.parametrize("text, match", [
    ("train:\n  epoch: 3\n", r"c.yaml: unknown key 'train.epoch'"),
    ("trian: {}\n", r"unknown key 'trian'"),
    ("train:\n  epochs: three\n", r"c.yaml: train.epochs must be an integer, got 'three'"),
    ("train:\n  epochs: 0\n", r"train.epochs must be > 0"),
    ("train:\n  amp: fp8\n", r"train.amp must be one of none, fp16, bf16"),
    ("model:\n  name: ''\n", r"model.name must name an architecture"),  # a name's registration: tests/models
    ("data:\n  image_size: [320]\n", r"data.image_size must be \[width, height\]"),
    ("train: 5\n", r"train must be a mapping"),
    ("train:\n  deterministic: 1\n", r"train.deterministic must be true or false"),
    ("model:\n  box_positive_fraction: 1.5\n", r"model.box_positive_fraction must be in \(0, 1\]"),
    ("optimizer:\n  lr_min_ratio: -0.1\n", r"optimizer.lr_min_ratio must be >= 0"),
    ("optimizer:\n  lr_schedule: linear\n", r"optimizer.lr_schedule must be one of step, cosine"),
])
def test_bad_files_name_key_and_file(tmp_path, text, match):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(str(path))


def test_overrides_are_typed():
    cfg = load_config("cpu_small", ["train.epochs=2", "optimizer.lr=0.01", "model.weights=/w.pth",
                                    "data.image_size=[64, 48]", "model.min_size=null", "train.amp=BF16"])
    assert (cfg.train.epochs, cfg.optimizer.lr, cfg.model.weights, cfg.data.image_size, cfg.model.min_size,
            cfg.train.amp) == (2, 0.01, "/w.pth", [64, 48], None, "bf16")
    base = Config()
    changed = apply_overrides(base, ["train.epochs=5"])
    assert base.train.epochs == 10 and changed.train.epochs == 5  # the input is not mutated
    with pytest.raises(ConfigError, match=r"--override train.epochs=x: train.epochs must be an integer"):
        apply_overrides(base, ["train.epochs=x"])
    with pytest.raises(ConfigError, match=r"unknown key 'train.epoch'"):
        apply_overrides(base, ["train.epoch=1"])
    with pytest.raises(ConfigError, match=r"expected KEY=VALUE"):
        apply_overrides(base, ["train.epochs"])
    with pytest.raises(ConfigError, match=r"'train' is a section"):
        apply_overrides(base, ["train=1"])
    with pytest.raises(ConfigError, match=r"train.batch_size must be > 0"):
        apply_overrides(base, ["train.batch_size=-1"])


def test_missing_config_lists_packaged_names():
    with pytest.raises(ConfigError, match=r"nope.yaml: config not found.*cpu_small"):
        load_config("nope.yaml")


def test_to_dict_is_plain():
    d = load_config("cpu_small").to_dict()
    assert d["model"]["name"] == "fasterrcnn_small_gn" and d["model"]["backbone_widths"] == [32, 64, 128]
    assert all(not dataclasses.is_dataclass(v) for v in d.values())


def test_config_from_dict_validates_like_a_file():
    cfg = Config.from_dict({"train": {"epochs": 3}, "data": {"test": "data/real/test"}}, "ckpt.estimator")
    assert cfg.train.epochs == 3 and cfg.data.test == "data/real/test" and cfg.model == Config().model
    with pytest.raises(ConfigError, match=r"ckpt.estimator: unknown key 'train.epoch'"):
        Config.from_dict({"train": {"epoch": 3}}, "ckpt.estimator")
