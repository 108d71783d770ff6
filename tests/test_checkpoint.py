import os
import pickle
import random
import sys
import textwrap

import numpy as np
import pytest
import torch

from synthgap.checkpoint import (CheckpointError, checkpoint_name, label_map_of, load_checkpoint, make_checkpoint,
                                 model_state, rng_state, save_checkpoint, set_rng_state)


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
