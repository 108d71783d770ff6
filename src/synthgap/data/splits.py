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

Every seeded split in synthgap is drawn by `seeded_split` (these splits, the study's held-out parts and
real subsets): the first ``count`` indices of one seeded order (`seeded_order`). With ``groups`` (one key
per image: frames of one video, one recording session, one SOLO sequence, one store; `group_keys` makes
them from a ``group_by`` spec) whole groups are drawn instead, so that no group has images on both sides:
near-copies of a training image in the validation or test part make a score look better than it is.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import numpy as np

from synthgap.data.dataset import DetectionDataset, detect_format, reader_class
from synthgap.data.sample import Sample
from synthgap.errors import ConfigError, DatasetError

ALL = "all"
GENERATED = ("train", "val")   # the splits of a dataset without its own
SEED = 47                      # datasetinsights' random_seed
VAL_FRACTION = 0.1             # datasetinsights' 1 - train_split_ratio
ROLES = ("train", "val", "test")
GROUP_BY_FORMS = ("regex:PATTERN", "folder", "field:NAME")
_SEPARATOR = re.compile(r"[\\/](?=[^\\/]*$)")  # the last path separator (URIs and Windows paths too)


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


def seeded_order(n: int, seed: int, *, legacy: bool = False) -> np.ndarray:
    """The fixed random order of ``n`` items that every seeded split takes its first items from:
    ``numpy.random.default_rng(seed).permutation(n)``, or with ``legacy`` numpy's ``RandomState(seed)``
    (sklearn's ``train_test_split`` and so datasetinsights' splits draw from that one)."""
    rng = np.random.RandomState(seed) if legacy else np.random.default_rng(seed)
    return rng.permutation(n)


@dataclass(frozen=True)
class Draw:
    """What `seeded_split` drew: ``taken`` and ``rest``, sorted indices into the ``n`` items, and how many
    groups there are in all and in ``taken`` (ungrouped: every item is its own group)."""

    taken: np.ndarray
    rest: np.ndarray
    groups: int
    groups_taken: int

    @property
    def fraction(self) -> float:
        """The share of items taken (asked for: ``count / n``; with groups, as close as whole groups allow)."""
        n = len(self.taken) + len(self.rest)
        return len(self.taken) / n if n else 0.0


def seeded_split(n: int, count: float, seed: int, *, groups: Sequence[Hashable] | None = None,
                 legacy: bool = False) -> Draw:
    """Take ``count`` of ``n`` items at random, reproducibly: the first ``count`` of `seeded_order`.

    With ``groups`` (``n`` keys, one per item), whole groups are taken instead, their total as close to
    ``count`` as whole groups allow (`_nearest_groups`; e.g. 9 of the groups 25 / 9 / 3 for 7.4). Groups are
    numbered in order of first appearance and preferred in `seeded_order` of the groups, so the seed picks
    among the choices that come equally close. When ``0 < count < n`` and there are at least 2 groups, both
    sides keep at least one group. The achieved share is ``Draw.fraction``. With every item its own group,
    the result is the ungrouped one (same seed, same items)."""
    if not 0 <= count <= n:
        raise ValueError(f"cannot take {count} of {n} items")
    if groups is None:
        if count != int(count):
            raise ValueError(f"an ungrouped split takes a whole number of items, got {count}")
        order = seeded_order(n, seed, legacy=legacy)
        k = int(count)
        return Draw(np.sort(order[:k]), np.sort(order[k:]), n, k)
    codes, n_groups = _group_codes(groups, n)
    sizes = np.bincount(codes, minlength=n_groups)
    taken = _nearest_groups(sizes, seeded_order(n_groups, seed, legacy=legacy), count,
                            both_sides=0 < count < n and n_groups >= 2)
    chosen = taken[codes]
    return Draw(np.flatnonzero(chosen), np.flatnonzero(~chosen), n_groups, int(taken.sum()))


def nested_split(n: int, count: int, seed: int, *, groups: Sequence[Hashable] | None = None) -> Draw:
    """The first ``count`` of ``n`` items in one seeded order (`seeded_split`), so that a smaller count takes a
    subset of a larger one (the study's real budgets: 10 % inside 50 %). With ``groups`` (one key per item),
    the first whole groups in `seeded_order` of the groups (numbered in order of first appearance), as many as
    bring the total nearest ``count`` (the fewer on a tie; at least one): still nested, since a larger count
    takes a longer prefix of the same order; with every item its own group, the ungrouped draw. Less close to
    ``count`` than `seeded_split`'s subset sum, which is not nested; ``Draw.fraction`` is the share reached."""
    if groups is None:
        return seeded_split(n, count, seed)
    codes, n_groups = _group_codes(groups, n)
    if not 0 < count <= n:
        raise ValueError(f"cannot take {count} of {n} items")
    order = seeded_order(n_groups, seed)
    totals = np.cumsum(np.bincount(codes, minlength=n_groups)[order])
    k = int(np.argmin(np.abs(totals - count))) + 1  # argmin: the first, shorter, prefix on a tie
    taken = np.zeros(n_groups, dtype=bool)
    taken[order[:k]] = True
    chosen = taken[codes]
    return Draw(np.flatnonzero(chosen), np.flatnonzero(~chosen), n_groups, k)


def _group_codes(groups: Sequence[Hashable], n: int) -> tuple[np.ndarray, int]:
    """Each item's group number (groups numbered in order of first appearance) and the number of groups."""
    if len(groups) != n:
        raise ValueError(f"{len(groups)} group keys for {n} items")
    index: dict[Hashable, int] = {}
    codes = np.fromiter((index.setdefault(key, len(index)) for key in groups), dtype=np.int64, count=n)
    return codes, len(index)


EXACT_CELLS = 2 ** 24  # groups x (items + 1) up to which the group split is an exact subset sum


def _nearest_groups(sizes: np.ndarray, order: np.ndarray, count: float, both_sides: bool) -> np.ndarray:
    """Which groups (bool per group) `seeded_split` takes.

    Exact when ``groups x (items + 1) <= EXACT_CELLS``: a subset sum over the group sizes finds the
    reachable total nearest ``count`` (the lower one on a tie; within ``[1, n - 1]`` with ``both_sides``),
    and the groups are chosen walking ``order``, each taken when the rest can still make up the total.
    Larger: a greedy pass in ``order`` (a group taken when it brings the total closer), then single-group
    additions, removals and swaps while one brings it closer (not always the optimum: on random cases of
    2-8 groups of 1-29 items, 50 of 300 end further from ``count`` than the exact answer; such cases take
    the exact path anyway, this one is for many groups, e.g. 20,000 of 200,000 items: 0.05 s)."""
    n, g = int(sizes.sum()), len(sizes)
    lo, hi = (1, n - 1) if both_sides else (0, n)
    if g * (n + 1) <= EXACT_CELLS:
        ordered = sizes[order]
        reach = np.zeros((g + 1, n + 1), dtype=bool)  # reach[k, s]: groups order[k:] can sum to s
        reach[g, 0] = True
        for k in range(g - 1, -1, -1):
            reach[k] = reach[k + 1]
            reach[k, ordered[k]:] |= reach[k + 1, :n + 1 - ordered[k]]
        sums = np.flatnonzero(reach[0, lo:hi + 1]) + lo
        left = int(sums[np.argmin(np.abs(sums - count))])  # argmin: the first, lower, total on a tie
        taken = np.zeros(g, dtype=bool)
        for k in range(g):
            if ordered[k] <= left and reach[k + 1, left - ordered[k]]:
                taken[order[k]], left = True, left - int(ordered[k])
        return taken
    taken = np.zeros(g, dtype=bool)
    total = 0
    for k in order.tolist():
        if abs(total + sizes[k] - count) < abs(total - count):
            taken[k] = True
            total += int(sizes[k])
    keep = 1 if both_sides else 0  # groups each side must keep
    while True:
        inside, outside = order[taken[order]], order[~taken[order]]  # both in seeded order (ties: earliest)
        best, move = abs(total - count), None
        if both_sides and not (len(inside) and len(outside)):
            best = np.inf  # a side without a group: any move that fills it
        if len(outside) > keep:
            i = int(np.argmin(np.abs(total + sizes[outside] - count)))
            if abs(total + sizes[outside[i]] - count) < best:
                best, move = abs(total + sizes[outside[i]] - count), ((), (outside[i],))
        if len(inside) > keep:
            i = int(np.argmin(np.abs(total - sizes[inside] - count)))
            if abs(total - sizes[inside[i]] - count) < best:
                best, move = abs(total - sizes[inside[i]] - count), ((inside[i],), ())
        if len(inside) and len(outside):
            by_size = outside[np.argsort(sizes[outside], kind="stable")]
            wanted = count - total + sizes[inside]  # the size an outside group should have, per inside group
            j = np.searchsorted(sizes[by_size], wanted)
            for cand in (np.clip(j - 1, 0, len(by_size) - 1), np.clip(j, 0, len(by_size) - 1)):
                err = np.abs(sizes[by_size[cand]] - wanted)
                i = int(np.argmin(err))
                if err[i] < best:
                    best, move = float(err[i]), ((inside[i],), (by_size[cand[i]],))
        if move is None:
            return taken
        for k in move[0]:
            taken[k], total = False, total - int(sizes[k])
        for k in move[1]:
            taken[k], total = True, total + int(sizes[k])


def val_count(n: int, val_fraction: float) -> int:
    """Images in datasetinsights' validation split of ``n``: ``n - floor((1 - val_fraction) n)`` (sklearn's
    ``train_test_split(train_size=1 - val_fraction)`` rounding, not ``ceil(val_fraction n)``)."""
    if not 0 < val_fraction < 1:
        raise ConfigError(f"the validation fraction must be in (0, 1), got {val_fraction}")
    return n - math.floor((1 - val_fraction) * n)


def train_val_indices(n: int, val_fraction: float = VAL_FRACTION, seed: int = SEED,
                      groups: Sequence[Hashable] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) sorted indices of ``n`` images: datasetinsights' split (module docstring); with
    ``groups``, whole groups go to val until its size is nearest to the ungrouped split's (`seeded_split`)."""
    d = seeded_split(n, val_count(n, val_fraction), seed, groups=groups, legacy=True)
    return d.rest, d.taken


def _group_key(group_by: str) -> Callable[[Sample], str]:
    """Sample -> group key for a ``group_by`` spec (`group_keys`); a spec of no known form is a ConfigError."""
    kind, _, arg = group_by.partition(":")
    if group_by == "folder":
        return lambda s: _SEPARATOR.split(s.image)[0] if _SEPARATOR.search(s.image) else ""
    if kind == "field" and arg:
        def field(s: Sample) -> str:
            if arg not in (s.metadata or {}):
                raise DatasetError(f"no metadata field {arg!r} to group by (it has: "
                                   f"{', '.join(sorted(s.metadata or {})) or 'none'})", file=s.image,
                                   record=s.image_id, field=f"metadata.{arg}", kind="no_group")
            return str(s.metadata[arg])
        return field
    if kind == "regex" and arg:
        try:
            pattern = re.compile(arg)
        except re.error as e:
            raise ConfigError(f"group_by {group_by!r}: not a regular expression ({e})") from None

        def match(s: Sample) -> str:
            name = _SEPARATOR.split(s.image)[-1]
            m = pattern.search(name)
            if m is None:
                raise DatasetError(f"file name {name!r} does not match the group_by regex {arg!r}", file=s.image,
                                   record=s.image_id, field="image", kind="no_group")
            return next((g for g in m.groups() if g is not None), m.group(0))
        return match
    raise ConfigError(f"group_by {group_by!r}: expected one of {', '.join(GROUP_BY_FORMS)} (e.g. "
                      "'regex:^(IMG_\\d+)_' groups IMG_1866_frame_1.jpg with IMG_1866_frame_2.jpg)")


def group_keys(samples: Sequence[Sample], group_by: str) -> list[str]:
    """One group key per sample, from ``group_by``:

    - ``regex:PATTERN``: the first capture group (else the whole match) of ``re.search(PATTERN, name)`` on
      the image's file name, e.g. ``regex:^(IMG_\\d+)_`` for the frames of one video;
    - ``folder``: the folder holding the image (its path: one recording session or store per folder);
    - ``field:NAME``: ``sample.metadata[NAME]``, e.g. ``field:sequence`` (SOLO), ``field:sequence_id``
      (Perception).

    A file name the regex does not match, or a sample without the field, is a DatasetError naming the
    image, its id and the field: an image silently put in a group of its own could leak."""
    key = _group_key(group_by)
    return [key(s) for s in samples]


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
               val_fraction: float = VAL_FRACTION, group_by: str | None = None) -> DetectionDataset:
    """Open split ``split`` (None: `default_split` for ``role``) of the dataset at ``root``.

    ``group_by`` (`group_keys`' spec, e.g. ``regex:^(IMG_\\d+)_``): the generated ``train`` / ``val`` split
    keeps each group whole (the achieved validation share goes into the description); a dataset with its
    own split files refuses it (its files already say which image is where).

    The result is a `DetectionDataset` with ``split`` (its name) and ``description`` (how it was chosen,
    for logs) attributes. An unknown split name is an error listing the available ones.
    """
    fmt = format or detect_format(root)
    cls = reader_class(fmt)
    name = split or default_split(role, cls, validating_on_train_data=validating_on_train_data)
    if has_named_splits(cls):
        if group_by and name != ALL:
            raise ConfigError(f"{root}: group_by {group_by!r} applies to generated splits; {fmt} datasets read "
                              f"their split files (split {name!r}): leave group_by unset or read split 'all'")
        ds = cls(root, skip_invalid=skip_invalid, split=name)  # the reader lists its splits when unknown
        ds.description = f"all {len(ds)} images" if name == ALL else f"split {name!r}: {len(ds)} images"
        return ds
    ds = cls(root, skip_invalid=skip_invalid)
    if name == ALL:
        ds.split, ds.description = ALL, f"all {len(ds)} images"
        return ds
    return generated_split(ds, name, seed=seed, val_fraction=val_fraction, group_by=group_by)


def generated_split(ds: DetectionDataset, name: str, *, seed: int = SEED, val_fraction: float = VAL_FRACTION,
                    group_by: str | None = None) -> DatasetSplit:
    """Split ``name`` (``train`` or ``val``) of an opened dataset without split files: datasetinsights'
    seeded split (module docstring), with ``group_by`` (`group_keys`) whole groups; the description says
    how it was drawn and, grouped, the validation share reached."""
    if name not in GENERATED:
        raise ConfigError(f"{ds.root}: unknown split {name!r}; {ds.format} datasets have: {ALL}, "
                          f"{', '.join(GENERATED)} (a {1 - val_fraction:.0%} / {val_fraction:.0%} split seeded "
                          f"{seed}); only UnityGroceries-Real has split files")
    groups = group_keys(ds, group_by) if group_by else None
    d = seeded_split(len(ds), val_count(len(ds), val_fraction), seed, groups=groups, legacy=True)
    indices = d.rest if name == "train" else d.taken
    if groups is None:
        how = (f"split {name!r}: {len(indices)} of {len(ds)} images ({1 - val_fraction:.0%} / {val_fraction:.0%}, "
               f"seed {seed})")
    else:
        if not (len(d.taken) and len(d.rest)):
            raise ConfigError(f"{ds.root}: group_by {group_by!r} puts all {len(ds)} images in {d.groups} group(s): "
                              "a grouped train / val split needs at least 2 groups")
        n_groups = d.groups - d.groups_taken if name == "train" else d.groups_taken
        how = (f"split {name!r}: {len(indices)} of {len(ds)} images in {n_groups} of {d.groups} groups "
               f"({group_by}; val asked {val_fraction:.0%}, got {d.fraction:.1%}; seed {seed})")
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
