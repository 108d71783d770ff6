import os
import pickle
import random
import sys
import textwrap

import numpy as np
import pytest
import torch

from synthgap.models.checkpoint import (RESUME_KEYS, CheckpointError, check_resumable, checkpoint_name, label_map_of, lean,
                                 load_checkpoint, make_checkpoint, model_state, prune_epoch_checkpoints, rng_state,
                                 save_checkpoint, set_rng_state)


def _tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))


def test_round_trip_local_and_uri(tmp_path):
    model = _tiny_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    ckpt = make_checkpoint(model=model, optimizer=opt, epoch=3, step=12, config={"train": {"epochs": 5}},
                           label_map={1: "a", 2: "b"}, metrics={"AP": 0.5}, best_ap=0.5)
    for uri in (str(tmp_path / "ck" / checkpoint_name(3)), "memory://ck/FasterRCNN.last.estimator"):
        save_checkpoint(ckpt, uri)
        back = load_checkpoint(uri)
        assert back["format"] == "synthgap.checkpoint/1" and back["epoch"] == 3 and back["step"] == 12
        assert back["config"] == {"train": {"epochs": 5}} and back["metrics"] == {"AP": 0.5}
        assert label_map_of(back) == {1: "a", 2: "b"}
        for k, v in model.state_dict().items():
            assert torch.equal(back["model"][k], v)
        opt2 = torch.optim.Adam(_tiny_model().parameters(), lr=1e-3)
        opt2.load_state_dict(back["optimizer"])
        assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert os.listdir(tmp_path / "ck") == ["FasterRCNN.ep3.estimator"]  # atomic write left no temporary file
    assert checkpoint_name("best") == "FasterRCNN.best.estimator"


def test_rng_states_restore_every_generator():
    state = rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_bare_state_dict_and_not_a_checkpoint(tmp_path):
    path = tmp_path / "sd.pth"
    torch.save(_tiny_model().state_dict(), path)
    assert set(model_state(load_checkpoint(str(path)))) == set(_tiny_model().state_dict())
    with pytest.raises(CheckpointError, match="no model weights"):
        model_state({"foo": 1}, "x")
    (tmp_path / "junk.estimator").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="junk.estimator: not a readable torch checkpoint"):
        load_checkpoint(str(tmp_path / "junk.estimator"))
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(str(tmp_path / "missing.estimator"))


def test_datasetinsights_estimator_loads_without_yacs(tmp_path, monkeypatch):
    """A file built like datasetinsights' published .estimator: torch.save({"model": state_dict,
    "config": yacs CfgNode}). A stand-in `yacs.config.CfgNode` (a dict subclass with attributes, as
    the real one) is importable only while saving; loading must not need (or import) it."""
    pkg = tmp_path / "fake_site" / "yacs"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "config.py").write_text(textwrap.dedent("""
        class CfgNode(dict):
            IMMUTABLE = "__immutable__"
            def __init__(self, init_dict=None):
                init_dict = init_dict or {}
                for k, v in init_dict.items():
                    if isinstance(v, dict):
                        init_dict[k] = CfgNode(v)
                super().__init__(init_dict)
                self.__dict__[CfgNode.IMMUTABLE] = False
            def __getattr__(self, name):
                return self[name]
    """))
    monkeypatch.syspath_prepend(str(tmp_path / "fake_site"))
    from yacs.config import CfgNode

    config = CfgNode({"estimator": "FasterRCNN", "backbone": "resnet50", "num_classes": 64,
                      "optimizer": {"name": "Adam", "args": {"lr": 2e-4}}})
    state = _tiny_model().state_dict()
    path = tmp_path / "FasterRCNN.estimator"
    torch.save({"model": state, "config": config}, path)
    for name in [m for m in sys.modules if m == "yacs" or m.startswith("yacs.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path / "elsewhere"))
    sys.path.remove(str(tmp_path / "fake_site"))

    loaded = load_checkpoint(str(path))
    assert "yacs" not in sys.modules
    assert type(loaded["config"]) is dict and type(loaded["config"]["optimizer"]["args"]) is dict
    assert loaded["config"]["backbone"] == "resnet50" and loaded["config"]["optimizer"]["args"]["lr"] == 2e-4
    assert all(torch.equal(model_state(loaded)[k], v) for k, v in state.items())
    assert label_map_of(loaded) is None


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickles_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    zipped = tmp_path / "evil.estimator"
    torch.save({"model": {}, "config": _Evil(marker)}, zipped)
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps({"model": _Evil(marker)}))
    for path in (zipped, raw):
        with pytest.raises(CheckpointError, match="refused to load"):
            load_checkpoint(str(path))
    assert not marker.exists()
    # the same file really does run code when unpickled without restriction (the test is not vacuous)
    pickle.loads(raw.read_bytes())
    assert marker.exists()


def test_lean_checkpoints_hold_no_resume_state_and_cannot_resume(tmp_path):
    model = _tiny_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    full = make_checkpoint(model=model, optimizer=opt, epoch=2, step=4, config={"train": {"epochs": 5}},
                           label_map={1: "a"}, metrics={"AP": 0.25}, best_ap=0.25)
    small = lean(full)
    assert set(small) == {"format", "synthgap_version", "model", "epoch", "step", "config", "label_map", "metrics",
                          "best_ap"}
    assert not set(small) & set(RESUME_KEYS)
    save_checkpoint(full, str(tmp_path / "full"))
    save_checkpoint(small, str(tmp_path / "lean"))
    assert os.path.getsize(tmp_path / "lean") < os.path.getsize(tmp_path / "full")
    check_resumable(load_checkpoint(str(tmp_path / "full")), "full")
    with pytest.raises(CheckpointError, match=r"lean: cannot resume from it: it has no optimizer, rng state "
                                              r".* resume from FasterRCNN.last.estimator"):
        check_resumable(load_checkpoint(str(tmp_path / "lean")), "lean")


def test_prune_keeps_the_newest_epoch_files_and_never_best_last_or_later_runs(tmp_path):
    for tag in [1, 2, 3, 4, 9, "best", "last"]:
        (tmp_path / checkpoint_name(tag)).write_bytes(b"x")
    (tmp_path / "FasterRCNN.epX.estimator").write_bytes(b"not an epoch file")
    assert prune_epoch_checkpoints(str(tmp_path), 4, None) == []
    removed = prune_epoch_checkpoints(str(tmp_path), 4, 2)
    assert sorted(os.path.basename(p) for p in removed) == ["FasterRCNN.ep1.estimator", "FasterRCNN.ep2.estimator"]
    assert sorted(os.listdir(tmp_path)) == ["FasterRCNN.best.estimator", "FasterRCNN.ep3.estimator",
                                            "FasterRCNN.ep4.estimator", "FasterRCNN.ep9.estimator",
                                            "FasterRCNN.epX.estimator", "FasterRCNN.last.estimator"]
    prune_epoch_checkpoints(str(tmp_path), 4, 0)
    assert "FasterRCNN.ep4.estimator" not in os.listdir(tmp_path) and "FasterRCNN.ep9.estimator" in os.listdir(tmp_path)
    # any storage URI
    save_checkpoint({"model": {}}, "memory://prune/FasterRCNN.ep1.estimator")
    save_checkpoint({"model": {}}, "memory://prune/FasterRCNN.ep2.estimator")
    assert prune_epoch_checkpoints("memory://prune", 2, 1) == ["memory://prune/FasterRCNN.ep1.estimator"]


def test_state_dict_metadata_survives_loading(tmp_path):
    """torchvision migrates older layouts by the per-module versions in ``state_dict._metadata``."""
    model = _tiny_model()
    for name, obj in (("bare.pth", model.state_dict()), ("ck.estimator", {"model": model.state_dict()})):
        torch.save(obj, tmp_path / name)
        state = model_state(load_checkpoint(str(tmp_path / name)))
        assert state._metadata == model.state_dict()._metadata
        assert state._metadata["1"]["version"] == 2  # BatchNorm's layout version


def test_a_folder_shaped_checkpoint_is_a_one_line_error(tmp_path):
    """issue 14 item 10: IsADirectoryError (and PermissionError) became a traceback."""
    (tmp_path / "model.pth").mkdir()
    with pytest.raises(CheckpointError, match="model.pth: cannot read the checkpoint"):
        load_checkpoint(str(tmp_path / "model.pth"))


def _damage(path, offset, n=65536, seed=0):
    """Overwrite ``n`` bytes of a file at ``offset`` with random bytes (a bad disk block, a broken copy)."""
    data = bytearray(path.read_bytes())
    data[offset:offset + n] = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def test_a_damaged_checkpoint_is_refused_naming_the_file(tmp_path):
    """issue 23: 64 KB of random bytes in the middle of an .estimator loaded silently (the damage landed in a
    weight tensor), so `evaluate` scored it and `--resume` continued from it. torch's zip container records a
    CRC-32 per entry; loading checks them."""
    torch.manual_seed(0)
    model = torch.nn.Linear(1000, 1000)  # 4 MB of weights: the middle of the file is weight data
    path = tmp_path / "FasterRCNN.best.estimator"
    save_checkpoint(make_checkpoint(model=model, epoch=1, step=2, config={}, label_map={1: "a"}), str(path))
    intact = load_checkpoint(str(path))
    assert torch.equal(intact["model"]["weight"], model.weight.detach())
    _damage(path, path.stat().st_size // 2)
    # the damage is real: torch itself loads the file without a word, with other weights
    unchecked = torch.load(path, weights_only=True)
    assert not torch.equal(unchecked["model"]["weight"], model.weight.detach())
    with pytest.raises(CheckpointError, match=r"FasterRCNN.best.estimator: the file is damaged: .*data/\d+ "
                                              r"fails its CRC-32 check"):
        load_checkpoint(str(path))
    # a cut-off file (an interrupted copy) is refused as well
    truncated = tmp_path / "cut.estimator"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(CheckpointError, match="cut.estimator: "):
        load_checkpoint(str(truncated))


def test_describe_checkpoint_reports_architecture_classes_epoch_metrics_and_config(tmp_path):
    """`synthgap info FILE.estimator`: what a checkpoint holds, without building a model."""
    from synthgap.models.checkpoint import describe_checkpoint

    model = _tiny_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    config = {"model": {"name": "fasterrcnn_small_gn"}, "train": {"epochs": 5}}
    full = make_checkpoint(model=model, optimizer=opt, epoch=3, step=12, config=config,
                           label_map={1: "red", 2: "green"}, metrics={"AP": 0.25, "AP50": 0.5}, best_ap=0.3)
    save_checkpoint(full, str(tmp_path / "last.estimator"))
    save_checkpoint(lean(full), str(tmp_path / "ep3.estimator"))
    d = describe_checkpoint(str(tmp_path / "last.estimator"))
    assert d["kind"] == "synthgap" and d["architecture"] == "fasterrcnn_small_gn"
    assert d["classes"] == {1: "red", 2: "green"} and d["epoch"] == 3 and d["step"] == 12
    assert d["metrics"] == {"AP": 0.25, "AP50": 0.5} and d["best_ap"] == 0.3 and d["resumable"] is True
    assert d["parameters"] == sum(p.numel() for p in model.parameters()) and d["config"] == config
    assert d["bytes"] == os.path.getsize(tmp_path / "last.estimator") and d["synthgap_version"]
    assert describe_checkpoint(str(tmp_path / "ep3.estimator"))["resumable"] is False
    # a datasetinsights-shaped file: architecture from its config, classes counted from the box predictor
    state = {"roi_heads.box_predictor.cls_score.weight": torch.zeros(64, 8), "backbone.w": torch.zeros(3)}
    torch.save({"model": state, "config": {"backbone": "resnet50", "num_classes": 64}}, tmp_path / "di.estimator")
    d = describe_checkpoint(str(tmp_path / "di.estimator"))
    assert d["kind"] == "datasetinsights" and d["architecture"] == "fasterrcnn_resnet50_fpn"
    assert d["classes"] is None and d["num_classes"] == 63 and d["epoch"] is None and d["parameters"] == 64 * 8 + 3
    torch.save(state, tmp_path / "bare.pth")
    assert describe_checkpoint(str(tmp_path / "bare.pth"))["kind"] == "state_dict"
