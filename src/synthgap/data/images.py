"""Reading image files (torch-free): decode to RGB, read the size from the header, check that a file decodes.

Every failure is a `DatasetError` naming the image (``file``) with one of the kinds ``missing_image``,
``unreadable_image`` (not an image, truncated, a folder, no permission) or ``image_too_large`` (Pillow's
decompression-bomb guard: more than ``2 * Image.MAX_IMAGE_PIXELS`` pixels), so readers, `info`,
`convert --copy-images` and the training loader report them the same way.
"""

from __future__ import annotations

import io

from PIL import Image

from synthgap.io import storage
from synthgap.data.errors import DatasetError


def _error(uri: str, e: BaseException) -> DatasetError:
    if isinstance(e, FileNotFoundError):
        return DatasetError("image file not found", file=uri, field="image", kind="missing_image")
    if isinstance(e, Image.DecompressionBombError):
        return DatasetError(f"image is too large to decode safely ({e})", file=uri, field="image",
                            kind="image_too_large")
    return DatasetError(f"image cannot be decoded ({type(e).__name__}: {e})", file=uri, field="image",
                        kind="unreadable_image")


_ERRORS = (OSError, Image.UnidentifiedImageError, Image.DecompressionBombError, ValueError, SyntaxError)


def load_image(uri: str) -> Image.Image:
    """Decode an image (any path or URI) as RGB; an unreadable file is a DatasetError naming it."""
    try:
        if storage.is_local(uri):
            with Image.open(storage.local_path(uri)) as img:
                return img.convert("RGB")
        with storage.open(uri, "rb") as f:
            with Image.open(f) as img:
                return img.convert("RGB")
    except _ERRORS as e:
        raise _error(uri, e) from None


def image_size(uri: str) -> tuple[int, int]:
    """(width, height) in pixels from the image header only (Pillow opens lazily: no pixel is decoded)."""
    try:
        with storage.open(uri, "rb") as f:
            with Image.open(f) as img:
                return img.size
    except _ERRORS as e:
        raise _error(uri, e) from None


def check_image_bytes(data: bytes, uri: str) -> tuple[int, int]:
    """(width, height) of encoded image bytes after decoding every pixel (a 0-byte, truncated or
    non-image file raises DatasetError naming ``uri``)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.size
    except _ERRORS as e:
        raise _error(uri, e) from None


def check_image(uri: str) -> tuple[int, int]:
    """(width, height) of the image at ``uri`` after decoding every pixel (see `check_image_bytes`)."""
    try:
        data = storage.read_bytes(uri)
    except OSError as e:
        raise _error(uri, e) from None
    return check_image_bytes(data, uri)
