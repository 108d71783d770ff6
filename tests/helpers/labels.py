"""A COCO test set whose classes carry other ids (same images, same boxes): the case class ids must be
matched by name for (synthgap.data.labels)."""

from __future__ import annotations

import json
from pathlib import Path

PERMUTED = {1: 3, 2: 1, 3: 2}  # shapes' red 1 -> 3, green 2 -> 1, blue 3 -> 2: same names, other ids


def renumbered_coco(src, dst, ids=PERMUTED, names=None) -> str:
    """Copy the COCO set in folder ``src`` (annotations.json, images referenced as written) to folder
    ``dst`` with category ``c`` renumbered ``ids[c]`` (and renamed ``names[name]`` where given)."""
    src, dst = Path(src), Path(dst)
    coco = json.loads((src / "annotations.json").read_text())
    for image in coco["images"]:  # absolute image paths: the copy reads the same files
        image["file_name"] = str((src / image["file_name"]).resolve())
    coco["categories"] = [{"id": ids[c["id"]], "name": (names or {}).get(c["name"], c["name"])}
                          for c in coco["categories"]]
    for a in coco["annotations"]:
        a["category_id"] = ids[a["category_id"]]
    dst.mkdir(parents=True)
    (dst / "annotations.json").write_text(json.dumps(coco))
    return str(dst)
