"""Base class of every reader, and `open_dataset`, which picks the reader for a path.

A reader is a random-access sequence of `Sample`s plus a label map. Readers stream: opening one
builds a compact index (file names and offsets), never a table of every annotation; a `Sample`
is parsed when it is asked for.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Iterator, Mapping, Sequence

from synthgap.data.errors import DatasetError, SkipReport
from synthgap.data.sample import Sample


class DetectionDataset(Sequence[Sample]):
    """A readable detection dataset: ``len(ds)``, ``ds[i] -> Sample``, ``ds.label_map``.

    Subclasses set ``format`` (the name used by ``--format``), implement ``detect(root)``,
    ``__len__`` and ``__getitem__``, and fill ``label_map`` (id -> name), ``skipped`` (records left
    out under ``skip_invalid=True``) and ``skipped_sensors`` (captures of sensors that are not RGB cameras,
    e.g. depth or lidar, left out of every dataset: sensor kind -> count; not an error).
    """

    format: str = ""

    def __init__(self, root: str, *, skip_invalid: bool = False):
        self.root = root
        self.skip_invalid = skip_invalid
        self.label_map: dict[int, str] = {}
        self.skipped = SkipReport()
        self.skipped_sensors: dict[str, int] = {}

    @classmethod
    def detect(cls, root: str) -> bool:
        """True when ``root`` looks like a dataset of this format (cheap: a few stat calls)."""
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        raise NotImplementedError

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={self.root!r}, images={len(self)}, classes={len(self.label_map)})"


# format name -> "module:class". Detection tries them in this order (most specific first).
READERS: Mapping[str, str] = {
    "solo": "synthgap.data.solo:SoloDataset",
    "perception": "synthgap.data.perception:PerceptionDataset",
    "groceries-real": "synthgap.data.groceries_real:GroceriesRealDataset",
    "supervisely": "synthgap.data.supervisely:SuperviselyDataset",  # before coco: meta.json is a lone JSON
    "yolo": "synthgap.data.yolo:YoloDataset",
    "coco": "synthgap.data.coco:CocoDataset",
}


def reader_class(format: str) -> type[DetectionDataset]:
    """The reader class registered for ``format``."""
    try:
        target = READERS[format]
    except KeyError:
        raise DatasetError(f"unknown dataset format {format!r}; known: {', '.join(READERS)}") from None
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def _missing(root: str, local_only: bool = False) -> bool:
    """True when ``root`` is known not to exist. An http(s) folder URL has no listing to ask (it may 404
    and still hold the dataset's files), so it is never called missing here; ``local_only``: ask only
    about local paths (no network round trip)."""
    from synthgap.io import storage  # here, not at the top: the CLI's --help imports this module

    if storage.is_http(root) or (local_only and not storage.is_local(root)):
        return False
    return not storage.exists(root)


def _no_such_path(root: str) -> DatasetError:
    return DatasetError("no such file or folder", file=root, kind="missing_file")


def detect_format(root: str) -> str:
    """Name of the first reader whose ``detect`` accepts ``root``; DatasetError when none does (saying
    "no such file or folder" when that is why)."""
    for format in READERS:
        if reader_class(format).detect(root):
            return format
    if _missing(root):
        raise _no_such_path(root)
    raise DatasetError(f"no reader recognises this path (known formats: {', '.join(READERS)})",
                       file=root, kind="unknown_format")


def open_dataset(root: str, format: str | None = None, *, skip_invalid: bool = False, **options) -> DetectionDataset:
    """Open a dataset at a local path or URI, detecting its format unless ``format`` is given.

    ``options`` go to the reader (e.g. ``split="test"`` for UnityGroceries-Real or YOLO, ``datasets=``
    and ``label_tag=`` for Supervisely: docs/formats.md); ``None`` values are left out, and an option the
    reader does not take is a DatasetError naming the path and format. A local path that does not exist
    is a DatasetError saying "no such file or folder".
    """
    if format is not None and _missing(root, local_only=True):
        raise _no_such_path(root)  # the same message whichever reader would have tripped over it
    fmt = format or detect_format(root)
    cls = reader_class(fmt)
    options = {k: v for k, v in options.items() if v is not None}
    accepted = inspect.signature(cls.__init__).parameters
    for name, value in options.items():
        if name not in accepted:
            raise DatasetError(f"{name}={value!r} does not apply to {fmt} datasets", file=root)
    return cls(root, skip_invalid=skip_invalid, **options)
