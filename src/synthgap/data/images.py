"""Reading image files (torch-free): decode to RGB, read the size from the header, check that a file decodes.

Every decode here shows the image **upright, as a viewer shows it**: the EXIF orientation (tag 0x0112,
1-8; or XMP ``tiff:Orientation``) is applied with `PIL.ImageOps.exif_transpose`'s rule, and sizes
are those of the upright image (orientations 5-8 swap width and height). Boxes and masks of every
reader refer to that frame; a reader that takes sizes from a header (`image_size`) gets them there too.
Phone photos are stored sideways with orientation 6 or 8: without this, a 1080x1920 shelf photo
decodes as 1920x1080 and every box is in the wrong place.

High-bit-depth images are scaled by their mode's value range, never clipped: 16-bit greys (Pillow
modes ``I;16*``, and ``I``, in which Pillow decodes 16-bit PGM/PPM) map 0..65535 to 0..255 (a dark
16-bit photo stays dark; the image's own maximum is not used, so every image of a set gets the same
scale). 16-bit RGB(A) PNGs are read by Pillow as 8-bit RGB(A) already (their high bytes). A 32-bit
``I`` image with values outside 0..65535 and float images (``F``) have no defined range and are refused.

``max_side`` / ``size``: JPEGs larger than the requested size are decoded at 1/2, 1/4 or 1/8 scale
by libjpeg's DCT scaling (`PIL.Image.Image.draft`), then resized with Pillow's antialiasing
bilinear filter; other formats are decoded whole and resized the same way. For a 1080x1920 photo fed
at 640 px that is several times faster than decoding every pixel (BENCHMARKS.md, "Reduced-scale decode").

Every failure is a `DatasetError` naming the image (``file``) with one of the kinds ``missing_image``,
``unreadable_image`` (not an image, truncated, a folder, no permission), ``image_too_large`` (Pillow's
decompression-bomb guard: more than ``2 * Image.MAX_IMAGE_PIXELS`` pixels) or ``unsupported_image``
(a float or out-of-range 32-bit image), so readers, `info`, `convert --copy-images` and the training
loader report them the same way.
"""

from __future__ import annotations

import contextlib
import io
import re
from typing import IO, Iterator

import numpy as np
from PIL import ExifTags, Image, ImageOps

from synthgap.io import storage
from synthgap.data.errors import DatasetError

_ORIENTATION = ExifTags.Base.Orientation  # 0x0112
_SWAPS_AXES = frozenset((5, 6, 7, 8))    # orientations that turn the stored image by 90 degrees
_SIXTEEN_BIT = frozenset(("I;16", "I;16L", "I;16B", "I;16N"))
_SIXTEEN_BIT_MAX = 65535


def _error(uri: str, e: BaseException) -> DatasetError:
    if isinstance(e, DatasetError):
        return e
    if isinstance(e, FileNotFoundError):
        return DatasetError("image file not found", file=uri, field="image", kind="missing_image")
    if isinstance(e, Image.DecompressionBombError):
        return DatasetError(f"image is too large to decode safely ({e})", file=uri, field="image",
                            kind="image_too_large")
    return DatasetError(f"image cannot be decoded ({type(e).__name__}: {e})", file=uri, field="image",
                        kind="unreadable_image")


_ERRORS = (OSError, Image.UnidentifiedImageError, Image.DecompressionBombError, ValueError, SyntaxError)


@contextlib.contextmanager
def _opened(uri: str) -> Iterator[Image.Image]:
    """The image at ``uri`` opened lazily (header parsed, no pixel decoded); errors as DatasetError."""
    try:
        with contextlib.ExitStack() as stack:
            if storage.is_local(uri):
                img = stack.enter_context(Image.open(storage.local_path(uri)))
            else:
                f: IO[bytes] = stack.enter_context(storage.open(uri, "rb"))
                img = stack.enter_context(Image.open(f))
            yield img
    except DatasetError:
        raise
    except _ERRORS as e:
        raise _error(uri, e) from None


def orientation(img: Image.Image, *, header_only: bool = False) -> int:
    """EXIF orientation of an opened image, 1 (upright) when absent or not 1-8: the value
    `PIL.ImageOps.exif_transpose` acts on (EXIF tag, else XMP ``tiff:Orientation``).

    ``header_only``: decode no pixel to find it. Pillow's PNG reader would decode the whole image to look
    for an ``eXIf`` chunk after the image data (and keep the answer it had before): a PNG's orientation is
    then read from the chunks before the image data only; JPEG, TIFF and WebP keep it in the header.
    """
    if header_only and img.format == "PNG" and "exif" not in img.info:
        value = None
        raw = img.info.get("Raw profile type exif")
        if isinstance(raw, str):
            exif = Image.Exif()
            with contextlib.suppress(ValueError, SyntaxError):
                exif.load(bytes.fromhex("".join(raw.split("\n")[3:])))
            value = exif.get(_ORIENTATION)
        xmp = img.info.get("XML:com.adobe.xmp") or img.info.get("xmp")
        if value is None and xmp:
            text = xmp if isinstance(xmp, str) else xmp.decode("utf-8", "replace")
            match = re.search(r'tiff:Orientation(="|>)([0-9])', text)
            value = int(match[2]) if match else None
    else:
        value = img.getexif().get(_ORIENTATION, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _upright(size: tuple[int, int], orient: int) -> tuple[int, int]:
    return (size[1], size[0]) if orient in _SWAPS_AXES else (int(size[0]), int(size[1]))


def _to_rgb(img: Image.Image, uri: str) -> Image.Image:
    """RGB of a decoded image; 16-bit greys scaled by 65535 (module docstring), never clipped."""
    if img.mode == "RGB":
        return img
    if img.mode in _SIXTEEN_BIT or img.mode == "I":
        values = np.asarray(img)
        if img.mode == "I" and values.size and (int(values.min()) < 0 or int(values.max()) > _SIXTEEN_BIT_MAX):
            raise DatasetError(f"32-bit integer image with values {int(values.min())}..{int(values.max())}: only "
                               "0..65535 (16-bit) has a defined range; convert it to 8 or 16 bits", file=uri,
                               field="image", kind="unsupported_image")
        grey = ((values.astype(np.uint32) * 255 + _SIXTEEN_BIT_MAX // 2) // _SIXTEEN_BIT_MAX).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=2), "RGB")
    if img.mode == "F":
        raise DatasetError("float image (Pillow mode F) has no defined value range; convert it to 8 or 16 bits",
                           file=uri, field="image", kind="unsupported_image")
    return img.convert("RGB")


def _target(size: tuple[int, int], max_side: int | None) -> tuple[int, int] | None:
    """(width, height) with the long side ``max_side`` and the aspect kept (at least 1 px), or None when
    the image is not larger than that."""
    if max_side is None or max(size) <= max_side:
        return None
    scale = max_side / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def decode_image(uri: str, *, size: tuple[int, int] | None = None,
                 max_side: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """(RGB upright image, (width, height) pixels of the full upright image) of the file at ``uri``.

    ``size`` (width, height) pixels: resize to exactly that. ``max_side`` pixels: shrink (never
    enlarge) so that the long side is ``max_side``, keeping the aspect. Either way JPEGs are
    decoded at a reduced DCT scale first (module docstring). Neither: the image at full size.
    """
    if (max_side is not None and max_side < 1) or (size is not None and min(size) < 1):
        raise ValueError(f"sizes are positive pixel counts, got size={size}, max_side={max_side}")
    try:
        with _opened(uri) as img:
            stored = img.size
            orient = orientation(img, header_only=True)
            target = tuple(size) if size is not None else _target(_upright(stored, orient), max_side)
            if target is not None and img.format in ("JPEG", "MPO"):
                # draft works in the stored frame: ask for the target turned the way the file is
                img.draft("RGB", _upright(target, orient))
            img.load()
            late = orientation(img)  # all of the file is read now (a PNG's late eXIf chunk too)
            if late != orient:
                orient = late
                target = tuple(size) if size is not None else _target(_upright(stored, orient), max_side)
            out = _to_rgb(ImageOps.exif_transpose(img) if orient != 1 else img, uri)
            if target is not None and out.size != target:
                out = out.resize(target, Image.Resampling.BILINEAR)
            elif out is img:
                out = img.copy()  # detached from the file, which closes here
            return out, _upright(stored, orient)
    except DatasetError:
        raise
    except _ERRORS as e:
        raise _error(uri, e) from None


def load_image(uri: str, max_side: int | None = None) -> Image.Image:
    """Decode an image (any path or URI) as RGB, upright (EXIF orientation applied); ``max_side``:
    at most that many pixels on the long side (JPEGs decoded at a reduced scale, see `decode_image`).
    An unreadable file is a DatasetError naming it."""
    return decode_image(uri, max_side=max_side)[0]


def image_header(uri: str) -> tuple[int, int, int]:
    """(width, height, EXIF orientation) from the header only: the upright size in pixels (Pillow
    opens lazily: no pixel is decoded) and the orientation that turns the stored image upright."""
    with _opened(uri) as img:
        orient = orientation(img, header_only=True)
        return (*_upright(img.size, orient), orient)


def image_size(uri: str) -> tuple[int, int]:
    """(width, height) in pixels of the upright image, from the header only (see `image_header`)."""
    return image_header(uri)[:2]


def _check(img: Image.Image, uri: str) -> tuple[int, int, int]:
    img.load()
    orient = orientation(img)
    if img.mode == "F" or img.mode == "I":
        _to_rgb(img, uri)  # refuses what the training loader would refuse
    return (*_upright(img.size, orient), orient)


def check_image_exif(data: bytes, uri: str) -> tuple[int, int, int]:
    """(width, height, EXIF orientation) of encoded image bytes after decoding every pixel: the upright
    size in pixels (a 0-byte, truncated or non-image file raises DatasetError naming ``uri``)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return _check(img, uri)
    except DatasetError:
        raise
    except _ERRORS as e:
        raise _error(uri, e) from None


def check_image_bytes(data: bytes, uri: str) -> tuple[int, int]:
    """(width, height) of the upright image after decoding every pixel of its encoded bytes (a 0-byte,
    truncated or non-image file raises DatasetError naming ``uri``)."""
    return check_image_exif(data, uri)[:2]


def read_image_file(uri: str) -> bytes:
    """The bytes of the file at ``uri``; a missing or unreadable file is a DatasetError naming it."""
    try:
        return storage.read_bytes(uri)
    except OSError as e:
        raise _error(uri, e) from None


def check_image(uri: str) -> tuple[int, int]:
    """(width, height) of the upright image at ``uri`` after decoding every pixel (see `check_image_bytes`)."""
    return check_image_exif(read_image_file(uri), uri)[:2]
