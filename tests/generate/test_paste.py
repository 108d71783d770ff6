import hashlib
import json
import os
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from synthgap.data import open_dataset
from synthgap.data.errors import DatasetError
from synthgap.data.solo import read_instance_map
from synthgap.errors import SynthgapError
from synthgap.generate import Compositor, PasteConfig, generate_paste, read_frame_stats
from synthgap.generate.assets import catalog_from_samples
from synthgap.generate.layout import Layout, Paste
from tests.helpers.cutouts import SNACKS, cutout_samples, snack_samples

# every randomizer off: fixed 40 px products, upright, touching, true colours, no blur/noise/distractors, grey
OFF = PasteConfig(object_height=(40.0, 40.0), rotation=0.0, max_overlap=0.0, hue=0.0, brightness=0.0, contrast=0.0,
                  blur=0.0, noise=0.0, background="plain", distractors=(0, 0))
ON = {"object_height": (25.0, 60.0), "rotation": 25.0, "max_overlap": 0.5, "hue": 90.0, "brightness": 0.5,
      "contrast": 0.5, "blur": 2.0, "noise": 0.1, "background": "procedural", "distractors": (2, 3)}
PHOTOMETRIC = ("hue", "brightness", "contrast", "blur", "noise", "background")
NEUTRAL = {"hue": lambda m: all(c[0] == 0 for c in m["hue_gain_contrast"]),
           "brightness": lambda m: all(c[1] == 1 for c in m["hue_gain_contrast"]),
           "contrast": lambda m: all(c[2] == 1 for c in m["hue_gain_contrast"]),
           "blur": lambda m: m["blur_sigma"] == 0, "noise": lambda m: m["noise_std"] == 0,
           "background": lambda m: m["background"] == "plain", "distractors": lambda m: m["distractors"] == 0}


@pytest.fixture
def catalog(tmp_path):
    samples, labels = cutout_samples(tmp_path / "packs", n=3)
    return catalog_from_samples(samples, labels, source=str(tmp_path / "packs"))


def tree_hashes(root, skip_generator=False):
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            rel = os.path.relpath(os.path.join(folder, name), root)
            if not (skip_generator and rel.startswith("generator")):
                out[rel] = hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest()
    return out


def placed(asset_rgba, x0, y0, width, height):
    """The asset's mask (alpha >= 128) placed at (x0, y0) in a (height, width) frame."""
    m = np.zeros((height, width), bool)
    a = asset_rgba[..., 3] >= 128
    h, w = a.shape
    ys, xs = slice(max(y0, 0), min(y0 + h, height)), slice(max(x0, 0), min(x0 + w, width))
    m[ys, xs] = a[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
    return m


def extent(mask):
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1]


def test_box_is_the_visible_mask_extent_after_later_pastes_and_the_frame_edge(catalog):
    W, H = 120, 80
    c = Compositor(catalog, width=W, height=H, seed=0, config=OFF)
    a, b = catalog.assets[0], catalog.assets[1]
    # A at x 10, B painted over A's right 16 columns, C half outside the right edge
    spots = [(0, 10, 12), (1, 10 + a.width - 16, 20), (2, W - catalog.assets[2].width // 2, 5)]
    pastes = [Paste(k, x + catalog.assets[k].width / 2, y + catalog.assets[k].height / 2, catalog.assets[k].width,
                    catalog.assets[k].height) for k, x, y in spots]
    rgb, inst, s = c.compose(0, Layout(pastes, [], 0.0))
    masks = [placed(catalog.assets[k].rgba, x, y, W, H) for k, x, y in spots]
    visible = [masks[0] & ~masks[1], masks[1], masks[2]]
    assert s.boxes.tolist() == [extent(v) for v in visible]
    assert s.boxes[0, 2] < a.width and s.boxes[1, 2] == b.width  # A's box lost its hidden columns
    meta = s.metadata
    assert meta["visible_pixels"] == [int(v.sum()) for v in visible]
    full = [int((catalog.assets[k].rgba[..., 3] >= 128).sum()) for k, _, _ in spots]
    assert meta["full_pixels"] == full and meta["visible_pixels"][2] < full[2]  # C is cut by the frame ...
    expected = round(1 - visible[0].sum() / masks[0].sum(), 4)
    assert meta["occluded_fraction"] == [expected, 0.0, 0.0] and 0.1 < expected < 0.6  # ... which is not occlusion
    for i, v in enumerate(visible, 1):
        np.testing.assert_array_equal(inst == i, v)
    assert s.labels.tolist() == [a.label, b.label, catalog.assets[2].label]
    # randomizers off: pasted pixels are the cut-out's own, the rest is the plain grey
    np.testing.assert_array_equal(rgb[visible[1]], b.rgba[..., :3][b.rgba[..., 3] >= 128])
    assert (rgb[~(masks[0] | masks[1] | masks[2])] == 128).all()


def test_products_hidden_below_min_visible_are_dropped_and_erased(catalog):
    c = Compositor(catalog, width=100, height=80, seed=0, config=OFF)
    a = catalog.assets[0]
    under = Paste(0, 30 + a.width / 2, 10 + a.height / 2, a.width, a.height)
    over = Paste(1, 30 + 4 + a.width / 2, 10 + a.height / 2, a.width, a.height)  # hides all but 4 columns of A
    rgb, inst, s = c.compose(0, Layout([under, over], [], 0.0))
    assert len(s) == 1 and s.metadata["dropped_instances"] == 1 and s.metadata["placed_objects"] == 2
    assert set(np.unique(inst).tolist()) == {0, 2}
    keep = Compositor(catalog, width=100, height=80, seed=0, config=replace(OFF, min_visible=0.0))
    assert len(keep.compose(0, Layout([under, over], [], 0.0))[2]) == 2


def test_shelf_products_stand_side_by_side_touching_when_overlap_is_off(catalog):
    c = Compositor(catalog, width=160, height=120, seed=3, config=OFF)
    layout = c.layout(0)
    rows = {}
    for p in layout.pastes:
        assert p.height == 40 and p.angle == 0
        rows.setdefault(p.cy + p.height / 2, []).append(p)
    assert len(rows) >= 2 and sorted(rows) == sorted(layout.shelf_tops)
    for row in rows.values():
        row.sort(key=lambda p: p.cx)
        for left, right in zip(row, row[1:]):
            assert right.cx - right.width / 2 == pytest.approx(left.cx + left.width / 2)
        assert row[0].cx - row[0].width / 2 <= 0 and row[-1].cx + row[-1].width / 2 >= 160  # rows fill the width
    over = Compositor(catalog, width=160, height=120, seed=3, config=replace(OFF, max_overlap=0.3)).layout(0)
    assert len(over.pastes) > len(layout.pastes)  # overlapping neighbours: more products per row


@pytest.mark.parametrize("name", list(ON))
def test_every_randomizer_changes_the_output_when_on_and_nothing_when_off(catalog, name):
    size = dict(width=128, height=96, seed=4)
    off, on = Compositor(catalog, config=OFF, **size), Compositor(catalog, config=replace(OFF, **{name: ON[name]}), **size)
    all_on = replace(OFF, **ON)
    all_but = Compositor(catalog, config=replace(all_on, **{name: getattr(OFF, name)}), **size)
    full = Compositor(catalog, config=all_on, **size)
    changed = False
    for k in range(3):
        rgb0, inst0, s0 = off.render(k)
        rgb1, inst1, s1 = on.render(k)
        changed |= not np.array_equal(rgb0, rgb1)
        if name in PHOTOMETRIC:  # colours only: same products, same boxes, same instance map
            np.testing.assert_array_equal(s0.boxes, s1.boxes)
            np.testing.assert_array_equal(inst0, inst1)
        # switched off inside the all-on config: its value is neutral, and the other randomizers draw as before
        m = all_but.render(k)[2].metadata
        if name in NEUTRAL:
            assert NEUTRAL[name](m) and not NEUTRAL[name](full.render(k)[2].metadata)
            assert full.layout(k) == all_but.layout(k)
        if name == "object_height":
            assert {p.height for p in all_but.layout(k).pastes} == {40.0}
        if name == "rotation":
            assert {p.angle for p in all_but.layout(k).pastes} == {0.0}
            assert [(p.cx, p.cy, p.height) for p in all_but.layout(k).pastes] == \
                [(p.cx, p.cy, p.height) for p in full.layout(k).pastes]  # shelf positions do not depend on angles
    assert changed, name


def test_background_folder_gives_random_crops_of_its_images(tmp_path, catalog):
    folder = tmp_path / "bg"
    folder.mkdir()
    colours = {"red.png": (200, 10, 10), "blue.jpg": (10, 10, 200)}
    for name, col in colours.items():
        Image.new("RGB", (300, 200), col).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    empty = replace(OFF, layout="free", objects_per_frame=(0, 0), background=str(folder))
    c = Compositor(catalog, width=96, height=64, seed=0, config=empty)
    seen = set()
    for k in range(6):
        rgb, inst, s = c.render(k)
        name = s.metadata["background"]
        seen.add(name)
        assert rgb.shape == (64, 96, 3) and np.abs(rgb.astype(int) - colours[name]).max() <= 3  # JPEG rounding
    assert seen == set(colours)
    (folder / "red.png").unlink()
    (folder / "blue.jpg").unlink()
    with pytest.raises(DatasetError, match="no image"):
        Compositor(catalog, config=replace(OFF, background=str(folder)))


def test_bad_paste_settings_are_clear_errors(catalog):
    for bad, message in [(dict(layout="pyramid"), "layout"), (dict(hue=-1.0), "hue"), (dict(object_height=(0, 9)),
                         "object_height"), (dict(max_overlap=0.95), "max_overlap"), (dict(distractors=(3, 1)),
                         "distractors"), (dict(background="/no/such/folder"), "background folder")]:
        with pytest.raises(SynthgapError, match=message):  # DatasetError (a SynthgapError) for the folder
            Compositor(catalog, config=PasteConfig(**bad))


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path, catalog):
    args = dict(format="solo", width=96, height=80, progress=False)
    generate_paste(str(tmp_path / "a"), 3, catalog, seed=1, **args)
    generate_paste(str(tmp_path / "b"), 3, catalog, seed=1, **args)
    ha = tree_hashes(tmp_path / "a")
    assert len(ha) > 8 and ha == tree_hashes(tmp_path / "b")
    generate_paste(str(tmp_path / "c"), 3, catalog, seed=2, **args)
    assert tree_hashes(tmp_path / "c") != ha


@pytest.mark.parametrize("format", ["solo", "perception", "coco"])
def test_output_reads_back_with_the_rendered_boxes_and_shards_equal_the_unsharded_run(tmp_path, catalog, format):
    args = dict(format=format, width=96, height=80, seed=5, progress=False,
                config=PasteConfig(layout="table", objects_per_frame=(3, 5), object_height=(20.0, 40.0)))
    whole = generate_paste(str(tmp_path / "all"), 5, catalog, **args)
    assert whole["frames_written"] == 5 and whole["boxes"] > 0 and whole["catalog"]["assets"] == 3
    ds = open_dataset(str(tmp_path / "all"))
    assert ds.format == format and len(ds) == 5 and ds.label_map == {1: "cola", 2: "chips", 3: "soup"}
    ref = Compositor(catalog, width=96, height=80, seed=5, config=args["config"])
    for s in ds:
        k = int(s.metadata["sequence"]) if format == "solo" else int(os.path.basename(s.image)[:-4].split("_")[-1])
        _, inst, truth = ref.render(k)
        np.testing.assert_array_equal(s.boxes, truth.boxes)
        np.testing.assert_array_equal(s.labels, truth.labels)
        if format != "coco":
            np.testing.assert_array_equal(read_instance_map(s.segmentation["instance"]), inst)
    for i in range(2):
        part = generate_paste(str(tmp_path / "shards"), 5, catalog, shard=(i, 2), **args)
        assert part["shards_done"] == list(range(i + 1))
    if format == "perception":  # chunk files are named by their first frame: same frames, another file split
        key = lambda d: sorted((os.path.basename(s.image), s.boxes.tolist()) for s in d)
        assert key(open_dataset(str(tmp_path / "shards"))) == key(ds)
    else:
        assert tree_hashes(tmp_path / "shards", True) == tree_hashes(tmp_path / "all", True)
    assert read_frame_stats(str(tmp_path / "shards")) == read_frame_stats(str(tmp_path / "all"))
    plan = json.loads((tmp_path / "shards" / "generator" / "generation.shard-1-of-2.json").read_text())
    assert plan["style"] == "paste" and plan["assets"]["digest"] == catalog.digest()


def test_shards_of_another_catalog_are_refused_in_one_folder(tmp_path, catalog):
    out = str(tmp_path / "d")
    generate_paste(out, 4, catalog, shard=(0, 2), width=64, height=64, progress=False)
    other = catalog_from_samples(*cutout_samples(tmp_path / "other", n=3, seed=9))
    with pytest.raises(ValueError, match="another generate plan"):
        generate_paste(out, 4, other, shard=(1, 2), width=64, height=64, progress=False)


def test_real_packshots_on_a_shelf(tmp_path):
    if not SNACKS.exists():
        pytest.skip(f"the real snacks catalog {SNACKS} is absent (it lives in ../shared/real beside the repo)")
    samples, labels = snack_samples(3)
    catalog = catalog_from_samples(samples, labels, source=str(SNACKS), single_class="product")
    assert len(catalog) == 3 and all(a.height > 300 for a in catalog.assets)
    summary = generate_paste(str(tmp_path / "shelf"), 2, catalog, format="coco", width=320, height=320, seed=0,
                             progress=False, config=PasteConfig(object_height=(50.0, 90.0)))
    assert summary["boxes"] >= 10
    pycocotools_coco = pytest.importorskip("pycocotools.coco")
    coco = pycocotools_coco.COCO(str(tmp_path / "shelf" / "annotations.json"))
    assert sorted(coco.getImgIds()) == [0, 1] and [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["product"]
    for s in open_dataset(str(tmp_path / "shelf")):
        inst = read_instance_map(str(tmp_path / "shelf" / "instances" / os.path.basename(s.image)))
        ids = [i for i in np.unique(inst).tolist() if i]
        assert len(ids) == len(s)
        assert sorted(s.boxes.tolist()) == sorted(extent(inst == i) for i in ids)
        assert (s.boxes[:, 3] <= 90).all() and (s.boxes[:, 3] >= 10).all()
