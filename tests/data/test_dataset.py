"""synthgap.data.dataset: format detection and `open_dataset`."""

from __future__ import annotations

import pytest

from synthgap.data import READERS, DatasetError, detect_format, open_dataset
from synthgap.data.splits import open_split


def test_a_missing_path_says_so_everywhere(tmp_path):
    missing = str(tmp_path / "nope")
    for call in (lambda: detect_format(missing), lambda: open_dataset(missing),
                 lambda: open_dataset(missing, "coco"), lambda: open_dataset(missing, "supervisely"),
                 lambda: open_split(missing, role="train")):  # what `synthgap train` opens
        with pytest.raises(DatasetError, match="no such file or folder") as err:
            call()
        assert err.value.file == missing and err.value.kind == "missing_file"
    with pytest.raises(DatasetError, match="no reader recognises this path"):  # it exists, but is no dataset
        detect_format(str(tmp_path))


def test_supervisely_and_yolo_are_tried_before_coco():
    order = list(READERS)
    assert order.index("supervisely") < order.index("coco") and order.index("yolo") < order.index("coco")
