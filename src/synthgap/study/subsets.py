"""The study's splits and subsets: COCO files under ``OUT/subsets/`` that reference the original images,
written once (atomically) and reused by every cell and rerun.

``synthetic_train`` / ``synthetic_holdout`` (``synthetic_holdout`` of the synthetic images, never trained on),
``real_train_pool`` / ``real_val_holdout`` (``real_holdout`` of the real training split, when no
``datasets.real_val``), ``real_train_<pct>pct`` (the first <pct> % of the pool in one fixed random order,
``subset_seed``: 10 % is inside 50 %, datasetinsights' 76 / 380 / 760) and ``real_<which>_split_<name>`` (a
named split of a UnityGroceries-Real folder).

With ``datasets.real_group_by`` / ``synthetic_group_by`` (frames of one video, one session, one SOLO
sequence) these draws take whole groups, so that no group is on both sides of a holdout: near-copies of
training images in the in-domain test would flatter it. The holdouts come as close to their fraction as
whole groups allow (`holdout_draw`); the real subsets take whole groups in one seeded order of the groups
and stay nested (`synthgap.data.splits.nested_split`). Whole groups rarely give the share asked for: each grouped subset folder
holds ``drawn.json`` (its images and groups, of how many, and the share reached), which is logged and goes
into its ``made_from.json`` as ``drawn``.

Each subset folder also holds ``made_from.json`` (`subset_records`): the source it was drawn from (path,
format, split and `dataset_fingerprint`) and the settings that shape it (holdout fraction, budget,
``subset_seed``, the group spec when set). `prepare_subsets`, run by `synthgap.study.runner.run_study` before any cell, rebuilds a
subset whose record differs from what the config now names, so a rerun never trains on subsets of a dataset
the config no longer points at; ``OUT/subsets/sources.json`` holds the records of the configured datasets.
`check_test_images` refuses a test set that shares images with what the study trains on.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import TYPE_CHECKING, Any, Hashable, Sequence

import numpy as np

from synthgap.errors import DatasetError
from synthgap.io import storage
from synthgap.study.config import StudyConfig, fraction_tag, same_data, uses

if TYPE_CHECKING:
    from synthgap.data.splits import Draw

log = logging.getLogger(__name__)

MADE_FROM = "made_from.json"  # beside each subset's annotations.json, and in each cell folder (runner)
SOURCES = "sources.json"      # OUT/subsets/sources.json: the records of the datasets the config names
DRAWN = "drawn.json"          # beside a grouped draw's annotations.json (written first): the groups it took
# files whose bytes `dataset_fingerprint` reads: every reader's annotations (COCO, SOLO, Perception, Supervisely
# JSON; YOLO TXT/YAML) and the generator's tables (JSONL); other files (images) count by name and size
ANNOTATION_SUFFIXES = (".json", ".jsonl", ".txt", ".yaml", ".yml", ".csv", ".xml")


def _write_coco(ds, indices, path: str, source: str | None = None) -> str:
    """A COCO file of ``ds[i] for i in indices`` referencing the original images (written atomically).

    A COCO file has no place for visible pixels: when the dataset at ``source`` has them with the unoccluded
    count (the generator's per-frame table, or in the samples' metadata), they go into the subset's own
    table (``<folder>/generator/frames.subset.jsonl``, keyed by image id, written before the COCO file that
    marks the subset done), so AP by occlusion and the visible-fraction statistics work on the subset too."""
    from synthgap.data.coco import CocoWriter
    from synthgap.data.visibility import VisiblePixels, side_table_folder, write_side_table

    writer = CocoWriter(path, ds.label_map)
    visible = VisiblePixels(source) if source else None
    rows = []
    for i in indices:
        sample = ds[i]
        writer.add(sample)
        # only the sources with both counts (the others would re-read every SOLO frame for a fraction-less count)
        if visible is not None and (visible.table or "visible_pixels" in (sample.metadata or {})):
            found = visible(sample)
            if found is not None and found[1] in ("generator", "metadata") and found[0][1] is not None:
                rows.append({"frame": int(sample.image_id), "visible_pixels": found[0][0].tolist(),
                             "full_pixels": found[0][1].tolist()})
    if rows:
        write_side_table(side_table_folder(path), rows)
    return writer.close()


def holdout_split(n: int, fraction: float, seed: int, source: str,
                  groups: Sequence[Hashable] | None = None) -> tuple[list[int], list[int]]:
    """(kept, held out) sorted indices of ``n`` items (`holdout_draw`)."""
    d = holdout_draw(n, fraction, seed, source, groups)
    return d.rest.tolist(), d.taken.tolist()


def holdout_draw(n: int, fraction: float, seed: int, source: str, groups: Sequence[Hashable] | None = None,
                 group_by: str | None = None) -> "Draw":
    """The held-out part (``taken``) of ``n`` items: `synthgap.data.splits.seeded_split` holds out
    ``min(n - 1, max(1, round(fraction * n)))`` of them (the first of the seeded order); with ``groups`` (one
    key per item, from ``group_by``) whole groups instead, as close to that count as whole groups allow and
    at least one group on each side."""
    from synthgap.data.splits import seeded_split

    if n < 2:
        raise DatasetError(f"{n} image(s): at least 2 are needed to hold some out for the in-domain test",
                           file=source)
    if groups is not None and len(set(groups)) < 2:
        raise DatasetError(f"group_by {group_by!r} puts all {n} images in one group: holding some out for the "
                           "in-domain test needs at least 2 groups (group by something finer, or leave it unset)",
                           file=source, kind="one_group")
    return seeded_split(n, min(n - 1, max(1, int(round(fraction * n)))), seed, groups=groups)


def _drawn(group_by: str, part: np.ndarray, d: "Draw", n: int, held_out: bool) -> dict[str, Any]:
    """The record of one side of a grouped draw (``DRAWN``): its images and whole groups, of how many, and
    the share of the images it reached (``held_out``: ``part`` is the taken side)."""
    groups = d.groups_taken if held_out else d.groups - d.groups_taken
    return {"group_by": group_by, "images": int(len(part)), "of_images": int(n), "groups": int(groups),
            "of_groups": int(d.groups), "share": round(len(part) / n, 6) if n else 0.0}


def _real_groups(cfg: StudyConfig, ds) -> list[str] | None:
    """``datasets.real_group_by``'s key of each image of ``ds`` (the real training data or a subset the study
    wrote of it); None without one. A ``field:NAME`` comes from the real training data as configured, by
    image id: the study's COCO subsets keep file names and folders, not the readers' metadata."""
    from synthgap.data.splits import group_keys

    spec, d = cfg.datasets.real_group_by, cfg.datasets
    if not spec:
        return None
    if not spec.startswith("field:"):
        return group_keys(ds, spec)
    source = _open_real(cfg, d.real_train, d.real_train_split)
    by_id = dict(zip((s.image_id for s in source), group_keys(source, spec)))
    return [by_id[s.image_id] for s in ds]


def synthetic_split(cfg: StudyConfig, out: str) -> tuple[str, str]:
    """(train, held-out) COCO files of the synthetic dataset: ``synthetic_holdout`` of its images, drawn by
    ``subset_seed`` (whole ``datasets.synthetic_group_by`` groups when set), are held out for the synthetic
    model's in-domain test and never trained on."""
    from synthgap.data import open_dataset
    from synthgap.data.splits import group_keys

    train = storage.join(out, "subsets", "synthetic_train", "annotations.json")
    held = storage.join(out, "subsets", "synthetic_holdout", "annotations.json")
    if not (storage.exists(train) and storage.exists(held)):
        d = cfg.datasets
        ds = open_dataset(d.synthetic, d.synthetic_format)
        groups = group_keys(ds, d.synthetic_group_by) if d.synthetic_group_by else None
        draw = holdout_draw(len(ds), cfg.synthetic_holdout, cfg.subset_seed, d.synthetic, groups,
                            d.synthetic_group_by)
        if groups is not None:
            _write_drawn(out, "synthetic_holdout", _drawn(d.synthetic_group_by, draw.taken, draw, len(ds), True))
            _write_drawn(out, "synthetic_train", _drawn(d.synthetic_group_by, draw.rest, draw, len(ds), False))
        _write_coco(ds, draw.taken.tolist(), held, d.synthetic)
        _write_coco(ds, draw.rest.tolist(), train, d.synthetic)
        log.info("synthetic split: %d train, %d held out%s -> %s", len(draw.rest), len(draw.taken),
                 _groups_note(draw, d.synthetic_group_by, cfg.synthetic_holdout, groups is not None),
                 storage.join(out, "subsets"))
    return train, held


def _groups_note(d: "Draw", group_by: str | None, asked: float, grouped: bool) -> str:
    """For logs: the whole groups a grouped draw took and the share reached against the one asked for."""
    if not grouped:
        return ""
    return (f" (held out: {d.groups_taken} of {d.groups} {group_by} groups, {d.fraction:.1%} of the images; "
            f"asked {asked:.1%})")


def _write_drawn(out: str, name: str, record: dict[str, Any]) -> None:
    storage.write_json(storage.join(out, "subsets", name, DRAWN), record)


def _open_real(cfg: StudyConfig, root: str, split: str | None):
    from synthgap.data import open_dataset

    return open_dataset(root, cfg.datasets.real_format, **({"split": split} if split else {}))


def real_data(cfg: StudyConfig, which: str, out: str) -> tuple[str, str | None]:
    """(path, format) of the real ``train``, ``val`` or ``test`` data as configured: the path, or, when a
    split is named, that split written as a COCO file under ``out/subsets``."""
    d = cfg.datasets
    root, split = {"train": (d.real_train, d.real_train_split), "val": (d.real_val, d.real_val_split),
                   "test": (d.real_test, d.real_test_split)}[which]
    if not split:
        return root, d.real_format
    path = storage.join(out, "subsets", f"real_{which}_split_{split}", "annotations.json")
    if not storage.exists(path):
        ds = _open_real(cfg, root, split)
        _write_coco(ds, range(len(ds)), path, root)
        log.info("real %s split %r: %d images -> %s", which, split, len(ds), path)
    return path, "coco"


def real_pool_and_val(cfg: StudyConfig, out: str) -> tuple[tuple[str, str | None], tuple[str, str | None]]:
    """((path, format) of the real training pool, (path, format) of the real validation data).

    With ``datasets.real_val`` the pool is the whole real training split; otherwise ``real_holdout`` of
    it (drawn by ``subset_seed``; whole ``datasets.real_group_by`` groups when set) is the validation part
    and the rest is the pool."""
    if cfg.datasets.real_val:
        return real_data(cfg, "train", out), real_data(cfg, "val", out)
    pool = storage.join(out, "subsets", "real_train_pool", "annotations.json")
    val = storage.join(out, "subsets", "real_val_holdout", "annotations.json")
    if not (storage.exists(pool) and storage.exists(val)):
        from synthgap.data import open_dataset

        path, fmt = real_data(cfg, "train", out)
        ds = open_dataset(path, fmt)
        spec = cfg.datasets.real_group_by
        groups = _real_groups(cfg, ds)
        draw = holdout_draw(len(ds), cfg.real_holdout, cfg.subset_seed, path, groups, spec)
        if groups is not None:
            _write_drawn(out, "real_val_holdout", _drawn(spec, draw.taken, draw, len(ds), True))
            _write_drawn(out, "real_train_pool", _drawn(spec, draw.rest, draw, len(ds), False))
        _write_coco(ds, draw.taken.tolist(), val, path)
        _write_coco(ds, draw.rest.tolist(), pool, path)
        log.info("real validation: %d held out of %d training images%s -> %s", len(draw.taken), len(ds),
                 _groups_note(draw, spec, cfg.real_holdout, groups is not None), val)
    return (pool, "coco"), (val, "coco")


def real_subset(cfg: StudyConfig, fraction: float, out: str) -> str:
    """A COCO file with the first ``fraction`` of the real training pool in a fixed random order
    (``subset_seed``, `synthgap.data.splits.nested_split`; whole ``datasets.real_group_by`` groups when set, the share reached
    logged and recorded in its ``drawn.json``), referencing the original images; written once and reused."""
    from synthgap.data import open_dataset
    from synthgap.data.splits import nested_split

    name = f"real_train_{fraction_tag(fraction)}pct"
    path = storage.join(out, "subsets", name, "annotations.json")
    if storage.exists(path):
        return path
    (pool, fmt), _ = real_pool_and_val(cfg, out)
    ds = open_dataset(pool, fmt)
    n = max(1, int(round(fraction * len(ds))))
    groups = _real_groups(cfg, ds)
    draw = nested_split(len(ds), n, cfg.subset_seed, groups=groups)
    if groups is None:
        _write_coco(ds, draw.taken.tolist(), path, pool)
        log.info("real subset %s %%: %d of %d images -> %s", fraction_tag(fraction), n, len(ds), path)
        return path
    spec = cfg.datasets.real_group_by
    _write_drawn(out, name, _drawn(spec, draw.taken, draw, len(ds), True))
    _write_coco(ds, draw.taken.tolist(), path, pool)
    off = abs(draw.fraction - fraction) > 0.25 * fraction  # the nested whole groups came nowhere near the budget
    log.log(logging.WARNING if off else logging.INFO,
            "real subset %s %%: %d of %d images in %d of %d %s groups (%.1f%% of the pool%s) -> %s",
            fraction_tag(fraction), len(draw.taken), len(ds), draw.groups_taken, draw.groups, spec,
            100 * draw.fraction, "; the nested whole groups come no nearer: the cell's name says the budget asked, "
            "its made_from.json the share reached" if off else "", path)
    return path


def in_domain_data(cfg: StudyConfig, kind: str, out: str) -> tuple[str, str | None]:
    """Held-out data of the domain a cell kind trains on: synthetic for ``synthetic``, real validation
    for ``real`` and ``finetune`` (whose last training domain is real)."""
    if kind == "synthetic":
        return synthetic_split(cfg, out)[1], "coco"
    return real_pool_and_val(cfg, out)[1]


# ---------------------------------------------------------------------------------------------
# what each subset was made from


def dataset_fingerprint(path: str, format: str | None = None, split: str | None = None) -> str:
    """sha256 (hex) of a dataset as the study reads it: equal on a rerun when its images and boxes are.

    A local folder: the relative path and size (bytes) of every file in sorted order, and the content of its
    annotation files (`ANNOTATION_SUFFIXES`); images count by name and size only (hidden files, such as
    lock files and ``.synthgap-complete``, are left out). Reading annotations costs about what the study's
    first pass over them does, without decoding an image (BENCHMARKS.md, "Study fingerprints"). A local
    file (a COCO JSON): its bytes; a YAML or TXT file (YOLO's ``data.yaml``, an image list) also the folder
    holding it. A URI (gs://, s3://, http(s)): the samples as the reader yields them (image, size, boxes,
    labels, crowd flags) and the label map, which reads every annotation once."""
    h = hashlib.sha256()
    if storage.is_local(path):
        local = storage.local_path(path)
        if os.path.isfile(local):
            _hash_file(h, local)
            if not local.lower().endswith(".json"):
                _hash_folder(h, os.path.dirname(local) or ".")
        else:
            _hash_folder(h, local)
        return h.hexdigest()
    from synthgap.data import open_dataset

    ds = open_dataset(path, format, **({"split": split} if split else {}))
    h.update(repr(sorted(ds.label_map.items())).encode())
    for s in ds:
        h.update(f"{s.image}|{s.width}|{s.height}|".encode())
        for array in (s.boxes.astype("float64"), s.labels.astype("int64"), s.iscrowd.astype("int64")):
            h.update(array.tobytes())
    return h.hexdigest()


def _hash_file(h, path: str) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def _hash_folder(h, root: str) -> None:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = os.path.relpath(folder, root)
        for name in sorted(f for f in files if not f.startswith(".")):
            full = os.path.join(folder, name)
            h.update(f"{os.path.normpath(os.path.join(rel, name))}|{os.path.getsize(full)}\n".encode())
            if name.lower().endswith(ANNOTATION_SUFFIXES):
                _hash_file(h, full)


def source_records(cfg: StudyConfig) -> dict[str, dict[str, Any]]:
    """Every dataset the config names: ``datasets`` key (``synthetic``, ``real_train``, ``real_val``,
    ``real_test``) -> {"path", "format", "split", "fingerprint"} (`dataset_fingerprint`; a folder named by
    several keys is read once)."""
    d, cache, out = cfg.datasets, {}, {}
    for key, fmt, split in (("synthetic", d.synthetic_format, None), ("real_train", d.real_format, d.real_train_split),
                            ("real_val", d.real_format, d.real_val_split), ("real_test", d.real_format, d.real_test_split)):
        path = getattr(d, key)
        if not path:
            continue
        memo = path if storage.is_local(path) else (path, fmt, split)  # a local fingerprint has no split
        if memo not in cache:
            cache[memo] = dataset_fingerprint(path, fmt, split)
        out[key] = {"path": path, "format": fmt, "split": split, "fingerprint": cache[memo]}
    return out


def subset_records(cfg: StudyConfig, sources: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What each split and subset the study writes is made from: subset folder name (under ``OUT/subsets``)
    -> {"source": its dataset's `source_records` entry, and the settings that shape it}. Only the subsets the
    config's cells read. A ``*_group_by`` key is there only when set (the records of ungrouped studies stay
    as older synthgap wrote them); `prepare_subsets` adds what a grouped draw reached (``drawn``)."""
    d, out = cfg.datasets, {}
    if uses(cfg, "synthetic"):
        for name in ("synthetic_train", "synthetic_holdout"):
            out[name] = {"source": sources["synthetic"], "synthetic_holdout": cfg.synthetic_holdout,
                         "subset_seed": cfg.subset_seed,
                         **({"synthetic_group_by": d.synthetic_group_by} if d.synthetic_group_by else {})}
    for which, split in (("train", d.real_train_split), ("val", d.real_val_split), ("test", d.real_test_split)):
        if split and f"real_{which}" in sources:
            out[f"real_{which}_split_{split}"] = {"source": sources[f"real_{which}"]}
    if uses(cfg, "real_train"):
        pool = {"source": sources["real_train"], "validation": "datasets.real_val" if d.real_val else "held out",
                "real_holdout": None if d.real_val else cfg.real_holdout, "subset_seed": cfg.subset_seed,
                **({"real_group_by": d.real_group_by} if d.real_group_by else {})}
        if not d.real_val:
            out["real_train_pool"] = out["real_val_holdout"] = pool
        for f in cfg.fractions:
            out[f"real_train_{fraction_tag(f)}pct"] = {**pool, "fraction": f}
    return out


def _warn_same_subsets(cfg: StudyConfig, out: str) -> None:
    """Warn when whole groups make two budgets the same subset (nested: the same size is the same images):
    their cells would train on the same data under two names."""
    if not cfg.datasets.real_group_by:
        return
    by_size: dict[int, list[str]] = {}
    for f in cfg.fractions:
        drawn = storage.join(out, "subsets", f"real_train_{fraction_tag(f)}pct", DRAWN)
        if storage.exists(drawn):
            by_size.setdefault(storage.read_json(drawn)["images"], []).append(f"{fraction_tag(f)} %")
    for size, names in by_size.items():
        if len(names) > 1:
            log.warning("real_group_by %r: the real subsets %s are the same %d images (whole groups); their cells "
                        "train on the same data: choose budgets further apart, or finer groups",
                        cfg.datasets.real_group_by, " and ".join(names), size)


def made_from(out: str, name: str) -> dict[str, Any] | None:
    """The record written beside subset ``name`` (None: none written), or ``sources`` for `SOURCES`."""
    path = storage.join(out, "subsets", SOURCES if name == "sources" else storage.join(name, MADE_FROM))
    return storage.read_json(path) if storage.exists(path) else None


def record_changes(old: dict[str, Any] | None, new: dict[str, Any] | None, prefix: str = "") -> list[str]:
    """What differs between two records, one "key: old -> new" item per dotted key (fingerprints shortened)."""
    old, new = old or {}, new or {}
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) or isinstance(b, dict):
            out += record_changes(a if isinstance(a, dict) else {}, b if isinstance(b, dict) else {},
                                  f"{prefix}{key}.")
        elif a != b:
            short = (lambda v: v[:12] if key == "fingerprint" and isinstance(v, str) else v)
            out.append(f"{prefix}{key}: {short(a)!r} -> {short(b)!r}")
    return out


def prepare_subsets(cfg: StudyConfig, out: str) -> dict[str, dict[str, Any]]:
    """Write every split and subset the cells read, each with its ``made_from.json``; a subset made from
    other data or settings (or with no record) is removed and written again, and the change logged.
    Writes ``OUT/subsets/sources.json``; returns the subsets' records (`subset_records`)."""
    sources = source_records(cfg)
    expected = subset_records(cfg, sources)
    for name, record in expected.items():
        folder, found = storage.join(out, "subsets", name), made_from(out, name)
        if found is not None:
            found = {k: v for k, v in found.items() if k != "drawn"}  # an outcome of the settings, not one
        if storage.exists(storage.join(folder, "annotations.json")) and found != record:
            changes = record_changes(found, record) if found else [f"no {MADE_FROM}"]
            log.warning("subsets/%s was made from other data or settings (%s): writing it again", name,
                        "; ".join(changes))
            storage.remove(folder)
    if uses(cfg, "synthetic"):
        synthetic_split(cfg, out)
    for which in ("train", "val", "test"):
        if f"real_{which}_split_{getattr(cfg.datasets, f'real_{which}_split')}" in expected:
            real_data(cfg, which, out)
    if uses(cfg, "real_train"):
        real_pool_and_val(cfg, out)
        for fraction in cfg.fractions:
            real_subset(cfg, fraction, out)
        _warn_same_subsets(cfg, out)
    for name, record in expected.items():
        drawn = storage.join(out, "subsets", name, DRAWN)
        if any(k.endswith("_group_by") for k in record) and storage.exists(drawn):  # the groups and share reached
            expected[name] = record = {**record, "drawn": storage.read_json(drawn)}
        if made_from(out, name) != record:
            storage.write_json(storage.join(out, "subsets", name, MADE_FROM), record)
    storage.write_json(storage.join(out, "subsets", SOURCES), sources)
    return expected


# ---------------------------------------------------------------------------------------------
# test images never trained on


def _resolved(path: str) -> str:
    return os.path.realpath(storage.local_path(path)) if storage.is_local(path) else path


def _image_keys(sample, source: str | None) -> list[tuple]:
    """What identifies an image: its resolved path, its file (device, inode: hard links too) and, with
    ``source`` (the dataset it came from), its image id in that source."""
    keys: list[tuple] = [("path", _resolved(sample.image))]
    if storage.is_local(sample.image):
        try:
            st = os.stat(storage.local_path(sample.image))
            keys.append(("file", st.st_dev, st.st_ino))
        except OSError:
            pass
    if source is not None:
        keys.append(("id", source, int(sample.image_id)))
    return keys


def check_test_images(cfg: StudyConfig, out: str) -> None:
    """Refuse a target test set that shares an image with what the study trains on (the synthetic training
    split, the real training split): the same file (resolved path, or the same device and inode), or, when
    both come from one dataset (another split of it), the same image id. Raises DatasetError naming the
    test data, how many of its images are shared and one of them."""
    from synthgap.data import open_dataset

    d = cfg.datasets
    test = list(open_dataset(*real_data(cfg, "test", out)))
    trained = []
    if uses(cfg, "synthetic"):
        trained.append(("datasets.synthetic", d.synthetic, None, (synthetic_split(cfg, out)[0], "coco")))
    if uses(cfg, "real_train"):
        trained.append(("datasets.real_train", d.real_train, d.real_train_split, real_data(cfg, "train", out)))
    for key, root, split, (path, fmt) in trained:
        source = _resolved(root) if same_data(root, None, d.real_test, None) else None  # splits of one dataset
        seen = {k: s for s in open_dataset(path, fmt) for k in _image_keys(s, source)}
        shared = []
        for t in test:
            match = next((seen[k] for k in _image_keys(t, source) if k in seen), None)
            if match is not None:
                shared.append((t, match))
        if shared:
            (t, other), where = shared[0], root + (f", split {split!r}" if split else "")
            raise DatasetError(
                f"{len(shared)} of {len(test)} test images (datasets.real_test"
                + (f", split {d.real_test_split!r}" if d.real_test_split else "") + f") are also training images "
                f"of {key} ({where}), e.g. {t.image} (id {t.image_id}) is {other.image} (id {other.image_id}) "
                "there: every model would be scored on images it was trained on; test on images the study never "
                "trains on (another folder, or disjoint splits: real_train_split / real_test_split)",
                file=d.real_test, record=f"image {t.image_id}", field="file_name", kind="test_overlap")
