import math

import numpy as np
import pytest

from synthgap.generate.appearance import product_appearance, shape_for
from synthgap.generate.render import Renderer
from synthgap.generate.scene import SceneConfig, curriculum_scale, rotated_extent, synthetic_layout

CLASSES = ["cereal_cheerios_honeynut", "drink_greentea_itoen", "chips_sourcream_lays", "soup_tomato_pacific",
           "cracker_triscuit_avocado"]


@pytest.fixture(scope="module")
def renderer():
    return Renderer(CLASSES, width=200, height=150, seed=3)


def boxes_from_instance_map(inst):
    out = {}
    for i in np.unique(inst):
        if i == 0:
            continue
        ys, xs = np.nonzero(inst == i)
        out[int(i)] = ([xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1], len(xs))
    return out


def test_boxes_are_the_visible_pixels_of_the_instance_map(renderer):
    total_boxes = 0
    for k in range(6):
        rgb, inst, s = renderer.render(k, 6)
        assert rgb.shape == (150, 200, 3) and rgb.dtype == np.uint8
        assert inst.shape == (150, 200) and inst.dtype == np.uint16
        truth = boxes_from_instance_map(inst)
        assert sorted(truth) == sorted(s.instance_ids)  # dropped instances are erased from the map
        for box, iid, n in zip(s.boxes, s.instance_ids, s.metadata["visible_pixels"]):
            assert list(box) == truth[iid][0]
            assert n == truth[iid][1]
            assert n >= 64 and min(box[2:]) >= 4
        assert set(s.labels.tolist()) <= set(range(1, len(CLASSES) + 1))
        assert np.array_equal(s.areas, s.metadata["visible_pixels"])
        assert all(v <= f for v, f in zip(s.metadata["visible_pixels"], s.metadata["full_pixels"]))
        total_boxes += len(s)
    assert total_boxes > 10


def test_min_box_threshold_drops_small_instances():
    r = Renderer(CLASSES, width=200, height=150, seed=3, config=SceneConfig(min_box_pixels=3000))
    dropped = 0
    for k in range(4):
        _, inst, s = r.render(k, 4)
        assert all(n >= 3000 for n in s.metadata["visible_pixels"])
        assert sorted(boxes_from_instance_map(inst)) == sorted(s.instance_ids)
        dropped += s.metadata["dropped_instances"]
    assert dropped > 0


def test_frame_depends_only_on_seed_index_and_total(renderer):
    a = renderer.render(4, 10)
    other = Renderer(CLASSES, width=200, height=150, seed=3)
    other.render(1, 10)  # rendering other frames first changes nothing
    b = other.render(4, 10)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and np.array_equal(a[2].boxes, b[2].boxes)
    c = Renderer(CLASSES, width=200, height=150, seed=4).render(4, 10)
    assert not np.array_equal(a[0], c[0])


def test_scale_curriculum_goes_from_one_to_half_in_steps():
    cfg = SceneConfig()
    scales = [curriculum_scale(cfg, k, 100) for k in range(100)]
    assert scales[0] == 1.0 and scales[-1] == 0.5
    assert all(a >= b for a, b in zip(scales, scales[1:]))
    assert sorted(set(scales), reverse=True) == pytest.approx([1.0, 5 / 6, 2 / 3, 0.5])


def test_layout_respects_crop_and_overlap_limits():
    cfg = SceneConfig(objects_per_frame=(30, 30))
    shapes = [(0.7, 1.0), (0.4, 1.1)]
    labels = []
    for k in range(20):
        rng = np.random.default_rng(k)
        placed = synthetic_layout(rng, cfg, shapes, [(0.8, 0.9)], 320, 240, 0.6)
        assert 0 < len(placed) <= 30
        boxes = []
        for p in placed:
            ew, eh = rotated_extent(p.width + abs(p.shear) * p.height, p.height, p.roll)
            b = (p.cx - ew / 2, p.cy - eh / 2, p.cx + ew / 2, p.cy + eh / 2)
            inside = (min(b[2], 320) - max(b[0], 0)) * (min(b[3], 240) - max(b[1], 0))
            assert inside >= 0.5 * ew * eh - 1e-6  # at most half outside
            for o in boxes:
                inter = max(0, min(b[2], o[2]) - max(b[0], o[0])) * max(0, min(b[3], o[3]) - max(b[1], o[1]))
                smaller = min(ew * eh, (o[2] - o[0]) * (o[3] - o[1]))
                assert inter <= 0.3 * smaller + 1e-6
            boxes.append(b)
        labels += [p.label for p in placed]
    assert 0.08 < np.mean(np.array(labels) == 0) < 0.35  # distractors: p = 0.2 per slot


def test_occluders_cover_about_ten_to_thirty_percent(renderer):
    cov = []
    for k in range(6):
        cov += renderer.render(k, 6)[2].metadata["occluder_coverage"]
    cov = np.array(cov)
    assert len(cov) > 10
    assert 0.1 <= np.median(cov) <= 0.3
    assert np.mean((cov >= 0.05) & (cov <= 0.4)) > 0.8


def test_occluders_can_be_switched_off():
    r = Renderer(CLASSES, width=200, height=150, seed=3, config=SceneConfig(occluder_prob=0.0))
    _, inst, s = r.render(0, 2)
    assert len(s) > 0 and s.metadata["occluder_coverage"] == [0.0] * len(s)


def test_target_style_is_a_different_domain_with_the_same_products():
    syn = product_appearance("cereal_cheerios_honeynut", "synthetic")
    tgt = product_appearance("cereal_cheerios_honeynut", "target")
    assert (syn.shape, syn.aspect, syn.size) == (tgt.shape, tgt.aspect, tgt.size)
    assert not np.array_equal(syn.sprite(0, 0), tgt.sprite(0, 0))
    assert syn.sprite(0, 0).shape[0] == 192 and syn.sprite(2, 1).shape[0] == 48
    assert shape_for("drink_greentea_itoen") == "bottle" and shape_for("chips_sourcream_lays") == "pouch"
    r = Renderer(CLASSES, width=200, height=150, seed=3, style="target")
    rgb, inst, s = r.render(0, 2)
    assert 70 <= s.metadata["jpeg_quality"] <= 92 and len(s) > 0
    assert sorted(boxes_from_instance_map(inst)) == sorted(s.instance_ids)


def test_bad_renderer_arguments():
    with pytest.raises(ValueError, match="style"):
        Renderer(CLASSES, style="photo")
    with pytest.raises(ValueError, match="objects_per_frame"):
        SceneConfig(objects_per_frame=(5, 2))
    assert math.isclose(rotated_extent(2, 1, math.pi / 2)[0], 1)
