"""The errors a user can fix, at the bottom of the import graph (this module imports nothing of synthgap).

Every one is a `SynthgapError`, itself a ``ValueError``; the ``synthgap`` command prints a
`SynthgapError` as a one-line message (`synthgap.cli`), while anything else, a bug, keeps its traceback.
"""

from __future__ import annotations


class SynthgapError(ValueError):
    """Bad input or an unusable source: the message says which file, record, key or URL, and why."""


class DatasetError(SynthgapError):
    """A dataset record is malformed.

    ``file`` is the path/URI of the offending file, ``record`` identifies the record inside it
    (an index, an id, or a JSON path such as ``captures[3]``), ``field`` names the field.
    The message always carries all three when they are known, so a user can open the file and fix it.
    """

    def __init__(self, message: str, *, file: str | None = None, record: object = None,
                 field: str | None = None, kind: str = "invalid"):
        self.message = message
        self.file = file
        self.record = record
        self.field = field
        self.kind = kind  # a short machine-readable category, e.g. "box_outside_image"
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.file is not None:
            where.append(str(self.file))
        if self.record is not None:
            where.append(f"record {self.record}")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        return (": ".join(where) + ": " if where else "") + self.message


class LabelMapError(DatasetError):
    """Two label maps cannot be matched class by class: a name appears twice in one, two classes would
    become one, a ``class_map`` entry names no class, or the maps share no class (`synthgap.data.labels`)."""

    def __init__(self, message: str, *, file: str | None = None, record: object = None,
                 field: str | None = None, kind: str = "label_map"):
        super().__init__(message, file=file, record=record, field=field, kind=kind)


class ConfigError(SynthgapError):
    """A config file or override is invalid; the message names the dotted key and the source."""


class BootstrapError(SynthgapError):
    """A bootstrap cannot run on these results: not the COCO protocol, no per-image matches, runs scored on
    different test images, or an unknown metric (`synthgap.metrics.bootstrap`)."""


class CheckpointError(SynthgapError):
    """A checkpoint file cannot be loaded (unsafe content, corrupt, or not a checkpoint), or does not
    fit the run (another label map)."""


class DownloadError(SynthgapError, RuntimeError):
    """A download failed (the source is gone, the network gave up, a checksum did not match). Also a
    ``RuntimeError``, as it was before it became a `SynthgapError`."""


class WriteError(SynthgapError):
    """An output cannot be written: the disk is full or read-only, or permission is denied. The message
    names the file and the system's reason; the original ``OSError`` is the ``__cause__``."""


class TrainingError(SynthgapError, FloatingPointError):
    """Training cannot go on: the loss diverged (non-finite, or exploding); the message names the optimizer
    step, epoch and batch. Also a ``FloatingPointError``, as a non-finite loss raised before."""


class TrackingError(SynthgapError):
    """The experiment tracker (MLflow, ``--mlflow-uri``) cannot be used: a bad or unreachable URI at the start,
    or, with ``--mlflow-strict``, a failed call during the run. The message names the URI and the reason."""


class StudyError(SynthgapError):
    """A study folder holds cells made from other data than the study config now names (`synthgap.study`):
    the message names each cell and the folder or file to delete."""
