"""synthgap.data.images: EXIF orientation on every decode, 16-bit images by their range, reduced-scale JPEG decode."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from synthgap.data import DatasetError, Sample
from synthgap.data.images import (check_image, check_image_bytes, decode_image, image_header, image_size,
                                  load_image)
from synthgap.data.torch_dataset import TorchDetectionDataset

# the upright picture: 90 wide, 60 tall, a red block at x 10..30, y 5..20 (xywh 10, 5, 20, 15) and a blue
# block at x 60..80, y 40..55: where a viewer sees them
UPRIGHT_W, UPRIGHT_H = 90, 60
RED_BOX = (10, 5, 20, 15)
BLUE_BOX = (60, 40, 20, 15)
# how to store the upright picture so that orientation o turns it back (the inverse of exif_transpose's step)
STORE = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def _upright(scale: int = 1) -> Image.Image:
    a = np.full((UPRIGHT_H * scale, UPRIGHT_W * scale, 3), 200, np.uint8)
    for (x, y, w, h), colour in ((RED_BOX, (255, 0, 0)), (BLUE_BOX, (0, 0, 255))):
        a[y * scale:(y + h) * scale, x * scale:(x + w) * scale] = colour
    return Image.fromarray(a)


def _jpeg_with_orientation(path, orientation: int, scale: int = 1):
    stored = _upright(scale).transpose(STORE[orientation]) if orientation in STORE else _upright(scale)
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, format="JPEG", quality=95, exif=exif)
    return str(path)


def _mean(image: Image.Image, box, scale: float = 1.0) -> np.ndarray:
    x, y, w, h = (round(v * scale) for v in box)
    return np.asarray(image, dtype=float)[y + 2:y + h - 2, x + 2:x + w - 2].reshape(-1, 3).mean(axis=0)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_puts_pixels_where_the_boxes_say(tmp_path, orientation):
    path = _jpeg_with_orientation(tmp_path / f"o{orientation}.jpg", orientation)
    stored = Image.open(path).size
    assert stored == ((UPRIGHT_H, UPRIGHT_W) if orientation in (6, 8) else (UPRIGHT_W, UPRIGHT_H))
    image = load_image(path)
    assert image.size == (UPRIGHT_W, UPRIGHT_H) and image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), np.asarray(ImageOps.exif_transpose(Image.open(path))))
    red, blue = _mean(image, RED_BOX), _mean(image, BLUE_BOX)
    assert red[0] > 200 and red[2] < 60 and blue[2] > 200 and blue[0] < 60
    assert image_size(path) == (UPRIGHT_W, UPRIGHT_H) == check_image(path)
    assert image_header(path) == (UPRIGHT_W, UPRIGHT_H, orientation)
    assert check_image_bytes(Path(path).read_bytes(), path) == (UPRIGHT_W, UPRIGHT_H)
    # the training loader: the boxes of a sample annotated on the upright image land on the red / blue pixels
    sample = Sample(image=path, width=UPRIGHT_W, height=UPRIGHT_H, boxes=[RED_BOX, BLUE_BOX], labels=[1, 2])
    tensor, target = TorchDetectionDataset([sample])[0]
    assert tuple(tensor.shape) == (3, UPRIGHT_H, UPRIGHT_W)
    x1, y1, x2, y2 = (int(v) for v in target["boxes"][0].tolist())
    patch = tensor[:, y1 + 2:y2 - 2, x1 + 2:x2 - 2].mean(dim=(1, 2)).tolist()
    assert patch[0] > 0.8 and patch[2] < 0.25


def test_annotation_on_the_stored_frame_is_a_size_mismatch(tmp_path):
    path = _jpeg_with_orientation(tmp_path / "o6.jpg", 6)
    sample = Sample(image=path, width=UPRIGHT_H, height=UPRIGHT_W, boxes=np.zeros((0, 4)), labels=[])
    with pytest.raises(DatasetError, match=f"{UPRIGHT_W}x{UPRIGHT_H} but the annotation says "
                                           f"{UPRIGHT_H}x{UPRIGHT_W}") as err:
        TorchDetectionDataset([sample])[0]
    assert err.value.kind == "size_mismatch"


def test_png_orientation_is_applied_too(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 8
    path = tmp_path / "o8.png"
    _upright().transpose(STORE[8]).save(path, exif=exif)
    assert image_header(str(path)) == (UPRIGHT_W, UPRIGHT_H, 8)
    np.testing.assert_array_equal(np.asarray(load_image(str(path))), np.asarray(_upright()))


def _png16(path, values: np.ndarray) -> str:
    Image.fromarray(values.astype(np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"
    return str(path)


def test_16_bit_png_is_scaled_by_its_range_not_clipped(tmp_path):
    values = np.array([[0, 1000, 30000, 65535]] * 2, np.uint16)
    path = _png16(tmp_path / "deep.png", values)
    out = np.asarray(load_image(path))
    assert out.shape == (2, 4, 3) and (out[..., 0] == out[..., 2]).all()  # grey stays grey
    # 0..65535 -> 0..255 (rounded): 1000 -> 4, 30000 -> 117; Pillow's own convert("RGB") clips both to 255
    assert out[0, :, 0].tolist() == [0, 4, 117, 255]
    assert np.asarray(Image.open(path).convert("RGB"))[0, 1, 0] == 255  # the bug this guards against
    assert check_image(path) == (4, 2)


def test_16_bit_pgm_and_float_images(tmp_path):
    # Pillow decodes a 16-bit PGM into mode I (32-bit ints): the same 0..65535 scale
    pgm = tmp_path / "deep.pgm"
    pgm.write_bytes(b"P5\n2 1\n65535\n" + np.array([2570, 65535], ">u2").tobytes())
    assert Image.open(pgm).mode == "I"
    assert np.asarray(load_image(str(pgm)))[0, :, 0].tolist() == [10, 255]
    tif = tmp_path / "float.tif"
    Image.fromarray(np.ones((2, 2), np.float32)).save(tif)
    with pytest.raises(DatasetError, match="float image") as err:
        load_image(str(tif))
    assert err.value.kind == "unsupported_image" and err.value.file == str(tif)
    with pytest.raises(DatasetError, match="float image"):
        check_image(str(tif))


def test_reduced_scale_decode_matches_a_full_decode(tmp_path):
    photo = _upright(scale=16)  # 1440 x 960
    path = tmp_path / "big.jpg"
    photo.save(path, quality=90)
    image, full = decode_image(str(path), max_side=360)
    assert full == (1440, 960) and image.size == (360, 240)
    reference = Image.open(path).convert("RGB").resize((360, 240), Image.Resampling.BILINEAR)
    diff = np.abs(np.asarray(image, float) - np.asarray(reference, float))
    assert diff.mean() < 2.0 and np.percentile(diff, 99) < 40  # same picture; block edges differ by a pixel
    assert load_image(str(path), max_side=2000).size == (1440, 960)  # never enlarged
    assert decode_image(str(path), size=(100, 50))[0].size == (100, 50)
    png = tmp_path / "big.png"
    photo.save(png)  # no DCT scaling: decoded whole, then resized the same way
    assert load_image(str(png), max_side=360).size == (360, 240)


def test_reduced_decode_of_a_turned_photo(tmp_path):
    path = _jpeg_with_orientation(tmp_path / "o6_big.jpg", 6, scale=16)  # upright 1440 x 960, stored 960 x 1440
    image, full = decode_image(path, max_side=360)
    assert full == (1440, 960) and image.size == (360, 240)
    red = _mean(image, RED_BOX, 0.25 * 16)
    assert red[0] > 200 and red[2] < 60


def test_torch_dataset_decodes_near_the_models_input_size(tmp_path):
    path = _jpeg_with_orientation(tmp_path / "o8_big.jpg", 8, scale=16)  # upright 1440 x 960
    sample = Sample(image=path, width=1440, height=960, boxes=[[b * 16 for b in RED_BOX]], labels=[1])
    # the model's rule (min_size 240, max_size 400): scale min(240/960, 400/1440) = 0.25 -> 360 x 240
    tensor, target = TorchDetectionDataset([sample], model_resize=(240, 400))[0]
    assert tuple(tensor.shape) == (3, 240, 360)
    np.testing.assert_allclose(target["boxes"].tolist(), [[40.0, 20.0, 120.0, 80.0]])  # 0.25 x the original
    assert target["area"].tolist() == [pytest.approx(320 * 240 * 0.0625)]
    x1, y1, x2, y2 = (int(v) for v in target["boxes"][0].tolist())
    patch = tensor[:, y1 + 2:y2 - 2, x1 + 2:x2 - 2].mean(dim=(1, 2)).tolist()
    assert patch[0] > 0.8 and patch[2] < 0.25
    # a model that shrinks the photo less than 2x gets it whole (its own transform resizes)
    tensor, target = TorchDetectionDataset([sample], model_resize=(800, 1333))[0]
    assert tuple(tensor.shape) == (3, 960, 1440) and target["boxes"][0].tolist() == [160.0, 80.0, 480.0, 320.0]


def test_truncated_and_missing_files_name_the_file(tmp_path):
    path = tmp_path / "cut.jpg"
    data = io.BytesIO()
    _upright(4).save(data, format="JPEG")
    path.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    for decode in (load_image, check_image):
        with pytest.raises(DatasetError, match="cannot be decoded") as err:
            decode(str(path))
        assert err.value.kind == "unreadable_image" and err.value.file == str(path)
    with pytest.raises(DatasetError, match="not found") as err:
        image_size(str(tmp_path / "nope.jpg"))
    assert err.value.kind == "missing_image"
