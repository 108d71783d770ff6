"""The asset catalog of the cut-and-paste generator: real product cut-outs, cropped to their masks.

SynthDet randomizes scenes around real product appearance; in 2D that means pasting real cut-outs
(`synthgap.generate.paste`). A catalog is read once per run, from either

- any dataset whose Samples carry masks (`synthgap.data.open_dataset`: Supervisely bitmaps, COCO
  polygons or RLE, ...; ``Sample.masks``): every box with a mask is one asset, of the box's class
  (reader options such as a tag-to-class option pass through ``options``), or
- a folder of RGBA PNGs with one subfolder per class (format ``png-folder``): the subfolder name is
  the class, the alpha channel the mask (partial alpha is kept: soft edges blend).

Each cut-out is cropped to its mask's extent once and held in memory as RGBA (alpha 0 outside the
mask), so a paste costs a resize of a small crop. Boxes without a mask are not assets and are
counted in ``skipped``; a catalog with no cut-out at all is a `DatasetError` naming the source.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np
from PIL import Image

from synthgap.data.errors import DatasetError
from synthgap.data.sample import Sample
from synthgap.io import storage

PNG_FOLDER = "png-folder"  # the --assets-format name of a folder of RGBA PNGs, one subfolder per class


@dataclass(frozen=True, eq=False)
class Asset:
    """One cut-out: ``rgba`` (h, w, 4) uint8 cropped to the mask's extent, alpha 0 outside the mask."""

    rgba: np.ndarray
    label: int  # 1-based index into the catalog's class_names
    source: str  # "file record i box j", for messages

    @property
    def height(self) -> int:
        return int(self.rgba.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgba.shape[1])


@dataclass(frozen=True, eq=False)
class AssetCatalog:
    """Cut-outs and their class names (label ids 1..N in ``class_names`` order)."""

    assets: tuple[Asset, ...]
    class_names: tuple[str, ...]
    source: str = "<samples>"
    format: str = ""
    skipped: tuple[str, ...] = field(default=())  # "where: why" of each box or file left out

    def __len__(self) -> int:
        return len(self.assets)

    @property
    def label_map(self) -> dict[int, str]:
        return {i + 1: n for i, n in enumerate(self.class_names)}

    def digest(self) -> str:
        """sha256 (hex, 16 chars) of the classes and every cut-out's pixels: two runs (or shards) agree
        on their catalog exactly when this agrees."""
        h = hashlib.sha256()
        for name in self.class_names:
            h.update(name.encode("utf-8") + b"\0")
        for a in self.assets:
            h.update(np.asarray(a.rgba.shape, np.int64).tobytes() + np.int64(a.label).tobytes())
            h.update(np.ascontiguousarray(a.rgba).tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        """What a generation plan records about the catalog (JSON-ready)."""
        counts = np.bincount([a.label for a in self.assets], minlength=len(self.class_names) + 1)[1:]
        return {"source": str(self.source), "format": self.format, "assets": len(self.assets),
                "classes": list(self.class_names), "assets_per_class": [int(c) for c in counts],
                "skipped": len(self.skipped), "digest": self.digest()}


def cut_out(rgb: np.ndarray, mask: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray | None:
    """RGBA crop of ``rgb`` (H, W, 3) to the extent of the bool ``mask`` (H, W); alpha = 255 inside the
    mask (or the given ``alpha``, uint8), 0 outside. None for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    ys, xs = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    m = mask[ys, xs]
    a = np.where(m, np.uint8(255) if alpha is None else alpha[ys, xs], np.uint8(0)).astype(np.uint8)
    rgba = np.empty(m.shape + (4,), np.uint8)
    rgba[..., :3] = np.where(m[..., None], rgb[ys, xs], np.uint8(0))
    rgba[..., 3] = a
    return rgba


def catalog_from_samples(samples: Iterable[Sample], label_map: Mapping[int, str], *, source: str = "<samples>",
                         format: str = "", single_class: str | None = None,
                         image_loader=None) -> AssetCatalog:
    """Cut every masked box out of its image. ``label_map`` names the samples' labels; classes keep the
    order of their ids, and only classes with at least one cut-out are kept. ``single_class``: one
    class of that name for every asset (a class-agnostic study). ``image_loader(uri) -> PIL image``
    defaults to `synthgap.data.images.load_image`."""
    if image_loader is None:
        from synthgap.data.images import load_image as image_loader
    raw: list[tuple[np.ndarray, int, str]] = []
    skipped: list[str] = []
    n_samples = 0
    for i, s in enumerate(samples):
        n_samples += 1
        where = f"{s.image} (record {i})"
        if not s.masks or all(m is None for m in s.masks):
            skipped += [f"{where} box {j}: no mask" for j in range(len(s))]
            continue
        if len(s.masks) != len(s):
            raise DatasetError(f"{len(s.masks)} masks for {len(s)} boxes", file=str(s.image), record=i, field="masks",
                               kind="inconsistent")
        img = image_loader(s.image)
        if img.size != (s.width, s.height):
            raise DatasetError(f"image is {img.size[0]}x{img.size[1]} px but annotated as {s.width}x{s.height}",
                               file=str(s.image), record=i, field="size", kind="size_mismatch")
        rgb = np.asarray(img.convert("RGB"))
        for j, (mask, label) in enumerate(zip(s.masks, s.labels.tolist())):
            if mask is None:
                skipped.append(f"{where} box {j}: no mask")
                continue
            label = int(label)
            if label not in label_map:
                raise DatasetError(f"label id {label} is not in the label map", file=str(s.image),
                                   record=f"{i} box {j}", field="label_id", kind="unknown_label")
            rgba = cut_out(rgb, np.asarray(mask.to_array(s.width, s.height), bool))
            if rgba is None:
                skipped.append(f"{where} box {j}: empty mask")
                continue
            raw.append((rgba, label, f"{where} box {j}"))
    if n_samples == 0:
        raise DatasetError("the asset catalog has no images", file=str(source), kind="empty")
    if not raw:
        raise DatasetError(f"no box of the {n_samples} images carries a mask: a catalog needs cut-outs (Supervisely "
                           "bitmaps or polygons, COCO segmentation, or a folder of RGBA PNGs)", file=str(source),
                           field="masks", kind="no_masks")
    return _catalog(raw, label_map, source, format, single_class, skipped)


def _catalog(raw: list[tuple[np.ndarray, int, str]], label_map: Mapping[int, str], source: str, format: str,
             single_class: str | None, skipped: list[str]) -> AssetCatalog:
    if single_class is not None:
        name = str(single_class).strip()
        if not name:
            raise DatasetError("the single class name is empty", file=str(source), field="single_class",
                               kind="bad_value")
        return AssetCatalog(tuple(Asset(r, 1, w) for r, _, w in raw), (name,), str(source), format, tuple(skipped))
    used = sorted({label for _, label, _ in raw})
    index = {label: k + 1 for k, label in enumerate(used)}
    names = tuple(str(label_map[label]) for label in used)
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise DatasetError(f"several label ids share the class name(s) {dup}", file=str(source), field="label_map",
                           kind="duplicate")
    return AssetCatalog(tuple(Asset(r, index[label], w) for r, label, w in raw), names, str(source), format,
                        tuple(skipped))


def catalog_from_png_folder(root: str, *, single_class: str | None = None) -> AssetCatalog:
    """Cut-outs from ``root/<class>/*.png`` (RGBA; the alpha channel is the mask, cropped to alpha > 0).
    A PNG without an alpha channel, or one that does not decode, is a DatasetError naming it."""
    if not storage.isdir(root):
        raise DatasetError("asset folder not found", file=str(root), kind="missing_file")
    classes = [c for c in storage.listdir(root) if not c.startswith(".") and storage.isdir(storage.join(root, c))]
    raw: list[tuple[np.ndarray, int, str]] = []
    skipped: list[str] = []
    for k, name in enumerate(classes, 1):
        folder = storage.join(root, name)
        for file in storage.listdir(folder):
            if file.startswith(".") or not file.lower().endswith(".png"):
                continue
            path = storage.join(folder, file)
            rgba = _read_rgba(path)
            cut = cut_out(rgba[..., :3], rgba[..., 3] > 0, rgba[..., 3])
            if cut is None:
                skipped.append(f"{path}: fully transparent")
                continue
            raw.append((cut, k, path))
    if not raw:
        raise DatasetError(f"no RGBA PNG cut-out found in its class subfolders ({', '.join(classes) or 'none'}): "
                           f"a {PNG_FOLDER} catalog is ROOT/<class name>/*.png with the mask in alpha",
                           file=str(root), field="masks", kind="no_masks" if classes else "empty")
    return _catalog(raw, {k: n for k, n in enumerate(classes, 1)}, root, PNG_FOLDER, single_class, skipped)


def _read_rgba(path: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(storage.read_bytes(path))) as img:
            img.load()
            has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
            if not has_alpha:
                raise DatasetError(f"PNG mode {img.mode} has no alpha channel: a cut-out's mask is its alpha",
                                   file=str(path), field="alpha", kind="no_alpha")
            return np.asarray(img.convert("RGBA"))
    except DatasetError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DatasetError(f"image cannot be decoded ({type(e).__name__}: {e})", file=str(path), field="image",
                           kind="unreadable_image") from None


def load_catalog(path: str, format: str | None = None, *, single_class: str | None = None,
                 options: Mapping[str, object] | None = None) -> AssetCatalog:
    """The catalog at ``path``: a dataset read by `synthgap.data.open_dataset` (``format`` or detected;
    ``options`` go to the reader) or, with format ``png-folder`` or when no reader recognises a folder,
    a folder of RGBA PNGs per class."""
    from synthgap.data.dataset import detect_format, open_dataset

    options = dict(options or {})
    if format is None:
        try:
            format = detect_format(path)
        except DatasetError:
            if not storage.isdir(path):
                raise
            format = PNG_FOLDER
    if format == PNG_FOLDER:
        if options:
            raise DatasetError(f"options {sorted(options)} do not apply to a {PNG_FOLDER} catalog", file=str(path))
        return catalog_from_png_folder(path, single_class=single_class)
    ds = open_dataset(path, format, **options)
    return catalog_from_samples(ds, ds.label_map, source=path, format=format, single_class=single_class)

