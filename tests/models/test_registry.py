"""The one table of architectures: every registered one builds through `build_model` with the one builder
signature, trains a step and predicts; names and weights it does not have are errors that list what there is."""

import inspect

import pytest
import torch

from synthgap.config import ConfigError, ModelConfig, load_config
from synthgap.models import WeightsError, build_model, get_architecture, list_models, register_model

TINY = dict(min_size=64, max_size=64, rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50,
            rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=25, box_batch_size_per_image=16)


def test_the_table_holds_torchvisions_variants_small_gn_and_timm():
    assert list_models() == ["fasterrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn",
                             "fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_small_gn", "fasterrcnn_timm_fpn"]
    assert get_architecture("fasterrcnn_small_gn").weights == ()
    assert get_architecture("fasterrcnn_timm_fpn").weights == ("imagenet",)


@pytest.mark.parametrize("name", list_models())
def test_every_architecture_builds_trains_and_predicts(name):
    arch = get_architecture(name)
    signature = inspect.signature(arch.build)
    assert list(signature.parameters)[:2] == ["cfg", "num_classes"]
    assert signature.parameters["load_weights"].kind is inspect.Parameter.KEYWORD_ONLY
    if name == "fasterrcnn_timm_fpn":
        pytest.importorskip("timm")
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, **TINY), 3)
    assert model.roi_heads.box_predictor.cls_score.out_features == 3
    assert model.transform.min_size == (64,) and model.rpn._post_nms_top_n["training"] == 50
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[20.0, 10.0, 60.0, 30.0]]), "labels": torch.tensor([2])}]
    model.train()
    losses = model(images, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and all(set(o) == {"boxes", "labels", "scores"} for o in out)


@pytest.mark.parametrize("name", list_models())
def test_weights_an_architecture_does_not_have_are_refused(name):
    arch = get_architecture(name)
    if "coco" not in arch.weights:
        with pytest.raises(WeightsError, match=rf"{name} has no (COCO|pretrained) weights"):
            build_model(ModelConfig(name=name, weights="coco"), 3)
    if "imagenet" not in arch.weights:
        with pytest.raises(WeightsError, match=rf"{name} has no pretrained weights \(model.weights_backbone, "
                                               r"model.weights=coco, model.trainable_backbone_layers apply to "
                                               r"fasterrcnn_resnet50_fpn, .*fasterrcnn_timm_fpn\)"):
            build_model(ModelConfig(name=name, weights_backbone="imagenet"), 3)
    with pytest.raises(WeightsError, match=r"trainable_backbone_layers=2 freezes layers of a pretrained backbone"):
        build_model(ModelConfig(name=name, trainable_backbone_layers=2), 3)


def test_an_unknown_name_is_a_config_error_listing_the_registered_ones(tmp_path):
    """The config reads any name (the registry sits above it in the import graph); building checks it."""
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: yolo\n")
    cfg = load_config(str(path))
    with pytest.raises(ConfigError, match=r"model.name must be one of " + ", ".join(list_models()) + ", got 'yolo'"):
        build_model(cfg.model, 3)
    with pytest.raises(ConfigError, match=r"c.yaml: model.name must name an architecture"):
        path.write_text("model:\n  name: ''\n")
        load_config(str(path))


def test_register_model_refuses_a_taken_name_and_unknown_weights():
    with pytest.raises(ValueError, match="'fasterrcnn_small_gn' is already registered"):
        register_model("fasterrcnn_small_gn", get_architecture("fasterrcnn_small_gn").build)
    with pytest.raises(ValueError, match=r"unknown weights or keys \['openimages'\]"):
        register_model("fasterrcnn_other", get_architecture("fasterrcnn_small_gn").build, weights=("openimages",))
    assert "fasterrcnn_other" not in list_models()
