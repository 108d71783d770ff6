"""A checkpoint scored on a test set: the files `evaluate_checkpoint` writes, the config's data.test."""

import json

import pytest
import torch

from synthgap.generate.shapes import LABEL_MAP, make_coco
from synthgap.models.checkpoint import make_checkpoint, save_checkpoint
from synthgap.config import load_config
from synthgap.errors import ConfigError, LabelMapError
from synthgap.engine.evaluate import evaluate_checkpoint, load_trained_model
from synthgap.models import build_model
from tests.helpers.labels import PERMUTED, renumbered_coco

TINY = ["model.min_size=64", "model.max_size=64", "model.box_score_thresh=0.0", "data.image_size=null"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("ev")
    cfg = load_config("cpu_small", TINY)
    torch.manual_seed(0)
    path = root / "m.estimator"
    save_checkpoint(make_checkpoint(model=build_model(cfg.model, 4), epoch=1, step=1, config=cfg.to_dict(),
                                    label_map=LABEL_MAP), str(path))
    return str(path), make_coco(root / "test", 3, size=(64, 48), seed=7)


def test_model_comes_from_the_checkpoint(checkpoint):
    path, _ = checkpoint
    cfg, model, label_map = load_trained_model(path)
    assert cfg.model.min_size == 64 and label_map == LABEL_MAP and not model.training


def test_data_test_from_the_config_and_the_files_written(checkpoint, tmp_path):
    path, test_dir = checkpoint
    out = tmp_path / "out"
    done = evaluate_checkpoint(path, None, str(out), overrides=[f"data.test={test_dir}"], progress=False)
    assert done["images"] == 3 and set(done["results"]) == {"coco", "unity"}
    assert len(json.loads((out / "predictions.json").read_text())) == done["detections"]
    for protocol in ("coco", "unity"):
        assert json.loads((out / f"metrics_{protocol}.json").read_text())["protocol"] == protocol
        assert (out / f"per_class_{protocol}.txt").read_text().startswith(f"{protocol} protocol")
    with pytest.raises(ConfigError, match="no test data"):
        evaluate_checkpoint(path, None, str(tmp_path / "none"), progress=False)


def test_a_test_set_numbering_the_classes_differently_is_scored_by_name(checkpoint, tmp_path):
    """The same test set with its classes renumbered: predictions.json in the test set's ids, the same
    metrics class by class (before: the checkpoint's ids were taken as the test set's, silently)."""
    path, test_dir = checkpoint
    other = renumbered_coco(test_dir, tmp_path / "renumbered")
    a = evaluate_checkpoint(path, test_dir, str(tmp_path / "a"), progress=False)
    b = evaluate_checkpoint(path, other, str(tmp_path / "b"), progress=False)
    pa, pb = (json.loads((tmp_path / x / "predictions.json").read_text()) for x in "ab")
    assert len(pa) == len(pb) > 0
    assert [PERMUTED[d["category_id"]] for d in pa] == [d["category_id"] for d in pb]
    assert a["alignment"].identity and b["alignment"].model_to_test == PERMUTED
    for protocol in ("coco", "unity"):
        ra, rb = a["results"][protocol], b["results"][protocol]
        assert ra.stats == rb.stats
        assert {d["name"]: d for d in ra.per_class.values()} == {d["name"]: d for d in rb.per_class.values()}
    written = json.loads((tmp_path / "b" / "label_alignment.json").read_text())
    assert written["model_to_test"] == {"1": 3, "2": 1, "3": 2} and "red 1->3" in written["log"]


def test_test_classes_unknown_to_the_model_are_left_out_and_named(checkpoint, tmp_path):
    path, _ = checkpoint
    other = make_coco(tmp_path / "other", 2, size=(64, 48), seed=3)
    coco = json.loads((tmp_path / "other" / "annotations.json").read_text())
    coco["categories"].append({"id": 9, "name": "violet"})  # a class the model does not know
    coco["annotations"].append({**coco["annotations"][0], "id": 999, "category_id": 9})
    (tmp_path / "other" / "annotations.json").write_text(json.dumps(coco))
    done = evaluate_checkpoint(path, other, str(tmp_path / "o"), progress=False)
    assert done["alignment"].test_only == (9,) and "violet (9)" in done["alignment"].log_line()
    for result in done["results"].values():
        assert 9 not in result.per_class and set(result.per_class) == {1, 2, 3}
    coco["categories"] = [{"id": 9, "name": "violet"}]
    coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] == 9]
    (tmp_path / "other" / "annotations.json").write_text(json.dumps(coco))
    with pytest.raises(LabelMapError, match="no class of the model"):
        evaluate_checkpoint(path, other, str(tmp_path / "o2"), progress=False)


def test_a_class_map_pairs_a_renamed_class(checkpoint, tmp_path):
    path, test_dir = checkpoint
    other = renumbered_coco(test_dir, tmp_path / "renamed", names={"red": "crimson"})
    plain = evaluate_checkpoint(path, other, str(tmp_path / "plain"), progress=False)
    assert plain["alignment"].model_only == (1,) and "red (1)" in plain["alignment"].log_line()
    mapped = evaluate_checkpoint(path, other, str(tmp_path / "mapped"), progress=False, class_map=["red=crimson"])
    assert mapped["alignment"].model_to_test == PERMUTED and mapped["left_out"] == 0
    assert plain["left_out"] > 0 and plain["detections"] == mapped["detections"]


def test_a_datasetinsights_model_in_torchvision_05_layout_loads_at_its_own_input_size(tmp_path):
    """datasetinsights' published FasterRCNN.estimator: {"model": torchvision 0.5 state_dict (FrozenBatchNorm2d
    without num_batches_tracked, old FPN / RPN head key names), "config": its yacs config}. It was refused
    before ("weights lack 71 tensors ... bn1.num_batches_tracked"); the input size is torchvision's default
    (datasetinsights set none), not cpu_small's."""
    from torchvision.ops import FrozenBatchNorm2d

    from synthgap.config import ModelConfig
    from tests.models.test_detectors import _stand_in, torchvision05_state

    layout = build_model(ModelConfig(name="fasterrcnn_resnet50_fpn", weights_backbone="imagenet"), 64,
                         load_weights=False)
    old = torchvision05_state(_stand_in(layout))  # a few kB: every tensor is one broadcast value
    path = tmp_path / "FasterRCNN.estimator"
    torch.save({"model": old, "config": {"estimator": "FasterRCNN", "backbone": "resnet50", "num_classes": 64,
                                         "pretrained": False, "pretrained_backbone": True}}, path)
    cfg, model, label_map = load_trained_model(str(path))
    assert label_map is None and cfg.model.name == "fasterrcnn_resnet50_fpn"
    assert cfg.data.image_size is None and cfg.model.min_size is None and cfg.model.max_size is None
    assert model.transform.min_size == (800,) and model.transform.max_size == 1333
    assert isinstance(model.backbone.body.bn1, FrozenBatchNorm2d)
    state = model.state_dict()
    assert torch.equal(state["backbone.fpn.inner_blocks.0.0.weight"], old["backbone.fpn.inner_blocks.0.weight"])
    assert torch.equal(state["rpn.head.conv.0.0.bias"], old["rpn.head.conv.bias"])
    assert torch.equal(state["backbone.body.bn1.running_var"], old["backbone.body.bn1.running_var"])
    assert state["roi_heads.box_predictor.cls_score.weight"].shape[0] == 64


def test_a_model_trained_on_pretrained_weights_loads_offline_in_its_layout(tmp_path, monkeypatch):
    """A checkpoint of a `weights_backbone: imagenet` run: evaluate rebuilds its FrozenBatchNorm2d layout
    and needs no ImageNet file (empty $TORCH_HOME, network out of reach)."""
    from torchvision.ops import FrozenBatchNorm2d

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    cfg = load_config("cpu_small", TINY + ["model.name=fasterrcnn_mobilenet_v3_large_320_fpn",
                                           "model.weights_backbone=imagenet"])
    trained = build_model(cfg.model, 4, load_weights=False)
    path = tmp_path / "m.estimator"
    save_checkpoint(make_checkpoint(model=trained, epoch=1, step=1, config=cfg.to_dict(), label_map=LABEL_MAP),
                    str(path))
    loaded_cfg, model, _ = load_trained_model(str(path))
    assert loaded_cfg.model.weights_backbone == "imagenet"
    assert isinstance(model.backbone.body["0"][1], FrozenBatchNorm2d)
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in model.state_dict().items())
    assert not (tmp_path / "empty_torch_home").exists()


def test_ci_resamples_write_bootstrap_intervals_into_metrics_coco_json(checkpoint, tmp_path):
    path, test_dir = checkpoint
    evaluate_checkpoint(path, test_dir, str(tmp_path / "ci"), progress=False, ci_resamples=50, ci_seed=3)
    coco = json.loads((tmp_path / "ci" / "metrics_coco.json").read_text())
    assert coco["intervals"]["resamples"] == 50 and coco["intervals"]["seed"] == 3
    assert set(coco["intervals"]["stats"]) == set(coco["stats"])
    assert "intervals" not in json.loads((tmp_path / "ci" / "metrics_unity.json").read_text())
