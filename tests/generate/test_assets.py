import json

import numpy as np
import pytest
from PIL import Image

from synthgap.data import Sample
from synthgap.data.errors import DatasetError
from synthgap.data.masks import BitmapMask, RLEMask
from synthgap.generate.assets import PNG_FOLDER, catalog_from_png_folder, catalog_from_samples, cut_out, load_catalog
from tests.helpers.cutouts import LABELS, cutout_samples, octagon, png_catalog


def test_cut_outs_are_cropped_to_the_mask_with_the_image_pixels_inside(tmp_path):
    samples, labels = cutout_samples(tmp_path, n=3)
    cat = catalog_from_samples(samples, labels, source="packs")
    assert len(cat) == 3 and cat.class_names == ("cola", "chips", "soup")
    for s, asset in zip(samples, cat.assets):
        img = np.asarray(Image.open(s.image).convert("RGB"))
        mask = s.masks[0].to_array(s.width, s.height)
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert asset.rgba.shape == (rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1, 4)
        crop = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        np.testing.assert_array_equal(asset.rgba[..., 3] == 255, mask[crop])
        np.testing.assert_array_equal(asset.rgba[..., :3][mask[crop]], img[crop][mask[crop]])
        assert not asset.rgba[..., :3][~mask[crop]].any()  # the white packshot background is not kept
        assert cat.class_names[asset.label - 1] == labels[int(s.labels[0])]


def test_bitmap_and_rle_masks_cut_the_same_pixels():
    rgb = np.arange(12 * 10 * 3, dtype=np.uint8).reshape(10, 12, 3)
    mask = np.zeros((10, 12), bool)
    mask[2:7, 3:9] = True
    mask[2, 3] = False
    buf = __import__("io").BytesIO()
    Image.fromarray(mask[2:7, 3:9].astype(np.uint8) * 255).save(buf, format="PNG")
    bitmap = BitmapMask(buf.getvalue(), (3, 2))
    flat = mask.T.ravel()  # column-major runs, starting with background
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]]))
    rle = RLEMask(tuple(int(r) for r in runs), (10, 12))
    a = cut_out(rgb, bitmap.to_array(12, 10))
    b = cut_out(rgb, rle.to_array(12, 10))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (5, 6, 4) and a[0, 0, 3] == 0 and a[1, 1, 3] == 255
    np.testing.assert_array_equal(a[1, 1, :3], rgb[3, 4])
    assert cut_out(rgb, np.zeros((10, 12), bool)) is None


def test_classes_keep_id_order_and_single_class_merges_them(tmp_path):
    samples, labels = cutout_samples(tmp_path, n=2)  # labels 1 and 2: "soup" (3) has no cut-out
    cat = catalog_from_samples(samples, labels)
    assert cat.class_names == ("cola", "chips") and [a.label for a in cat.assets] == [1, 2]
    one = catalog_from_samples(samples, labels, single_class="product")
    assert one.class_names == ("product",) and {a.label for a in one.assets} == {1}
    assert one.digest() != cat.digest() and cat.digest() == catalog_from_samples(samples, labels).digest()
    desc = cat.describe()
    assert desc["assets"] == 2 and desc["assets_per_class"] == [1, 1] and desc["classes"] == ["cola", "chips"]


def test_boxes_without_masks_are_skipped_and_counted(tmp_path):
    samples, labels = cutout_samples(tmp_path, n=2)
    no_mask = Sample(image=samples[0].image, width=samples[0].width, height=samples[0].height,
                     boxes=[[1, 1, 5, 5], [2, 2, 5, 5]], labels=[1, 2], masks=(None, octagon(2, 2, 20, 20)))
    cat = catalog_from_samples([*samples, no_mask], labels)
    assert len(cat) == 3 and len(cat.skipped) == 1 and "no mask" in cat.skipped[0]


def test_a_catalog_without_masks_or_images_is_a_clear_error(tmp_path):
    samples, labels = cutout_samples(tmp_path, n=2)
    bare = [Sample(image=s.image, width=s.width, height=s.height, boxes=s.boxes, labels=s.labels) for s in samples]
    with pytest.raises(DatasetError, match="no box of the 2 images carries a mask") as e:
        catalog_from_samples(bare, labels, source="shelf-photos")
    assert e.value.file == "shelf-photos" and e.value.field == "masks"
    with pytest.raises(DatasetError, match="no images"):
        catalog_from_samples([], labels, source="empty")
    wrong = Sample(image=samples[0].image, width=99, height=77, boxes=samples[0].boxes, labels=[1],
                   masks=samples[0].masks)
    with pytest.raises(DatasetError, match="annotated as 99x77") as e:
        catalog_from_samples([wrong], labels)
    assert e.value.file == samples[0].image and e.value.field == "size"


def test_png_folder_catalog_keeps_soft_alpha_and_classes_from_subfolders(tmp_path):
    root = png_catalog(tmp_path / "cutouts", per_class=2)
    cat = catalog_from_png_folder(root)
    assert cat.class_names == tuple(sorted(LABELS.values())) and len(cat) == 6 and cat.format == PNG_FOLDER
    src = np.asarray(Image.open(tmp_path / "cutouts" / "chips" / "0.png"))
    a = cat.assets[0]
    assert cat.class_names[a.label - 1] == "chips"
    assert a.rgba.shape == src.shape  # the soft edge reaches the image border: no crop
    assert set(np.unique(a.rgba[..., 3])) == {0, 100, 255}
    assert load_catalog(root).digest() == cat.digest()  # no reader claims the folder: png-folder detected
    assert load_catalog(root, PNG_FOLDER, single_class="product").class_names == ("product",)


def test_png_folder_errors_name_the_file(tmp_path):
    root = tmp_path / "cutouts"
    (root / "cola").mkdir(parents=True)
    Image.new("RGB", (8, 8), (255, 0, 0)).save(root / "cola" / "flat.png")
    with pytest.raises(DatasetError, match="no alpha channel") as e:
        catalog_from_png_folder(str(root))
    assert e.value.file.endswith("flat.png") and e.value.field == "alpha"
    (root / "cola" / "flat.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="cannot be decoded"):
        catalog_from_png_folder(str(root))
    (root / "cola" / "flat.png").unlink()
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(root / "cola" / "clear.png")
    with pytest.raises(DatasetError, match="no RGBA PNG cut-out"):
        catalog_from_png_folder(str(root))
    with pytest.raises(DatasetError, match="not found"):
        catalog_from_png_folder(str(tmp_path / "missing"))


def test_load_catalog_reads_a_coco_dataset_with_polygon_masks(tmp_path):
    samples, _ = cutout_samples(tmp_path / "images", n=2)
    doc = {"images": [{"id": i + 1, "file_name": f"images/pack_{i}.png", "width": s.width, "height": s.height}
                      for i, s in enumerate(samples)],
           "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": 7, "bbox": [float(v) for v in s.boxes[0]],
                            "area": 1.0, "iscrowd": 0,
                            "segmentation": [[c for p in s.masks[0].rings[0] for c in p]]}
                           for i, s in enumerate(samples)],
           "categories": [{"id": 7, "name": "snack"}]}
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    cat = load_catalog(str(tmp_path))
    assert cat.format == "coco" and cat.class_names == ("snack",) and len(cat) == 2
    ref = catalog_from_samples(samples, {1: "snack", 2: "snack"}, single_class="snack")
    for a, b in zip(cat.assets, ref.assets):
        np.testing.assert_array_equal(a.rgba, b.rgba)
    doc["annotations"] = [{k: v for k, v in a.items() if k != "segmentation"} for a in doc["annotations"]]
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="carries a mask"):
        load_catalog(str(tmp_path))
