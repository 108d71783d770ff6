import pytest
import torch

from synthgap.checkpoint import make_checkpoint, save_checkpoint
from synthgap.config import ModelConfig, load_config
from synthgap.models import ARCHITECTURES, build_model, load_model_weights, num_classes_for


def test_num_classes_is_max_id_plus_one_and_background_is_reserved():
    assert num_classes_for({1: "a", 2: "b", 63: "z"}) == 64
    with pytest.raises(ValueError, match=r"label id 0 \('bg_thing'\) is used for an object class"):
        num_classes_for({0: "bg_thing", 1: "a"})
    with pytest.raises(ValueError, match="empty"):
        num_classes_for({})


def test_build_applies_config_and_never_downloads(monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    cfg = load_config("cpu_small").model
    model = build_model(cfg, 4)
    assert model.roi_heads.box_predictor.cls_score.out_features == 4
    assert model.rpn._pre_nms_top_n["training"] == 600 and model.rpn._post_nms_top_n["training"] == 300
    assert model.rpn.fg_bg_sampler.batch_size_per_image == 128
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 128
    assert model.transform.min_size == (240,) and model.transform.max_size == 320
    assert model.roi_heads.detections_per_img == 100 and model.roi_heads.score_thresh == 0.05
    assert set(ARCHITECTURES) == {"fasterrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn",
                                  "fasterrcnn_mobilenet_v3_large_320_fpn"}


def test_weights_from_file_and_predictor_mismatch(tmp_path):
    cfg = ModelConfig(name="fasterrcnn_mobilenet_v3_large_320_fpn")
    torch.manual_seed(1)
    source = build_model(cfg, 4)
    path = str(tmp_path / "w.estimator")
    save_checkpoint(make_checkpoint(model=source, epoch=1, step=1, config={}, label_map={1: "a", 2: "b", 3: "c"}),
                    path)
    torch.manual_seed(2)
    loaded = build_model(ModelConfig(name=cfg.name, weights=path), 4)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in loaded.state_dict().items())
    # another number of classes: everything but the box predictor is loaded
    other = build_model(cfg, 7)
    assert load_model_weights(other, source.state_dict(), source=path) is False
    own = other.state_dict()
    assert torch.equal(own["backbone.body.0.0.weight"], source.state_dict()["backbone.body.0.0.weight"])
    assert own["roi_heads.box_predictor.cls_score.weight"].shape[0] == 7
    with pytest.raises(ValueError, match="weights do not fit this model"):
        load_model_weights(build_model(ModelConfig(name="fasterrcnn_mobilenet_v3_large_fpn", min_size=64), 4),
                           {"backbone.body.0.0.weight": torch.zeros(1, 1, 1, 1)}, source="x")


def test_backbone_weights_from_file(tmp_path):
    from torchvision.models import mobilenet_v3_large

    torch.manual_seed(3)
    classifier = mobilenet_v3_large(weights=None)
    path = str(tmp_path / "backbone.pth")
    torch.save(classifier.state_dict(), path)
    model = build_model(ModelConfig(name="fasterrcnn_mobilenet_v3_large_320_fpn", backbone_weights=path), 4)
    assert torch.equal(model.backbone.body.state_dict()["0.0.weight"], classifier.state_dict()["features.0.0.weight"])
