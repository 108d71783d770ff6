"""The class list of a generated dataset: names in label-id order, id 0 reserved for the background.

The default list is the 63 UnityGroceries products (package data, the ``index_to_name`` of the
SynthDet Faster R-CNN, entry 0 ``NONE``). A user list is a JSON list of names, a JSON object with
``object_type_names`` (the same shape as the package file), or a text file with one name per line.
"""

from __future__ import annotations

import json
from importlib import resources

from synthgap.io import storage
from synthgap.data.errors import DatasetError

BACKGROUND_NAMES = {"none", "background", "__background__"}
DEFAULT_CLASSES_RESOURCE = "groceries_63_classes.json"


def default_class_names() -> list[str]:
    """The 63 UnityGroceries product names, label ids 1..63 in order."""
    text = resources.files("synthgap").joinpath("resources", DEFAULT_CLASSES_RESOURCE).read_text("utf-8")
    return _parse(text, DEFAULT_CLASSES_RESOURCE)


def load_class_names(path: str | None = None) -> list[str]:
    """Class names from ``path`` (JSON list / ``object_type_names`` object / one per line), or the default.

    A leading background entry (``NONE``) is dropped: names get label ids 1..N in file order.
    Raises DatasetError naming the file for a missing file, an empty list, or duplicate names.
    """
    if path is None:
        return default_class_names()
    if not storage.exists(path):
        raise DatasetError("class list file not found", file=str(path), kind="missing_file")
    return _parse(storage.read_text(path), str(path))


def label_map(names: list[str]) -> dict[int, str]:
    """id -> name with ids 1..N (0 is the background and not in the map, as in every synthgap reader)."""
    return {i + 1: name for i, name in enumerate(names)}


def _parse(text: str, file: str) -> list[str]:
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DatasetError(f"malformed JSON: {e.msg} (line {e.lineno}, column {e.colno})",
                               file=file, kind="malformed_json") from None
        if isinstance(data, dict):
            if "object_type_names" not in data:
                raise DatasetError("a JSON object class list needs an 'object_type_names' list", file=file,
                                   field="object_type_names", kind="missing_field")
            data = data["object_type_names"]
        if not isinstance(data, list) or not all(isinstance(n, str) for n in data):
            raise DatasetError("class list must be a list of strings", file=file, field="object_type_names",
                               kind="bad_type")
        names = [n.strip() for n in data]
    else:
        names = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return check_class_names(names, file)


def check_class_names(names: list[str], file: str = "<class list>") -> list[str]:
    """Drop a leading background name; DatasetError for an empty list, empty or duplicate names."""
    names = [str(n).strip() for n in names]
    if names and names[0].lower() in BACKGROUND_NAMES:
        names = names[1:]
    for i, name in enumerate(names):
        if not name:
            raise DatasetError("empty class name", file=file, record=i, field="name", kind="bad_value")
    if not names:
        raise DatasetError("class list is empty", file=file, kind="empty")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise DatasetError(f"duplicate class name {name!r} (first at entry {seen[name]})", file=file,
                               record=i, field="name", kind="duplicate")
        seen[name] = i
    return names
