"""Convert an opened dataset to COCO, YOLO or a FiftyOne export of a run (`synthgap convert`).

One writer of the destination at a time (`synthgap.io.locks.lock_folder`); a killed run's temporary files are
removed first; with ``skip_invalid`` a record that fails while read or written is counted and left out, else
the first one stops the conversion. Boxes are copied as the writers define them: COCO keeps xywh pixels
exactly, YOLO clips to the image and normalises (`synthgap.data.yolo.YoloWriter`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from synthgap.data.coco import DEFAULT_JSON_NAME, CocoWriter
from synthgap.data.dataset import DetectionDataset
from synthgap.data.errors import SkipReport
from synthgap.data.info import iter_samples
from synthgap.errors import ConfigError, DatasetError, SynthgapError, WriteError
from synthgap.io import locks, storage

TARGETS = ("coco", "yolo", "fiftyone")


@dataclass
class ConvertResult:
    """What a conversion wrote: counts, where, and the records it left out (read or write problems)."""

    to: str
    source_format: str
    images: int
    boxes: int
    classes: int
    path: str                         # coco: the JSON; yolo / fiftyone: the folder
    subset: str | None = None         # yolo: the subset written
    yaml_path: str | None = None      # yolo: data.yaml
    dropped_boxes: int = 0            # yolo: boxes entirely outside their image
    detections: int | None = None     # fiftyone: predictions written
    skipped: list[DatasetError] = field(default_factory=list)


def check_destination(src: str, dst: str, *, copy_images: bool = False) -> None:
    """ConfigError when ``dst`` is, or is inside, ``src`` (or, copying images, the folder of a source JSON):
    a conversion never writes over what it reads."""
    out_json = dst if dst.lower().endswith(".json") else storage.join(dst, DEFAULT_JSON_NAME)
    source = storage.absolute(src)
    source_folder = source.rsplit("/" if "://" in source else os.sep, 1)[0] \
        if copy_images and storage.isfile(src) else source
    if storage.is_within(dst, source_folder) or storage.is_within(out_json, source):
        raise ConfigError(f"DST {dst} is, or is inside, SRC {src}: convert never writes into its source "
                          "(it would replace the annotations and images it reads); choose another DST")


def convert_dataset(ds: DetectionDataset, src: str, dst: str, to: str = "coco", *, subset: str = "train",
                    predictions: str | None = None, copy_images: bool = False, skip_invalid: bool = False
                    ) -> ConvertResult:
    """Write ``ds`` (opened from ``src``, named in messages) to ``dst`` as ``to`` (one of `TARGETS`).

    coco: ``dst`` is a .json path or a folder (then ``dst/annotations.json``); ``copy_images`` copies the
    files that decode as images into ``images/``. yolo: ``dst`` is a folder, images copied into
    ``images/<subset>``. fiftyone: ``predictions`` is a run's COCO results list on ``src``."""
    if to not in TARGETS:
        raise ConfigError(f"convert: unknown target {to!r}; one of {', '.join(TARGETS)}")
    if (predictions is not None) != (to == "fiftyone"):
        raise ConfigError("convert: predictions go with the fiftyone target (and it needs them)")
    if to == "yolo" and (not subset or "/" in subset or "\\" in subset or subset in (".", "..")):
        raise ConfigError(f"convert: the YOLO subset must be a plain folder name (train, val, test), got {subset!r}")
    check_destination(src, dst, copy_images=copy_images and to == "coco")
    if to == "fiftyone":  # the export replaces DST as a whole: never a folder holding what it reads
        for what, path in (("SRC", src), ("--predictions", predictions)):
            if storage.is_within(path, dst):
                raise ConfigError(f"DST {dst} holds {what} {path}: a FiftyOne export replaces its folder as a "
                                  "whole, which would delete it; choose another DST")
    report = SkipReport() if skip_invalid else None
    if to == "coco":
        out_json = dst if dst.lower().endswith(".json") else storage.join(dst, DEFAULT_JSON_NAME)
        temps, subfolders = os.path.dirname(storage.absolute(out_json)), ("images",)
    else:
        temps, subfolders = dst, (f"images/{subset}", f"labels/{subset}") if to == "yolo" else ("data",)
    with locks.lock_folder(dst, f"synthgap convert --to {to}"):  # one writer of DST at a time
        locks.remove_stale_temps(temps, subfolders=subfolders)  # where a killed run's atomic writes left .tmp files
        try:
            result = {"coco": _to_coco, "yolo": _to_yolo, "fiftyone": _to_fiftyone}[to](
                ds, src, dst, report, subset=subset, predictions=predictions, copy_images=copy_images)
        except OSError as e:  # cannot write DST or copy an image
            raise WriteError(str(e)) from e
    result.skipped = list(ds.skipped.errors) + (report.errors if report else [])
    return result


def _nothing(src: str) -> SynthgapError:
    return SynthgapError(f"nothing to convert: no usable images in {src}")


def _to_coco(ds, src, dst, report, *, copy_images, **_) -> ConvertResult:
    n_boxes = 0
    with CocoWriter(dst, ds.label_map, copy_images=copy_images) as writer:
        for sample in iter_samples(ds, report, "converting"):
            try:
                writer.add(sample)  # copying images: only files that decode as images are copied
            except DatasetError as e:
                if report is None:
                    raise
                report.add(e)
                continue
            n_boxes += len(sample)
        if len(writer) == 0:  # raising here leaves no file behind
            raise _nothing(src)
    return ConvertResult("coco", ds.format, len(writer), n_boxes, len(ds.label_map), writer.json_path)


def _to_yolo(ds, src, dst, report, *, subset, **_) -> ConvertResult:
    from synthgap.data.yolo import YoloWriter

    with YoloWriter(dst, ds.label_map, subset=subset) as writer:
        for sample in iter_samples(ds, report, "converting"):
            writer.add(sample)
        if len(writer) == 0:
            raise _nothing(src)
    return ConvertResult("yolo", ds.format, writer.images, writer.boxes, len(ds.label_map), dst, subset=subset,
                         yaml_path=writer.yaml_path, dropped_boxes=writer.dropped)


def _to_fiftyone(ds, src, dst, report, *, predictions, **_) -> ConvertResult:
    from synthgap.data.fiftyone import export_run

    detections = storage.read_json(predictions)
    if not isinstance(detections, list):
        raise SynthgapError(f"{predictions}: expected a COCO results list (synthgap evaluate's predictions.json)")
    counts = export_run(iter_samples(ds, report, "exporting"), ds.label_map, detections, dst, source=predictions)
    return ConvertResult("fiftyone", ds.format, counts["images"], counts["boxes"], len(ds.label_map), dst,
                         detections=counts["detections"])
