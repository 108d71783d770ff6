"""Class ids of two label maps matched by class name, never by number.

A model (its checkpoint's label map, i.e. its training data's) and a test set number their classes
independently: ``apple`` can be 1 in one and 3 in the other. Scored by number, a model that finds every
apple is marked wrong on every box, with no warning (AP 0.004 instead of 0.933 in
tests/data/test_labels.py). `align_label_maps` matches the classes by name and returns a
`LabelAlignment`: model id -> test id, the classes left out on each side, and `LabelAlignment.log_line`,
one line saying how they were matched. `synthgap evaluate`, `synthgap predict --test-data` and training's
validation (``train --val-data``) go through it; `check_label_maps` checks a study's datasets before it
trains.

**Name rule**: two names are the same class when they are equal after collapsing runs of whitespace to
one space, stripping the ends and Unicode case folding (``" Cereal  Box"`` is ``"cereal box"``). Nothing
else is fuzzy: ``cereal_box`` is another name. Names that differ are paired with an explicit
``class_map`` {model name: test name} (``synthgap evaluate --class-map cereal_box="cereal box"``, or a
YAML / JSON file holding that mapping: `parse_class_map`).

**Refused** (`synthgap.errors.LabelMapError`, naming the label map and the classes): a name that
appears twice in one map (unless the two maps are identical, when ids can only mean one thing); two model
classes that would score as one test class; a ``class_map`` entry naming no class; maps sharing no class.

**Left out**: a test class the model does not know is not evaluated (its boxes are dropped from the
ground truth, so it does not count as AP 0); a model class the test set lacks has its detections dropped.
Both are listed in the log line. A checkpoint without a label map (datasetinsights' files) is matched by
id, and the log line says so.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from synthgap.data.sample import Sample, id_array
from synthgap.errors import LabelMapError

_LISTED = 6  # classes named in a log line before "and N more"


def normalize_name(name: object) -> str:
    """The form names are compared in: whitespace runs -> one space, ends stripped, case folded."""
    return " ".join(str(name).split()).casefold()


def parse_class_map(items: str | Sequence[str] | Mapping[str, str] | None) -> dict[str, str]:
    """{model name: test name} from ``MODEL_NAME=TEST_NAME`` items (split at the first ``=``; the names
    are taken as written, matched by the name rule) and/or paths / URIs of YAML or JSON files holding such
    a mapping. None or empty -> {}. Raises `LabelMapError` naming the item or file."""
    if not items:
        return {}
    if isinstance(items, Mapping):
        return _checked_mapping(items, "class map")
    if isinstance(items, str):
        items = [items]
    out: dict[str, str] = {}
    for item in items:
        if "=" in item:
            model_name, _, test_name = item.partition("=")
            if not model_name.strip() or not test_name.strip():
                raise LabelMapError(f"expected MODEL_NAME=TEST_NAME, got {item!r}", field="class_map")
            pairs = {model_name.strip(): test_name.strip()}
        else:
            pairs = _read_mapping_file(item)
        for model_name, test_name in pairs.items():
            if model_name in out and out[model_name] != test_name:
                raise LabelMapError(f"class {model_name!r} is mapped twice: to {out[model_name]!r} and "
                                    f"{test_name!r}", field="class_map")
            out[model_name] = test_name
    return out


def _read_mapping_file(path: str) -> dict[str, str]:
    import yaml

    from synthgap.io import storage

    if not storage.exists(path):
        raise LabelMapError(f"{path!r} is neither MODEL_NAME=TEST_NAME nor a mapping file that exists",
                            field="class_map")
    try:
        raw = yaml.safe_load(storage.read_text(path))  # JSON is YAML too
    except yaml.YAMLError as e:
        raise LabelMapError(f"not YAML/JSON: {e}", file=path, field="class_map") from None
    if not isinstance(raw, Mapping):
        raise LabelMapError(f"expected a mapping {{model name: test name}}, got {type(raw).__name__}", file=path,
                            field="class_map")
    return _checked_mapping(raw, path)


def _checked_mapping(raw: Mapping, source: str) -> dict[str, str]:
    out = {}
    for k, v in raw.items():
        if not isinstance(k, (str, int)) or not isinstance(v, (str, int)) or isinstance(k, bool) or isinstance(v, bool):
            raise LabelMapError(f"entries must be name: name, got {k!r}: {v!r}", file=source, field="class_map")
        out[str(k)] = str(v)
    return out


@dataclasses.dataclass(frozen=True)
class LabelAlignment:
    """How a model's class ids map onto a test set's (see the module docstring).

    Attributes:
        model_to_test: model label id -> test label id of the same class (the classes evaluated).
        model_map, test_map: the two label maps as given (id -> name); ``model_map`` None when the model
            has none (then ``by == "id"``).
        model_only: model ids whose class the test set lacks (their detections are dropped).
        test_only: test ids whose class the model does not know (left out of the metrics).
        by: ``"name"``, ``"same"`` (identical maps) or ``"id"`` (the model has no label map).
        class_map: the explicit {model name: test name} pairs used.
        model_source, test_source: what the maps belong to, for messages.
    """

    model_to_test: dict[int, int]
    model_map: dict[int, str] | None
    test_map: dict[int, str]
    model_only: tuple[int, ...] = ()
    test_only: tuple[int, ...] = ()
    by: str = "name"
    class_map: dict[str, str] = dataclasses.field(default_factory=dict)
    model_source: str = "the model"
    test_source: str = "the test set"

    @property
    def renumbered(self) -> list[tuple[str, int, int]]:
        """(test name, model id, test id) of every matched class whose id differs."""
        return [(self.test_map[t], m, t) for m, t in self.model_to_test.items() if m != t]

    @property
    def identity(self) -> bool:
        """Every class has the same id on both sides and nothing is left out: ids can be used as they are."""
        return not self.renumbered and not self.model_only and not self.test_only

    @property
    def test_label_map(self) -> dict[int, str]:
        """The classes evaluated, in the test set's ids: {test id: test name}, in test-id order."""
        kept = set(self.model_to_test.values())
        return {k: v for k, v in sorted(self.test_map.items()) if k in kept}

    @property
    def model_label_map(self) -> dict[int, str]:
        """The classes evaluated, in the model's ids (names as the model has them)."""
        names = self.model_map if self.model_map is not None else self.test_map
        return {m: names[m] for m in sorted(self.model_to_test)}

    def log_line(self) -> str:
        """One line: how the classes were matched, ids that differ, what is left out on each side."""
        head = f"classes of {self.model_source} -> {self.test_source}: "
        if self.by == "id":
            text = (f"matched by id ({len(self.model_to_test)} classes): the model carries no label map "
                    "(a datasetinsights checkpoint?), so its ids are taken to be the test set's")
        elif self.by == "same":
            text = f"identical label maps ({len(self.model_to_test)} classes), ids used as they are"
        else:
            text = f"{len(self.model_to_test)} matched by name (case and whitespace ignored)"
            if self.class_map:
                text += " and by the class map (" + ", ".join(f"{k}={v}" for k, v in self.class_map.items()) + ")"
            moved = self.renumbered
            text += ("; ids renumbered " + _listed([f"{n} {m}->{t}" for n, m, t in moved])) if moved else "; same ids"
        if self.test_only:
            text += "; test classes the model does not know, left out of the metrics: " + _listed(
                [f"{self.test_map[t]} ({t})" for t in self.test_only])
        if self.model_only:
            text += "; model classes not in the test set, their detections dropped: " + _listed(
                [f"{self.model_map[m]} ({m})" for m in self.model_only])
        return head + text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (ids as JSON numbers, the maps' keys as strings)."""
        return {"by": self.by, "model_source": self.model_source, "test_source": self.test_source,
                "model_to_test": {str(m): t for m, t in self.model_to_test.items()},
                "test_classes": sorted(self.model_to_test.values()), "test_only": list(self.test_only),
                "model_only": list(self.model_only), "class_map": dict(self.class_map),
                "log": self.log_line()}

    def detections_to_test(self, detections: Iterable[Mapping]) -> tuple[list[dict], int]:
        """COCO result records in model ids -> (the records in test ids, number dropped: detections of
        model classes the test set lacks). Records are copied, their other fields kept."""
        mapping, out, dropped = self.model_to_test, [], 0
        for d in detections:
            t = mapping.get(int(d["category_id"]))
            if t is None:
                dropped += 1
                continue
            out.append({**d, "category_id": t})
        return out, dropped

    def test_samples(self, samples: Iterable[Sample], root: str | None = None) -> list[Sample]:
        """The test samples with the boxes of ``test_only`` classes dropped (test ids kept): the ground truth
        of the classes the model knows. ``root``: the dataset, where its per-box visible pixels are found, so
        AP by occlusion survives the dropped boxes."""
        if not self.test_only:
            return list(samples)
        return keep_classes(samples, self.model_to_test.values(), root=root)

    def model_samples(self, samples: Iterable[Sample]) -> list[Sample]:
        """The test samples relabelled into the model's ids (boxes of ``test_only`` classes dropped): ground
        truth to score the model's own detections against, with `model_label_map` (training's validation)."""
        samples = list(samples)
        if not self.renumbered and not self.test_only:
            return samples
        back = {t: m for m, t in self.model_to_test.items()}
        return [_select(s, set(back), back, None) for s in samples]


def keep_classes(samples: Iterable[Sample], labels: Iterable[int], root: str | None = None) -> list[Sample]:
    """``samples`` with only the boxes whose label is in ``labels`` (every per-box field follows). ``root``:
    the dataset, where its per-box visible pixels are found (`synthgap.data.visibility`); they go into each
    trimmed sample's metadata, so AP by occlusion survives the dropped boxes."""
    from synthgap.data.visibility import VisiblePixels

    keep, visible = {int(k) for k in labels}, VisiblePixels(root)  # reads the side table once
    return [_select(s, keep, None, visible) for s in samples]


def _listed(items: list[str]) -> str:
    more = len(items) - _LISTED
    return ", ".join(items[:_LISTED]) + (f" and {more} more" if more > 0 else "")


def _select(sample: Sample, keep: set[int], relabel: Mapping[int, int] | None, visible=None) -> Sample:
    """``sample`` with only the boxes whose label is in ``keep`` (every per-box field; the per-box visible
    pixels ``visible`` finds go into the metadata, or are dropped), labels mapped through ``relabel`` when
    given."""
    labels = [int(v) for v in sample.labels.tolist()]
    mask = np.array([v in keep for v in labels], dtype=bool)
    if mask.all() and relabel is None:
        return sample
    metadata = dict(sample.metadata or {})
    if not mask.all() and len(sample):
        found = visible(sample) if visible is not None else None  # a `synthgap.data.visibility.VisiblePixels`
        if found is not None and found[0][1] is not None:  # only the source with unoccluded counts gives fractions
            vis, full = found[0]
            metadata["visible_pixels"], metadata["full_pixels"] = vis[mask].tolist(), full[mask].tolist()
        elif "visible_pixels" in metadata:
            metadata.pop("visible_pixels")
            metadata.pop("full_pixels", None)
    kept = [v for v, k in zip(labels, mask.tolist()) if k]
    pick = (lambda seq: tuple(x for x, k in zip(seq, mask.tolist()) if k) if seq else seq)
    return dataclasses.replace(
        sample, boxes=sample.boxes[mask], labels=id_array([relabel[v] for v in kept] if relabel else kept),
        iscrowd=sample.iscrowd[mask], areas=None if sample.areas is None else sample.areas[mask],
        instance_ids=pick(sample.instance_ids), masks=pick(sample.masks), metadata=metadata)


def _names(label_map: Mapping[int, str], source: str, role: str) -> dict[str, int]:
    """normalized name -> id; a name twice is refused."""
    out: dict[str, int] = {}
    for k, v in label_map.items():
        key = normalize_name(v)
        if key in out:
            raise LabelMapError(f"{role} label ids {out[key]} and {k} are both named {v!r}: classes are matched "
                                "by name, so each name must be one class (rename one)", file=source,
                                record=f"label {k}", field="name", kind="duplicate_class_name")
        out[key] = int(k)
    return out


def align_label_maps(model_map: Mapping[int, str] | None, test_map: Mapping[int, str], *,
                     class_map: Mapping[str, str] | Sequence[str] | None = None, model_source: str = "the model",
                     test_source: str = "the test set") -> LabelAlignment:
    """Match the model's classes to the test set's by name (module docstring: the rule, what is refused,
    what is left out). ``class_map``: {model name: test name} for names that differ (or `parse_class_map`
    items). ``model_map`` None (a checkpoint without one): matched by id."""
    test = {int(k): str(v) for k, v in test_map.items()}
    pairs = parse_class_map(class_map)
    common = dict(model_source=str(model_source), test_source=str(test_source))
    if model_map is None:
        if pairs:
            raise LabelMapError("the model carries no label map (class names), so a class map cannot apply",
                                file=model_source, field="class_map")
        return LabelAlignment({k: k for k in test}, None, test, by="id", **common)
    model = {int(k): str(v) for k, v in model_map.items()}
    if model == test and not pairs:
        return LabelAlignment({k: k for k in model}, model, test, by="same", **common)
    model_names = _names(model, model_source, "model")
    test_names = _names(test, test_source, "test")
    model_to_test: dict[int, int] = {}
    explicit: dict[int, str] = {}
    for model_name, test_name in pairs.items():
        m, t = model_names.get(normalize_name(model_name)), test_names.get(normalize_name(test_name))
        if m is None:
            raise LabelMapError(f"class map entry {model_name}={test_name}: {model_name!r} is not a class of the "
                                f"model (its classes: {_listed(sorted(model.values()))})", file=model_source,
                                field="class_map", kind="unknown_class")
        if t is None:
            raise LabelMapError(f"class map entry {model_name}={test_name}: {test_name!r} is not a class of the "
                                f"test set (its classes: {_listed(sorted(test.values()))})", file=test_source,
                                field="class_map", kind="unknown_class")
        model_to_test[m] = t
        explicit[m] = f"{model_name}={test_name}"
    for key, m in model_names.items():
        if m not in model_to_test and key in test_names:
            model_to_test[m] = test_names[key]
    by_test: dict[int, int] = {}
    for m, t in sorted(model_to_test.items()):
        if t in by_test:
            a, b = by_test[t], m
            how = " and ".join(f"{model[x]!r} ({explicit[x]})" if x in explicit else f"{model[x]!r} (same name)"
                               for x in (a, b))
            raise LabelMapError(f"model classes {how} would both score as test class {test[t]!r} ({t}): fix the "
                                "class map so each test class gets one model class", file=test_source,
                                record=f"label {t}", field="class_map", kind="class_conflict")
        by_test[t] = m
    if not model_to_test:
        raise LabelMapError(f"no class of the model ({_listed(sorted(model.values()))}) is a class of the test set "
                            f"({_listed(sorted(test.values()))}): classes are matched by name; pair names that "
                            "differ with a class map (--class-map MODEL_NAME=TEST_NAME)", file=test_source,
                            field="categories", kind="no_common_class")
    order = dict(sorted(model_to_test.items()))
    return LabelAlignment(order, model, test, model_only=tuple(m for m in sorted(model) if m not in order),
                          test_only=tuple(t for t in sorted(test) if t not in by_test), by="name",
                          class_map={model[m]: test[order[m]] for m in explicit}, **common)


def check_label_maps(maps: Mapping[str, Mapping[int, str] | None], *,
                     same_ids: bool = False) -> dict[str, LabelAlignment]:
    """Check the label maps of datasets meant to be used together (a study: synthetic, real train, real
    test), before anything trains: each later map is aligned with the first by name (`align_label_maps`).

    Returns name -> `LabelAlignment` (first map as the model side) for every later map; log their
    `LabelAlignment.log_line`. Raises `LabelMapError` for a name twice in one map or a map sharing no
    class with the first; with ``same_ids``, also when a class has another id than in the first map
    (fine-tuning keeps the box predictor's rows only when the ids agree). ``maps`` None values are
    skipped."""
    named = [(name, m) for name, m in maps.items() if m is not None]
    if not named:
        return {}
    (first_name, first), out = named[0], {}
    _names(first, first_name, first_name)
    for name, m in named[1:]:
        _names(m, name, name)
        alignment = align_label_maps(first, m, model_source=first_name, test_source=name)
        if same_ids and alignment.renumbered:
            raise LabelMapError(f"numbers its classes differently from {first_name}: "
                                + _listed([f"{n} is {t} here, {mid} there" for n, mid, t in alignment.renumbered])
                                + f"; renumber one so the same class has the same id (a model trained on "
                                  f"{first_name} and fine-tuned here would re-learn its classifier)", file=name,
                                field="categories", kind="class_ids_differ")
        out[name] = alignment
    return out
