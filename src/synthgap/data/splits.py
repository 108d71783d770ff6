"""Which images of a dataset a run trains, validates or tests on: `open_split`.

UnityGroceries-Real carries its own splits (``groceries_real_<name>.txt``: train, val, test,
train_small ...; generated 60/20/20 when the folder has none, see `synthgap.data.groceries_real`).
Any other dataset has two generated splits, datasetinsights' ``SynDetection2D`` ones: ``train`` and
``val`` are the 90 % / 10 % of a permutation seeded 47 (``numpy.random.RandomState(seed).permutation``,
the draw of sklearn's ``train_test_split(train_size=0.9, random_state=47)``: the first
``n - floor(0.9 n)`` permuted indices are val, the rest train). ``all`` is every image of any dataset.

When no split is named (``None``), the role decides (`default_split`): UnityGroceries-Real reads its
``train`` / ``val`` / ``test`` split; other data is read whole, except that training data validated on
itself (no separate validation data) is cut into datasetinsights' ``train`` / ``val``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from synthgap.data.dataset import DetectionDataset, detect_format, reader_class
from synthgap.data.sample import Sample
from synthgap.errors import ConfigError

ALL = "all"
GENERATED = ("train", "val")   # the splits of a dataset without its own
SEED = 47                      # datasetinsights' random_seed
VAL_FRACTION = 0.1             # datasetinsights' 1 - train_split_ratio
ROLES = ("train", "val", "test")


class DatasetSplit(DetectionDataset):
    """Some images of a dataset (``indices`` into it, in increasing order), read through it."""

    def __init__(self, dataset: DetectionDataset, indices: Sequence[int], split: str, description: str):
        super().__init__(dataset.root, skip_invalid=dataset.skip_invalid)
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.split = split
        self.description = description  # for logs: how the split was drawn
        self.format = dataset.format
        self.label_map = dataset.label_map
        self.skipped = dataset.skipped

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.dataset[int(self.indices[index])]


def has_named_splits(dataset_class: type) -> bool:
    """True for readers that carry their own splits (UnityGroceries-Real's split files)."""
    return hasattr(dataset_class, "split_indices")


def train_val_indices(n: int, val_fraction: float = VAL_FRACTION, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) sorted indices of ``n`` images: datasetinsights' split (module docstring)."""
    if not 0 < val_fraction < 1:
        raise ConfigError(f"the validation fraction must be in (0, 1), got {val_fraction}")
    n_train = math.floor((1 - val_fraction) * n)
    perm = np.random.RandomState(seed).permutation(n)
    return np.sort(perm[n - n_train:]), np.sort(perm[:n - n_train])


def default_split(role: str, dataset_class: type, *, validating_on_train_data: bool = False) -> str:
    """The split read when none is named: UnityGroceries-Real's split of that role; other data whole,
    or datasetinsights' ``train`` / ``val`` when the training data is also the validation data."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    if has_named_splits(dataset_class):
        return role
    return role if validating_on_train_data and role in GENERATED else ALL


def open_split(root: str, split: str | None = None, *, role: str = "train", format: str | None = None,
               skip_invalid: bool = False, validating_on_train_data: bool = False, seed: int = SEED,
               val_fraction: float = VAL_FRACTION) -> DetectionDataset:
    """Open split ``split`` (None: `default_split` for ``role``) of the dataset at ``root``.

    The result is a `DetectionDataset` with ``split`` (its name) and ``description`` (how it was chosen,
    for logs) attributes. An unknown split name is an error listing the available ones.
    """
    fmt = format or detect_format(root)
    cls = reader_class(fmt)
    name = split or default_split(role, cls, validating_on_train_data=validating_on_train_data)
    if has_named_splits(cls):
        ds = cls(root, skip_invalid=skip_invalid, split=name)  # the reader lists its splits when unknown
        ds.description = f"all {len(ds)} images" if name == ALL else f"split {name!r}: {len(ds)} images"
        return ds
    ds = cls(root, skip_invalid=skip_invalid)
    if name == ALL:
        ds.split, ds.description = ALL, f"all {len(ds)} images"
        return ds
    if name not in GENERATED:
        raise ConfigError(f"{root}: unknown split {name!r}; {fmt} datasets have: {ALL}, {', '.join(GENERATED)} "
                         f"(a {1 - val_fraction:.0%} / {val_fraction:.0%} split seeded {seed}); only "
                         "UnityGroceries-Real has split files")
    train, val = train_val_indices(len(ds), val_fraction, seed)
    indices = train if name == "train" else val
    how = (f"split {name!r}: {len(indices)} of {len(ds)} images ({1 - val_fraction:.0%} / {val_fraction:.0%}, "
           f"seed {seed})")
    return DatasetSplit(ds, indices, name, how)


def _index_set(ds: DetectionDataset) -> set[int] | None:
    """Indices into the underlying dataset of a split opened by `open_split`; None for every image."""
    if isinstance(ds, DatasetSplit):
        return set(ds.indices.tolist())
    split = getattr(ds, "split", ALL)
    return None if split == ALL else set(ds.split_indices(split).tolist())


def shared_images(a: DetectionDataset, b: DetectionDataset) -> int:
    """How many images two splits of the same dataset (both from `open_split`) have in common."""
    ia, ib = _index_set(a), _index_set(b)
    if ia is None or ib is None:
        return len(b) if ia is None else len(a)
    return len(ia & ib)
