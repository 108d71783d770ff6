import collections
import hashlib
import os
import re

import pytest
import torch
from torchvision.models import MobileNet_V3_Large_Weights, mobilenet_v3_large
from torchvision.models.detection import FasterRCNN_MobileNet_V3_Large_320_FPN_Weights
from torchvision.ops import FrozenBatchNorm2d

from synthgap.models.checkpoint import make_checkpoint, save_checkpoint
from synthgap.config import ModelConfig, load_config
from synthgap.models import (WeightsError, build_model, get_architecture, list_models, load_model_weights,
                             num_classes_for)

MOBILE = "fasterrcnn_mobilenet_v3_large_320_fpn"
# torchvision's published weights for MOBILE: (ImageNet classification backbone, COCO detector)
MOBILE_WEIGHTS = (MobileNet_V3_Large_Weights.IMAGENET1K_V1, FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1)


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
    assert model.rpn._pre_nms_top_n["testing"] == 300 and model.rpn._post_nms_top_n["testing"] == 150
    assert model.rpn.fg_bg_sampler.batch_size_per_image == 64
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 32
    assert model.roi_heads.fg_bg_sampler.positive_fraction == 0.5
    assert model.transform.min_size == (168,) and model.transform.max_size == 224
    assert model.roi_heads.detections_per_img == 100 and model.roi_heads.score_thresh == 0.05
    assert {"fasterrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn",
            "fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_small_gn"} <= set(list_models())
    assert get_architecture(MOBILE).weights == ("imagenet", "coco")


def test_small_gn_stage_depths():
    """`backbone_depths` sets the stride-1 convs after each stage's stride-2 conv (default one each); the
    output stride stays 2**stages. A count per width is required."""
    from synthgap.config import ConfigError

    def convs(model):
        return [m for m in model.backbone.body if isinstance(m, torch.nn.Conv2d)]

    base = load_config("cpu_small").model
    deeper = load_config("cpu_small", ["model.backbone_depths=[1,1,3]"]).model
    plain, deep = convs(build_model(base, 4)), convs(build_model(deeper, 4))
    assert len(plain) == 6 and len(deep) == 8 and [c.stride for c in deep].count((2, 2)) == 3
    x = torch.zeros(1, 3, 64, 96)
    assert build_model(deeper, 4).backbone(x).shape[-2:] == (8, 12)  # stride 8 either way
    with pytest.raises(ConfigError, match="backbone_depths needs one count"):
        load_config("cpu_small", ["model.backbone_depths=[1,3]"])


def test_weights_from_file_and_predictor_mismatch(tmp_path):
    cfg = ModelConfig(name=MOBILE)
    torch.manual_seed(1)
    source = build_model(cfg, 4)
    path = str(tmp_path / "w.estimator")
    save_checkpoint(make_checkpoint(model=source, epoch=1, step=1, config={}, label_map={1: "a", 2: "b", 3: "c"}),
                    path)
    torch.manual_seed(2)
    loaded = build_model(ModelConfig(name=cfg.name, weights=path), 4)
    # a weights file makes torchvision's pretrained layout: FrozenBatchNorm2d (it drops num_batches_tracked)
    assert isinstance(loaded.backbone.body["0"][1], FrozenBatchNorm2d)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in loaded.state_dict().items())
    # another number of classes: everything but the box predictor is loaded
    other = build_model(cfg, 7)
    assert load_model_weights(other, source.state_dict(), source=path) is False
    own = other.state_dict()
    assert torch.equal(own["backbone.body.0.0.weight"], source.state_dict()["backbone.body.0.0.weight"])
    assert own["roi_heads.box_predictor.cls_score.weight"].shape[0] == 7
    with pytest.raises(WeightsError, match="weights do not fit this model"):
        load_model_weights(build_model(ModelConfig(name="fasterrcnn_mobilenet_v3_large_fpn", min_size=64), 4),
                           {"backbone.body.0.0.weight": torch.zeros(1, 1, 1, 1)}, source="x")
    with pytest.raises(WeightsError, match=r"x: weights lack \d+ tensors of this model"):
        load_model_weights(build_model(cfg, 4), {"backbone.body.0.0.weight": own["backbone.body.0.0.weight"]},
                           source="x")
    extra = dict(source.state_dict(), **{"backbone.extra.weight": torch.zeros(2)})
    with pytest.raises(WeightsError, match="1 tensors this model does not have, e.g. backbone.extra.weight"):
        load_model_weights(build_model(cfg, 4), extra, source="x")


# ---------------------------------------------------------------- torchvision's pretrained weights

def _stand_in(module: torch.nn.Module, offset: float = 0.0) -> collections.OrderedDict:
    """A state_dict of ``module``'s shapes where every tensor holds one value, distinct per tensor (its
    position + 1 + offset; positive, so BatchNorm variances are valid). Stored as a broadcast scalar,
    so the file is a few kB whatever the model's size."""
    out = collections.OrderedDict()
    for i, (key, value) in enumerate(module.state_dict().items()):
        if value.dtype == torch.long:
            out[key] = torch.tensor(0)
        else:
            out[key] = torch.tensor(i + 1 + offset, dtype=value.dtype).expand(value.shape)
    return out


def _hub_cache(torch_home) -> str:
    path = os.path.join(str(torch_home), "hub", "checkpoints")
    os.makedirs(path, exist_ok=True)
    return path


def _cache_file(torch_home, weights, state) -> str:
    """``state`` saved in torch.hub's cache under torchvision's file name for ``weights``."""
    path = os.path.join(_hub_cache(torch_home), os.path.basename(weights.url))
    torch.save(state, path)
    return path


def _frozen_names(model) -> set[str]:
    return {n for n, p in model.named_parameters() if not p.requires_grad}


def test_imagenet_backbone_comes_from_the_hub_cache_the_torchvision_way(torch_home, tmp_path):
    imagenet = MOBILE_WEIGHTS[0]
    stand_in = _stand_in(mobilenet_v3_large(weights=None, norm_layer=FrozenBatchNorm2d))
    _cache_file(torch_home, imagenet, stand_in)
    model = build_model(ModelConfig(name=MOBILE, weights_backbone="imagenet"), 4)
    body = model.backbone.body
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in body.modules()) == 46  # every norm layer of the body
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    # the weights were used: body "N" is the classifier's features.N
    for key, value in body.state_dict().items():
        assert torch.equal(value, stand_in[f"features.{key}"]), key
    # torchvision's default: the last 3 of 6 stages train; the FPN and heads train
    frozen = _frozen_names(model)
    assert "backbone.body.0.0.weight" in frozen and "backbone.body.16.0.weight" not in frozen
    assert not any(n.startswith(("backbone.fpn", "rpn", "roi_heads")) for n in frozen)
    # trainable_backbone_layers is honoured (torchvision ignores it without pretrained weights)
    none_trainable = build_model(ModelConfig(name=MOBILE, weights_backbone="imagenet", trainable_backbone_layers=0), 4)
    assert all(n in _frozen_names(none_trainable) for n, _ in none_trainable.backbone.body.named_parameters(
        prefix="backbone.body"))
    all_trainable = build_model(ModelConfig(name=MOBILE, weights_backbone="imagenet", trainable_backbone_layers=6), 4)
    assert not _frozen_names(all_trainable)
    with pytest.raises(WeightsError, match="trainable_backbone_layers=2 freezes layers of a pretrained backbone"):
        build_model(ModelConfig(name=MOBILE, trainable_backbone_layers=2), 4)

    # the same file given as a path loads the same way: same layout, same frozen layers, same weights
    path = tmp_path / "backbone.pth"
    torch.save(stand_in, path)
    from_file = build_model(ModelConfig(name=MOBILE, weights_backbone=str(path)), 4)
    assert _frozen_names(from_file) == frozen
    assert [(n, type(m)) for n, m in from_file.named_modules()] == [(n, type(m)) for n, m in model.named_modules()]
    assert all(torch.equal(v, body.state_dict()[k]) for k, v in from_file.backbone.body.state_dict().items())
    # and load_weights=False builds that layout without reading anything
    os.remove(os.path.join(_hub_cache(torch_home), os.path.basename(imagenet.url)))
    layout = build_model(ModelConfig(name=MOBILE, weights_backbone="imagenet"), 4, load_weights=False)
    assert _frozen_names(layout) == frozen and layout.state_dict().keys() == model.state_dict().keys()
    # a backbone file of another architecture is refused by name
    with pytest.raises(WeightsError, match="not a MobileNetV3 backbone's weights"):
        torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "resnet.pth")
        build_model(ModelConfig(name=MOBILE, weights_backbone=str(tmp_path / "resnet.pth")), 4)


def test_offline_and_not_cached_names_the_file_the_url_and_the_cache_path(torch_home):
    imagenet, coco = MOBILE_WEIGHTS
    for cfg, weights in ((ModelConfig(name=MOBILE, weights_backbone="imagenet"), imagenet),
                         (ModelConfig(name=MOBILE, weights="coco"), coco)):
        name = os.path.basename(weights.url)
        with pytest.raises(WeightsError) as err:
            build_model(cfg, 4)
        text = str(err.value)
        assert f"cannot download {name} from {weights.url}" in text
        assert f"copy that file to {os.path.join(str(torch_home), 'hub', 'checkpoints', name)}" in text
    assert not os.listdir(_hub_cache(torch_home))


def test_coco_weights_replace_the_box_predictor(torch_home):
    coco = MOBILE_WEIGHTS[1]
    reference = build_model(ModelConfig(name=MOBILE, weights_backbone="imagenet"), 91, load_weights=False)
    stand_in = _stand_in(reference)
    _cache_file(torch_home, coco, stand_in)
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=MOBILE, weights="coco", trainable_backbone_layers=1), 5)
    assert model.roi_heads.box_predictor.cls_score.out_features == 5
    assert model.roi_heads.box_predictor.bbox_pred.out_features == 20
    state = model.state_dict()
    for key in ("backbone.body.0.0.weight", "backbone.fpn.inner_blocks.0.0.weight", "rpn.head.conv.0.0.weight",
                "roi_heads.box_head.fc7.weight"):
        assert torch.equal(state[key], stand_in[key].expand_as(state[key])), key
    assert not torch.equal(state["roi_heads.box_predictor.cls_score.bias"][:5],
                           stand_in["roi_heads.box_predictor.cls_score.bias"][:5])
    assert isinstance(model.backbone.body["1"].block[0][1], FrozenBatchNorm2d)
    trainable_body = {n for n, p in model.backbone.body.named_parameters() if p.requires_grad}
    assert trainable_body and all(n.startswith("16.") for n in trainable_body)


# ---------------------------------------------------------------- http(s) weights through torch.hub's cache

def test_http_weights_are_downloaded_once_into_the_hub_cache_and_hash_checked(torch_home, http_folder):
    www, url, requests = http_folder
    stand_in = _stand_in(mobilenet_v3_large(weights=None, norm_layer=FrozenBatchNorm2d), offset=0.5)
    torch.save(stand_in, www / "tmp.pth")
    digest = hashlib.sha256((www / "tmp.pth").read_bytes()).hexdigest()
    good = f"mobilenet_v3_large-{digest[:8]}.pth"
    (www / "tmp.pth").rename(www / good)
    cfg = ModelConfig(name=MOBILE, weights_backbone=f"{url}/{good}")
    model = build_model(cfg, 4)
    assert requests == [f"/{good}"]
    cached = os.path.join(_hub_cache(torch_home), good)
    assert os.path.exists(cached) and open(cached, "rb").read() == (www / good).read_bytes()
    assert torch.equal(model.backbone.body.state_dict()["0.0.weight"], stand_in["features.0.0.weight"])
    assert isinstance(model.backbone.body["0"][1], FrozenBatchNorm2d)
    build_model(cfg, 4)  # from the cache: no second request
    assert requests == [f"/{good}"]

    # a file whose content does not match the sha256 prefix in its name is refused and not cached
    bad = f"mobilenet_v3_large-{'0' * 8 if not digest.startswith('0' * 8) else '1' * 8}.pth"
    (www / bad).write_bytes((www / good).read_bytes())
    with pytest.raises(WeightsError, match=re.escape(f"does not match the sha256 prefix in its name '{bad}'")):
        build_model(ModelConfig(name=MOBILE, weights_backbone=f"{url}/{bad}"), 4)
    assert sorted(os.listdir(_hub_cache(torch_home))) == [good]


# ---------------------------------------------------------------- datasetinsights' published models

def torchvision05_state(state) -> collections.OrderedDict:
    """A state_dict of today's layout as torchvision 0.5 wrote it (datasetinsights' FasterRCNN.estimator files):
    FrozenBatchNorm2d without num_batches_tracked, FPN convs ``inner_blocks.N.weight`` (now
    ``inner_blocks.N.0.weight``), the RPN head's ``conv.weight`` (now ``conv.0.0.weight``), every module at
    layout version 1 in ``_metadata``."""
    old = collections.OrderedDict()
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        key = re.sub(r"^(backbone\.fpn\.(inner|layer)_blocks\.\d+)\.0\.", r"\1.", key)
        key = re.sub(r"^rpn\.head\.conv\.0\.0\.", "rpn.head.conv.", key)
        old[key] = value
    modules = {""} | {k.rsplit(".", 1)[0] for k in old} | {
        ".".join(k.split(".")[:i]) for k in old for i in range(1, k.count(".") + 1)}
    old._metadata = collections.OrderedDict((m, {"version": 1}) for m in sorted(modules))
    return old


def test_a_torchvision_05_layout_state_dict_loads(tmp_path):
    """The key check runs after torchvision's own version-aware migration (it refused 71 tensors before)."""
    cfg = ModelConfig(name=MOBILE, weights_backbone="imagenet")
    torch.manual_seed(3)
    source = build_model(cfg, 4, load_weights=False)
    old = torchvision05_state(source.state_dict())
    assert "backbone.fpn.inner_blocks.0.weight" in old and "rpn.head.conv.weight" in old
    path = tmp_path / "FasterRCNN.estimator"
    torch.save({"model": old, "config": {"backbone": "mobilenet"}}, path)
    target = build_model(ModelConfig(name=MOBILE, weights=str(path)), 4)
    expected = source.state_dict()
    assert target.state_dict().keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in target.state_dict().items())


@pytest.mark.parametrize("norm, layer", [("group", torch.nn.GroupNorm), ("batch", torch.nn.BatchNorm2d),
                                         ("none", torch.nn.Identity)])
def test_small_gn_builds_from_its_config_fields(norm, layer):
    """fasterrcnn_small_gn: stride 2**stages, the configured anchors (px) and norm, trains and predicts."""
    cfg = ModelConfig(name="fasterrcnn_small_gn", min_size=96, max_size=128, backbone_widths=[8, 16, 16],
                      backbone_norm=norm, anchor_sizes=[12, 24], anchor_aspect_ratios=[1.0, 2.0], box_head_width=32)
    torch.manual_seed(0)
    model = build_model(cfg, 4)
    assert any(isinstance(m, layer) for m in model.backbone.body) and model.backbone.out_channels == 16
    assert model.backbone(torch.zeros(1, 3, 96, 128)).shape == (1, 16, 12, 16)  # stride 8
    assert model.rpn.anchor_generator.sizes == ((12, 24),) and model.rpn.anchor_generator.aspect_ratios == ((1.0, 2.0),)
    assert model.rpn.head.cls_logits.out_channels == 4  # 2 sizes x 2 ratios per position
    assert model.roi_heads.box_predictor.cls_score.out_features == 4
    images = [torch.rand(3, 96, 128), torch.rand(3, 96, 128)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 40.0, 60.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[50.0, 10.0, 90.0, 30.0]]), "labels": torch.tensor([3])}]
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        assert set(model(images)[0]) == {"boxes", "labels", "scores"}
