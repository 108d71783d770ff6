"""The study's splits and subsets: COCO files under ``OUT/subsets/`` that reference the original images,
written once (atomically) and reused by every cell and rerun.

``synthetic_train`` / ``synthetic_holdout`` (``synthetic_holdout`` of the synthetic images, never trained on),
``real_train_pool`` / ``real_val_holdout`` (``real_holdout`` of the real training split, when no
``datasets.real_val``), ``real_train_<pct>pct`` (the first <pct> % of the pool in one fixed random order,
``subset_seed``: 10 % is inside 50 %, datasetinsights' 76 / 380 / 760) and ``real_<which>_split_<name>`` (a
named split of a UnityGroceries-Real folder).
"""

from __future__ import annotations

import logging

from synthgap.errors import DatasetError
from synthgap.io import storage
from synthgap.study.config import StudyConfig, fraction_tag

log = logging.getLogger(__name__)


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


def holdout_split(n: int, fraction: float, seed: int, source: str) -> tuple[list[int], list[int]]:
    """(kept, held out) sorted indices of ``n`` items: `synthgap.data.splits.seeded_split` holds out
    ``min(n - 1, max(1, round(fraction * n)))`` of them (the first of the seeded order)."""
    from synthgap.data.splits import seeded_split

    if n < 2:
        raise DatasetError(f"{n} image(s): at least 2 are needed to hold some out for the in-domain test",
                           file=source)
    d = seeded_split(n, min(n - 1, max(1, int(round(fraction * n)))), seed)
    return d.rest.tolist(), d.taken.tolist()


def synthetic_split(cfg: StudyConfig, out: str) -> tuple[str, str]:
    """(train, held-out) COCO files of the synthetic dataset: ``synthetic_holdout`` of its images, drawn by
    ``subset_seed``, are held out for the synthetic model's in-domain test and never trained on."""
    from synthgap.data import open_dataset

    train = storage.join(out, "subsets", "synthetic_train", "annotations.json")
    held = storage.join(out, "subsets", "synthetic_holdout", "annotations.json")
    if not (storage.exists(train) and storage.exists(held)):
        ds = open_dataset(cfg.datasets.synthetic, cfg.datasets.synthetic_format)
        keep, hold = holdout_split(len(ds), cfg.synthetic_holdout, cfg.subset_seed, cfg.datasets.synthetic)
        _write_coco(ds, hold, held, cfg.datasets.synthetic)
        _write_coco(ds, keep, train, cfg.datasets.synthetic)
        log.info("synthetic split: %d train, %d held out -> %s", len(keep), len(hold), storage.join(out, "subsets"))
    return train, held


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
    it (drawn by ``subset_seed``) is the validation part and the rest is the pool."""
    if cfg.datasets.real_val:
        return real_data(cfg, "train", out), real_data(cfg, "val", out)
    pool = storage.join(out, "subsets", "real_train_pool", "annotations.json")
    val = storage.join(out, "subsets", "real_val_holdout", "annotations.json")
    if not (storage.exists(pool) and storage.exists(val)):
        from synthgap.data import open_dataset

        path, fmt = real_data(cfg, "train", out)
        ds = open_dataset(path, fmt)
        keep, hold = holdout_split(len(ds), cfg.real_holdout, cfg.subset_seed, path)
        _write_coco(ds, hold, val, path)
        _write_coco(ds, keep, pool, path)
        log.info("real validation: %d held out of %d training images -> %s", len(hold), len(ds), val)
    return (pool, "coco"), (val, "coco")


def real_subset(cfg: StudyConfig, fraction: float, out: str) -> str:
    """A COCO file with the first ``fraction`` of the real training pool in a fixed random order
    (``subset_seed``, `synthgap.data.splits.seeded_split`), referencing the original images; written once
    and reused."""
    from synthgap.data import open_dataset
    from synthgap.data.splits import seeded_split

    path = storage.join(out, "subsets", f"real_train_{fraction_tag(fraction)}pct", "annotations.json")
    if storage.exists(path):
        return path
    (pool, fmt), _ = real_pool_and_val(cfg, out)
    ds = open_dataset(pool, fmt)
    n = max(1, int(round(fraction * len(ds))))
    _write_coco(ds, seeded_split(len(ds), n, cfg.subset_seed).taken.tolist(), path, pool)
    log.info("real subset %s %%: %d of %d images -> %s", fraction_tag(fraction), n, len(ds), path)
    return path


def in_domain_data(cfg: StudyConfig, kind: str, out: str) -> tuple[str, str | None]:
    """Held-out data of the domain a cell kind trains on: synthetic for ``synthetic``, real validation
    for ``real`` and ``finetune`` (whose last training domain is real)."""
    if kind == "synthetic":
        return synthetic_split(cfg, out)[1], "coco"
    return real_pool_and_val(cfg, out)[1]
