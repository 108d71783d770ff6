"""UnityGroceries-Real (format ``groceries-real``): Unity's 1,267 real photos of the 63 SynthDet groceries.

Layout (as published in ``v3.zip`` and read by datasetinsights' ``GroceriesReal``)::

    annotations.json              [{"file_name": "IMG_4185.JPG",
                                    "annotations": [{"label_id": 11, "bbox": [x, y, w, h]}]}, ...]
    annotation_definitions.json   {"annotation_definitions": [{..., "spec": [{"label_id": 1, "label_name": "..."}]}]}
    images/IMG_4185.JPG ...
    groceries_real_<split>.txt    one line of space-separated indices into annotations.json

Every ``groceries_real_*.txt`` present is a split (train, val, test, train_small, train_medium,
test_high_ratio, ...). When there is no split file at all, splits are generated from ``seed``:
a permutation of the indices gives 60 % train / 20 % val / 20 % test, and the first 10 % / 50 % of
the permuted train list give train_small / train_medium (so train_small ⊂ train_medium ⊂ train).
Each split lists its indices in increasing order. ``image_id`` is the index into annotations.json,
the same whatever the split. Boxes are xywh pixels, kept as written. Image sizes come from the image
headers (PIL reads only the header).
"""

from __future__ import annotations

import re

import numpy as np

from synthgap.io import storage
from synthgap.data.dataset import DetectionDataset
from synthgap.data.errors import DatasetError
from synthgap.data.sample import Sample, id_array, validate_sample

ANNOTATIONS = "annotations.json"
DEFINITIONS = "annotation_definitions.json"
SPLIT_PREFIX = "groceries_real_"
# fractions of generated splits (of all images, then of the train split)
SPLIT_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}
TRAIN_SUBSET_FRACTIONS = {"train_small": 0.1, "train_medium": 0.5}


def generate_splits(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic 60/20/20 train/val/test indices of ``n`` images plus nested 10 %/50 % train subsets."""
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(SPLIT_FRACTIONS["train"] * n))
    n_val = int(round(SPLIT_FRACTIONS["val"] * n))
    train = perm[:n_train]
    n_small = max(1, int(round(TRAIN_SUBSET_FRACTIONS["train_small"] * n_train))) if n_train else 0
    n_medium = max(n_small, int(round(TRAIN_SUBSET_FRACTIONS["train_medium"] * n_train)))
    splits = {"train": train, "val": perm[n_train:n_train + n_val], "test": perm[n_train + n_val:],
              "train_small": train[:n_small], "train_medium": train[:n_medium]}
    return {k: np.sort(v).astype(np.int64) for k, v in splits.items()}


def dataset_folder(root: str) -> str:
    """``root``, or ``root/v3`` when ``root`` is the folder the published v3.zip was unpacked into."""
    inner = storage.join(root, "v3")
    if not storage.exists(storage.join(root, ANNOTATIONS)) and storage.exists(storage.join(inner, ANNOTATIONS)):
        return inner
    return root


def _read_split_file(path: str) -> str:
    """Text of a split file; bytes that are not UTF-8 or a file that cannot be read are a DatasetError."""
    try:
        return storage.read_bytes(path).decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"not UTF-8 text (byte at offset {e.start})", file=path, kind="bad_index") from None
    except (PermissionError, IsADirectoryError) as e:
        raise DatasetError(f"cannot read the file ({e.strerror or type(e).__name__})", file=path,
                           kind="unreadable_file") from None


class GroceriesRealDataset(DetectionDataset):
    """UnityGroceries-Real, one split of it (``split="all"`` for every image).

    Args:
        root: folder (path/URI) holding annotations.json, annotation_definitions.json and images/, or
            the folder the published archive unpacks into (``groceries/``, holding ``v3/``).
        split: ``all`` or the name of a split (``train``, ``val``, ``test``, ``train_small`` ...).
        seed: seed of the generated splits, used only when the folder has no split files.
        skip_invalid: drop invalid images (listed in ``self.skipped``); this reads every image header
            at open so that boxes outside the image are found. Without it, headers are read lazily
            and an invalid image raises `DatasetError` when it is accessed.

    Attributes: ``splits`` maps each split name to its file (read by `split_indices` on use) or,
    when ``splits_generated``, to its generated indices.
    """

    format = "groceries-real"

    def __init__(self, root: str, *, skip_invalid: bool = False, split: str = "all", seed: int = 0):
        super().__init__(dataset_folder(root), skip_invalid=skip_invalid)
        root = self.root
        self.split = split
        self.seed = seed
        self.annotations_path = storage.join(root, ANNOTATIONS)
        self.definitions_path = storage.join(root, DEFINITIONS)
        self.label_map = self._read_label_map()
        self._read_annotations()
        self.splits, self.splits_generated = self._read_splits()
        if split == "all":
            indices = np.arange(len(self._file_names), dtype=np.int64)
        elif split in self.splits:
            indices = self.split_indices(split)
        else:
            raise DatasetError(f"unknown split {split!r}; available: all, {', '.join(sorted(self.splits))}", file=root)
        # only the selected records count: a broken train record does not stop reading the test split
        for i in indices:
            if int(i) in self._record_errors:
                if not skip_invalid:
                    raise self._record_errors[int(i)]
                self.skipped.add(self._record_errors[int(i)])
        indices = indices[[int(i) not in self._record_errors for i in indices]] if len(indices) else indices
        self._sizes: dict[int, tuple[int, int]] = {}
        if skip_invalid:
            indices = np.array([i for i in indices if self._check(int(i))], dtype=np.int64)
        self._indices = indices

    @classmethod
    def detect(cls, root: str) -> bool:
        root = dataset_folder(root)
        if not storage.isdir(root) or not storage.exists(storage.join(root, ANNOTATIONS)):
            return False
        return storage.exists(storage.join(root, DEFINITIONS)) or bool(
            storage.glob(storage.join(root, f"{SPLIT_PREFIX}*.txt")))

    # -- index building ------------------------------------------------------------------------------------
    def _read_label_map(self) -> dict[int, str]:
        f = self.definitions_path
        if not storage.exists(f):
            raise DatasetError(f"{DEFINITIONS} is missing (it maps label_id to label_name)", file=f,
                               kind="missing_file")
        data = storage.read_json(f)
        defs = data.get("annotation_definitions") if isinstance(data, dict) else None
        if not isinstance(defs, list):
            raise DatasetError("missing key 'annotation_definitions' (a list)", file=f, record="top level",
                               field="annotation_definitions", kind="missing_key")
        for i, d in enumerate(defs):
            spec = d.get("spec") if isinstance(d, dict) else None
            if isinstance(spec, list) and spec and all(isinstance(s, dict) and "label_id" in s and "label_name" in s
                                                        for s in spec):
                out = {}
                for j, s in enumerate(spec):
                    if not isinstance(s["label_id"], int) or isinstance(s["label_id"], bool):
                        raise DatasetError(f"label_id {s['label_id']!r} is not an integer", file=f,
                                           record=f"annotation_definitions[{i}].spec[{j}]", field="label_id",
                                           kind="bad_type")
                    out[s["label_id"]] = str(s["label_name"])
                return dict(sorted(out.items()))
        raise DatasetError("no definition with a 'spec' list of {label_id, label_name}", file=f,
                           record="annotation_definitions", field="spec", kind="missing_key")

    def _read_annotations(self) -> None:
        """Flat numpy arrays of all boxes, with per-image [start, end) offsets (records are kept in order)."""
        f = self.annotations_path
        if not storage.exists(f):
            raise DatasetError(f"{ANNOTATIONS} is missing", file=f, kind="missing_file")
        data = storage.read_json(f)
        if not isinstance(data, list):
            raise DatasetError(f"top level is a {type(data).__name__}, expected a list of image records", file=f,
                               kind="bad_type")
        if not data:
            raise DatasetError("the dataset has no images", file=f, record="top level", kind="empty_dataset")
        names, counts, boxes, labels = [], [], [], []
        self._record_errors: dict[int, DatasetError] = {}  # raised or skipped only when the record is selected
        for i, rec in enumerate(data):
            try:
                b, lab = self._parse_record(i, rec)
                unknown = [j for j, label in enumerate(lab) if label not in self.label_map]
                if unknown:
                    j = unknown[0]
                    raise DatasetError(f"label_id {lab[j]} is not in {DEFINITIONS}", file=f,
                                       record=f"[{i}].annotations[{j}] ({rec['file_name']})", field="label_id",
                                       kind="unknown_label")
                names.append(rec["file_name"])
            except DatasetError as e:
                self._record_errors[i] = e
                names.append(rec.get("file_name", "") if isinstance(rec, dict) else "")
                b, lab = np.zeros((0, 4)), []
            counts.append(len(lab))
            boxes.append(b)
            labels.extend(lab)
        self._file_names = names
        self._end = np.cumsum(counts)
        self._start = self._end - np.asarray(counts)
        self._boxes = np.concatenate(boxes).reshape(-1, 4)
        self._labels = id_array(labels)  # int64, or Python ints when an id does not fit

    def _parse_record(self, i: int, rec: object) -> tuple[np.ndarray, list[int]]:
        f = self.annotations_path
        if not isinstance(rec, dict):
            raise DatasetError("image record is not an object", file=f, record=f"[{i}]", kind="bad_type")
        for key, typ in (("file_name", str), ("annotations", list)):
            if not isinstance(rec.get(key), typ):
                raise DatasetError(f"missing or non-{typ.__name__} '{key}'", file=f, record=f"[{i}]", field=key,
                                   kind="missing_key")
        anns = rec["annotations"]
        boxes = np.zeros((len(anns), 4))
        labels = []
        for j, a in enumerate(anns):
            r = f"[{i}].annotations[{j}] ({rec['file_name']})"
            if not isinstance(a, dict) or type(a.get("label_id")) is not int:  # a boolean is not an id
                raise DatasetError("missing integer 'label_id'", file=f, record=r, field="label_id",
                                   kind="missing_key")
            bbox = a.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4 or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
                raise DatasetError(f"bbox must be 4 numbers [x, y, w, h], got {bbox!r}", file=f, record=r,
                                   field="bbox", kind="bad_bbox")
            try:
                boxes[j] = bbox
            except OverflowError:
                raise DatasetError(f"bbox {str(bbox)[:60]} holds a number beyond float64", file=f, record=r,
                                   field="bbox", kind="number_too_large") from None
            labels.append(a["label_id"])
        return boxes, labels

    def _read_splits(self) -> tuple[dict[str, np.ndarray | str], bool]:
        """Split name -> indices (generated) or split file path (parsed on use by `split_indices`)."""
        files = storage.glob(storage.join(self.root, f"{SPLIT_PREFIX}*.txt"))
        if not files:
            return dict(generate_splits(len(self._file_names), self.seed)), True
        names = [re.sub(r"\.txt$", "", p.replace("\\", "/").rsplit("/", 1)[-1])[len(SPLIT_PREFIX):] for p in files]
        return dict(zip(names, files)), False

    def split_indices(self, name: str) -> np.ndarray:
        """Indices into annotations.json of split ``name``; out-of-range or non-integer entries raise
        DatasetError (or are skipped and reported under skip_invalid)."""
        source = self.splits[name]
        if not isinstance(source, str):
            return source
        n = len(self._file_names)
        keep = []
        seen: dict[int, int] = {}
        for pos, tok in enumerate(_read_split_file(source).split()):
            err = None
            if not re.fullmatch(r"[+-]?\d+", tok):
                err = DatasetError(f"{tok!r} is not an integer index", file=source, record=f"position {pos}",
                                   field="index", kind="bad_index")
            elif not 0 <= int(tok) < n:
                err = DatasetError(f"index {int(tok)} is out of range: {ANNOTATIONS} has {n} records", file=source,
                                   record=f"position {pos}", field="index", kind="index_out_of_range")
            elif int(tok) in seen:  # the image would be read (and scored) twice
                err = DatasetError(f"index {int(tok)} is listed twice (first at position {seen[int(tok)]})",
                                   file=source, record=f"position {pos}", field="index", kind="duplicate_index")
            if err is None:
                seen[int(tok)] = pos
                keep.append(int(tok))
            elif self.skip_invalid:
                self.skipped.add(err)
            else:
                raise err
        return np.asarray(keep, dtype=np.int64)

    def _check(self, index: int) -> bool:
        """Validate one record with its image size; under skip_invalid record a failure and return False."""
        try:
            self._sample(index)
            return True
        except DatasetError as e:
            self.skipped.add(e)
            return False

    # -- Sequence API -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._sample(int(self._indices[index]))

    def _sample(self, i: int) -> Sample:
        name = self._file_names[i]
        image = storage.join(self.root, "images", name)
        if i not in self._sizes:
            from synthgap.data.images import image_size

            try:
                self._sizes[i] = image_size(image)
            except DatasetError as e:
                message = "image file not found" if e.kind == "missing_image" else \
                    f"cannot read the image header: {e.message}"
                raise DatasetError(message, file=image, record=f"[{i}] ({name})", field="file_name",
                                   kind="bad_image" if e.kind == "unreadable_image" else e.kind) from None
        width, height = self._sizes[i]
        s, e = self._start[i], self._end[i]
        sample = Sample(image=image, width=int(width), height=int(height), boxes=self._boxes[s:e],
                        labels=self._labels[s:e], image_id=i,
                        metadata={"file_name": name, "index": i, "split": self.split})
        validate_sample(sample, self.label_map, file=self.annotations_path, record=f"[{i}] ({name})")
        return sample
