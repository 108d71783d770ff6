"""The dataset-evaluation study: how much is a synthetic dataset worth for a detector of real images?

Cells (`synthgap.study.config`; each repeated over ``seeds``), all evaluated on the target test split with
both protocols: ``synthetic`` (train on the synthetic dataset less ``synthetic_holdout``), ``real-<pct>``
(from scratch on the first <pct> % of the real training pool) and ``finetune-<pct>`` (the synthetic model of
the same seed fine-tuned on the same subset). ``real-<pct>`` against ``finetune-<pct>`` is datasetinsights'
headline comparison: same real images, same seeds, with and without synthetic pretraining.

Every model is also evaluated in its own domain: the synthetic model on the held-out synthetic images,
real and fine-tuned models on the real validation part (`synthgap.study.subsets`). A cell whose in-domain
COCO AP50 is below ``in_domain_floor`` did not learn, and its target numbers say nothing about the dataset:
it is flagged wherever its numbers appear (summary.json, the CLI, the report).

Layout of ``out``: ``cells/<cell>/seed<k>/`` holds ``checkpoints/``, ``tb/``, what `synthgap evaluate
--output` writes for the target test split (``predictions.json``, ``metrics_<protocol>.json``,
``per_class_<protocol>.txt``), the same for the in-domain data under ``in_domain/``, a ``run.json`` for
the report, and ``metrics.json``, written atomically LAST: a cell is finished when its ``metrics.json``
exists, and a rerun skips finished cells (an unfinished one resumes from its last checkpoint). Splits and
subsets are COCO files referencing the original images (``subsets/``). The study ends with
``summary.json`` (`synthgap.study.summary`: mean +/- std over seeds, in-domain numbers, the per-budget
comparison with its intervals, the conclusions in words) and ``summary.txt`` (the same as the CLI prints it,
`synthgap.study.text`); ``report.html`` is the report package's (`synthgap.report.write_study_report`).

Before anything trains, `run_study` checks the data: the test set is not a training set and shares no image
with one (`synthgap.study.subsets.check_test_images`), the datasets' label maps match by class name
(`check_study_label_maps`), every subset was made from the data the config names (rebuilt otherwise:
`synthgap.study.subsets.prepare_subsets`), and every cell that already trained did so on those data
(`check_cells`: each cell folder's ``made_from.json``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any

import yaml

from synthgap.config import Config
from synthgap.errors import StudyError, SynthgapError
from synthgap.io import locks, storage
from synthgap.study.config import (StudyConfig, cell_dir, cell_kind, cell_names, fraction_tag, is_finished,
                                   load_study_config, uses)
from synthgap.study.subsets import (MADE_FROM, check_test_images, in_domain_data, made_from, prepare_subsets,
                                    real_data, real_subset, record_changes, synthetic_split)
from synthgap.study.summary import (HEADLINE, NOT_LEARNED, StudySummary, add_bootstrap, cell_docs, cell_row, compare,
                                    feature_gap_summary, metric_name, metric_value, short_target_name,
                                    target_test_name)
from synthgap.study.text import conclusions, format_summary

log = logging.getLogger(__name__)


def epochs_for_steps(images: int, tcfg: Config, steps: int) -> int:
    """Epochs over ``images`` training images that make at least ``steps`` optimizer steps."""
    batches = math.ceil(images / tcfg.train.batch_size)
    if tcfg.train.max_steps_per_epoch:
        batches = min(batches, tcfg.train.max_steps_per_epoch)
    per_epoch = math.ceil(batches / tcfg.train.accumulation_steps)
    return max(1, math.ceil(steps / per_epoch))


# ---------------------------------------------------------------------------------------------
# running


def run_cell(cfg: StudyConfig, out: str, cell: str, seed: int, progress: bool = False) -> dict[str, Any]:
    """Train (or resume) one cell, evaluate it on the target test split and in its own domain;
    returns its metrics.json document."""
    from synthgap.models.checkpoint import checkpoint_name
    from synthgap.data import open_dataset
    from synthgap.engine.evaluate import evaluate_checkpoint
    from synthgap.engine.train import train

    folder = cell_dir(out, cell, seed)
    kind, fraction = cell_kind(cfg, cell)
    tcfg = cfg.train_cfg(kind, seed)
    ckpt_dir = storage.join(folder, "checkpoints")
    tb_dir = storage.join(folder, "tb")
    last = storage.join(ckpt_dir, checkpoint_name("last"))
    start = None
    if kind == "synthetic":
        data = synthetic_split(cfg, out)[0]
    else:
        data = real_subset(cfg, fraction, out)
    if kind == "finetune":
        start = storage.join(cell_dir(out, "synthetic", seed), "checkpoints", checkpoint_name("last"))
        if not storage.exists(start) and not storage.exists(last):
            raise FileNotFoundError(f"{cell} seed {seed} starts from {start}, which does not exist "
                                    f"(the synthetic cell must run first; is 'synthetic' in cells?)")
    images = len(open_dataset(data, "coco"))
    if cfg.real_steps and kind != "synthetic":
        tcfg = dataclasses.replace(tcfg, train=dataclasses.replace(
            tcfg.train, epochs=epochs_for_steps(images, tcfg, cfg.real_steps)))
    # the study hands train/evaluate exactly the data it means: every image of each file (split "all"); the
    # training file is COCO, test files are read with their own format (None: detected), never the train's
    tcfg = dataclasses.replace(tcfg, data=dataclasses.replace(tcfg.data, format=None, train_split="all",
                                                              test_split="all"))
    resume = storage.exists(last)
    storage.write_json(storage.join(folder, MADE_FROM), cell_record(cfg, out, cell))  # what check_cells compares
    t0 = time.perf_counter()
    log.info("study cell %s seed %d: %s on %s (%d images)", cell, seed, "resuming" if resume else "training",
             data, images)
    summary = train(tcfg, train_data=data, checkpoint_dir=ckpt_dir, tb_log_dir=tb_dir,
                    checkpoint_file=None if resume else start, resume=resume, no_val=True, progress=progress)
    test, test_format = real_data(cfg, "test", out)
    own, own_format = in_domain_data(cfg, kind, out)
    stats = {}
    for name, path, fmt, where in (("target", test, test_format, folder),
                                   ("in_domain", own, own_format, storage.join(folder, "in_domain"))):
        done = evaluate_checkpoint(last, path, where, config=tcfg, test_format=fmt, progress=progress)
        stats[name] = {protocol: {k: float(v) for k, v in r.stats.items()} for protocol, r in done["results"].items()}
    own_headline = metric_value(stats["in_domain"], HEADLINE)
    learned = own_headline is not None and own_headline >= cfg.in_domain_floor
    shown = "n/a" if own_headline is None else f"{own_headline:.3f}"
    warning = None if learned else (f"{NOT_LEARNED} (in-domain {metric_name(HEADLINE)} {shown} < floor "
                                    f"{cfg.in_domain_floor:g})")
    if warning:
        log.warning("study cell %s seed %d %s", cell, seed, warning)
    storage.write_json(storage.join(folder, "run.json"), {
        "name": f"{cell} seed{seed}", "cell": cell, "seed": seed, "train_data": data, "test_data": test,
        "format": test_format, "tb_log_dir": "tb", "checkpoint": last, "start_from": start,
        "in_domain_data": own, f"in_domain {metric_name(HEADLINE)}": own_headline, "learned": learned,
        "warning": warning})
    doc = {"cell": cell, "kind": kind, "fraction": fraction, "seed": seed, "train_data": data, "train_images": images,
           "test_data": test, "metrics": stats["target"],
           "in_domain": {"data": own, "metrics": stats["in_domain"]}, "learned": learned,
           "in_domain_floor": cfg.in_domain_floor,
           "train": {k: summary.get(k) for k in ("epochs", "steps", "images_per_s")},
           "seconds": round(time.perf_counter() - t0, 1)}
    storage.write_json(storage.join(folder, "metrics.json"), doc)  # last: marks the cell finished
    return doc


def run_seed(cfg: StudyConfig, out: str, seed: int, progress: bool = False, threads: int | None = None) -> None:
    """Run the unfinished cells of one seed in order (a finetune cell starts from that seed's synthetic
    cell). ``threads``: torch threads of this process (set in the worker processes of `run_seeds_side_by_side`)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    for cell in cell_names(cfg):
        if is_finished(out, cell, seed):
            log.info("study cell %s seed %d: finished, skipped", cell, seed)
            continue
        run_cell(cfg, out, cell, seed, progress=progress)


def _seed_worker(cfg: StudyConfig, out: str, seed: int, threads: int, level: int) -> str | None:
    """`run_seed` in a spawned process: returns None, or the error as one line (exceptions with keyword
    fields do not always survive pickling back to the parent)."""
    logging.basicConfig(level=level, format=f"[seed {seed}] %(message)s")
    try:
        run_seed(cfg, out, seed, progress=False, threads=threads)
        return None
    except Exception as e:  # reported by the parent, with the seed
        return f"{type(e).__name__}: {e}"


def run_seeds_side_by_side(cfg: StudyConfig, out: str, seeds: list[int], jobs: int) -> None:
    """Run ``seeds`` in ``jobs`` spawned processes, each with torch's threads / jobs threads. The shared subset
    files must exist (`run_study` writes them first, `prepare_subsets`), so that no two processes write one
    file. No progress bars: each process logs its cells' lines, prefixed with its seed."""
    import concurrent.futures
    import multiprocessing

    import torch

    threads = max(1, torch.get_num_threads() // jobs)  # torch's thread count stands for the cores, as in predict
    log.info("study: seeds %s in %d processes side by side, %d torch thread(s) each", seeds, jobs, threads)
    level = logging.getLogger("synthgap").getEffectiveLevel()
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {seed: pool.submit(_seed_worker, cfg, out, seed, threads, level) for seed in seeds}
        errors = [f"seed {seed}: {error}" for seed, f in futures.items() if (error := f.result())]
    if errors:
        raise SynthgapError("study cells failed: " + "; ".join(errors))


def run_study(config: StudyConfig | str, out: str, progress: bool = False) -> str:
    """Check the study's data (the module docstring: nothing trains on data it should not), run every
    unfinished cell x seed, then write summary.json and summary.txt; returns the path of summary.json.
    The HTML report is written from the finished folder by `synthgap.report.write_study_report`."""
    cfg = load_study_config(config) if isinstance(config, str) else config.validate()
    # run.json files record data paths that the report resolves later, from any working directory
    out = storage.absolute(out)
    with locks.lock_folder(out, "synthgap study"):  # one study run per folder at a time (synthgap.io.locks)
        cfg = dataclasses.replace(cfg, datasets=dataclasses.replace(cfg.datasets, **{
            key: storage.absolute(getattr(cfg.datasets, key))
            for key in ("synthetic", "real_train", "real_test", "real_val") if getattr(cfg.datasets, key)}))
        saved, text = storage.join(out, "study.yaml"), yaml.safe_dump(cfg.to_dict(), sort_keys=False)
        if storage.exists(saved) and storage.read_text(saved) != text:
            log.warning("%s: the study config changed since the last run; a cell whose data changed is refused "
                        "(made_from.json), other finished cells are kept as they are (delete a cell's folder to "
                        "train it again with the new settings)", saved)
        prepare_subsets(cfg, out)
        check_test_images(cfg, out)
        check_study_label_maps(cfg, out)
        check_cells(cfg, out)
        storage.write_text(saved, text)
        seeds = [s for s in cfg.seeds if not all(is_finished(out, c, s) for c in cell_names(cfg))]
        jobs = min(cfg.jobs, len(seeds))
        if jobs <= 1:
            for seed in cfg.seeds:
                run_seed(cfg, out, seed, progress)
        else:
            run_seeds_side_by_side(cfg, out, seeds, jobs)
        # after every cell: the feature distance uses the trained synthetic model's backbone
        stats = data_stats(cfg, out) if cfg.data_stats else None
        summary = summarize(cfg, out, stats)
        path = storage.join(out, "summary.json")
        storage.write_json(path, summary.to_dict())
        storage.write_text(storage.join(out, "summary.txt"), format_summary(summary) + "\n")  # for a write-up
        return path


def summarize(cfg: StudyConfig, out: str, stats: dict[str, Any] | None = None) -> StudySummary:
    """Every finished cell over seeds (target metrics, in-domain metrics, transfer ratio, learned flag), the
    per-budget comparison, the feature distance beside the AP gap (from ``stats``, a `data_stats` document)
    and the conclusions (`synthgap.study.text`): what summary.json holds (`StudySummary.to_dict`)."""
    docs = {cell: d for cell in cell_names(cfg) if (d := cell_docs(cfg, out, cell))}
    rows = {cell: cell_row(cfg, cell, d) for cell, d in docs.items()}
    summary = StudySummary(rows=list(rows.values()), comparison=add_bootstrap(cfg, out, compare(cfg, docs, rows)),
                           in_domain_floor=cfg.in_domain_floor, target_name=cfg.target_name,
                           feature_gap=feature_gap_summary(cfg, out, stats))
    return dataclasses.replace(summary, conclusions=conclusions(summary))


# ---------------------------------------------------------------------------------------------
# the data checks before anything trains


def check_study_label_maps(cfg: StudyConfig, out: str) -> dict:
    """Match the label maps of the study's datasets by class name (`synthgap.data.labels.check_label_maps`)
    before anything trains: the synthetic set's with every real set's (the synthetic model is tested on the
    real test set, and fine-tuned on the real training subset), and the real training set's with the real
    validation and test sets'. Logs how each pair was matched (a warning when classes are left out of one
    side's metrics); raises `synthgap.errors.LabelMapError` naming the dataset and the classes when names
    conflict (a name twice in one map, no class in common). Ids may differ: training, fine-tuning and every
    evaluation match classes by name. Returns "A -> B" -> `LabelAlignment`."""
    from synthgap.data import open_dataset
    from synthgap.data.labels import check_label_maps

    d, maps = cfg.datasets, {}
    if uses(cfg, "synthetic"):  # the split's COCO file holds the synthetic set's label map, and opens fast
        maps[f"datasets.synthetic ({d.synthetic})"] = open_dataset(synthetic_split(cfg, out)[0], "coco").label_map
    real = {}
    if uses(cfg, "real_train"):
        real[f"datasets.real_train ({d.real_train})"] = open_dataset(*real_data(cfg, "train", out)).label_map
        if d.real_val:
            real[f"datasets.real_val ({d.real_val})"] = open_dataset(*real_data(cfg, "val", out)).label_map
    real[f"datasets.real_test ({d.real_test})"] = open_dataset(*real_data(cfg, "test", out)).label_map
    found = {}
    for group in ({**maps, **real}, real if maps and len(real) > 1 else {}):
        for name, alignment in check_label_maps(group).items():
            found[f"{alignment.model_source} -> {name}"] = alignment
            left_out = alignment.test_only or alignment.model_only
            log.log(logging.WARNING if left_out else logging.INFO, "study: %s", alignment.log_line())
    return found


def cell_record(cfg: StudyConfig, out: str, cell: str) -> dict[str, Any]:
    """What a cell is made from (its ``made_from.json``, written before it trains): ``train`` and, for a
    finetune cell, ``start`` (the synthetic model's training data) are the records of the subsets it trains
    on (`synthgap.study.subsets.made_from`); ``test`` and ``in_domain``, of the data it is evaluated on."""
    kind, fraction = cell_kind(cfg, cell)
    sources = made_from(out, "sources") or {}
    if kind == "synthetic":
        train, in_domain = made_from(out, "synthetic_train"), made_from(out, "synthetic_holdout")
    else:
        train = made_from(out, f"real_train_{fraction_tag(fraction)}pct")
        in_domain = sources.get("real_val") if cfg.datasets.real_val else made_from(out, "real_val_holdout")
    return {"train": train, "start": made_from(out, "synthetic_train") if kind == "finetune" else None,
            "test": sources.get("real_test"), "in_domain": in_domain}


def check_cells(cfg: StudyConfig, out: str) -> None:
    """Refuse cells that ran on other data than the config now names (their ``made_from.json`` against
    `cell_record`): one trained on other data (a checkpoint or metrics.json there) must be deleted to be
    trained again; a finished one evaluated on other data, its metrics.json deleted to be evaluated again.
    A cell folder from an older synthgap (no ``made_from.json``) is taken to be current, with a warning.
    Raises `synthgap.errors.StudyError` listing every such cell and the folder or file to delete."""
    problems = []
    for cell in cell_names(cfg):
        want = cell_record(cfg, out, cell)
        for seed in cfg.seeds:
            folder = cell_dir(out, cell, seed)
            trained = storage.exists(storage.join(folder, "checkpoints")) and bool(
                storage.listdir(storage.join(folder, "checkpoints")))
            finished = is_finished(out, cell, seed)
            if not (trained or finished):
                continue
            path = storage.join(folder, MADE_FROM)
            if not storage.exists(path):
                log.warning("%s: no %s (written by an older synthgap): cannot tell what it was trained on; taken "
                            "to be the data the config names", folder, MADE_FROM)
                storage.write_json(path, want)
                continue
            got = storage.read_json(path)
            train = record_changes({k: got.get(k) for k in ("train", "start")}, {k: want[k] for k in ("train", "start")})
            scored = record_changes({k: got.get(k) for k in ("test", "in_domain")},
                                    {k: want[k] for k in ("test", "in_domain")})
            if train:
                problems.append(f"{cell} seed {seed} was trained on other data ({'; '.join(train)}): delete the "
                                f"folder {folder} to train it again")
            elif scored and finished:
                problems.append(f"{cell} seed {seed} was evaluated on other data ({'; '.join(scored)}): delete "
                                f"{storage.join(folder, 'metrics.json')} to evaluate it again (its checkpoint was "
                                "trained on the same data)")
    if problems:
        raise StudyError(f"{out}: the data of {len(problems)} cell(s) changed since they ran:\n  "
                         + "\n  ".join(problems))


def study_datasets(cfg: StudyConfig, out: str) -> list[tuple[str, str, str | None]]:
    """(name, path, format) of every dataset in the study, synthetic first (the report shows their frames)."""
    entries = []
    if cfg.datasets.synthetic:
        entries.append(("synthetic", cfg.datasets.synthetic, cfg.datasets.synthetic_format))
    if cfg.datasets.real_train:
        entries.append((f"{short_target_name(cfg.target_name)} train", *real_data(cfg, "train", out)))
    entries.append((target_test_name(cfg), *real_data(cfg, "test", out)))
    return entries


def feature_checkpoint(cfg: StudyConfig, out: str) -> str | None:
    """The model whose backbone measures the feature distance: the synthetic cell of the first seed, once
    finished (None without it, or with ``feature_images`` 0)."""
    from synthgap.models.checkpoint import checkpoint_name

    seed = cfg.seeds[0]
    if not cfg.feature_images or "synthetic" not in cfg.cells or not is_finished(out, "synthetic", seed):
        return None
    ckpt = storage.join(cell_dir(out, "synthetic", seed), "checkpoints", checkpoint_name("last"))
    return ckpt if storage.exists(ckpt) else None


def data_stats(cfg: StudyConfig, out: str) -> dict[str, Any]:
    """`synthgap stats` of the study's datasets (synthetic first: the gap is measured from it), written
    once to ``out/stats`` and reused on reruns (while the datasets keep their names and their records,
    ``stats/made_from.json``); with a finished synthetic model (`feature_checkpoint`), each gap also holds
    ``features``, the Fréchet distance of that model's backbone features (added to a cached stats.json that
    lacks them or has another checkpoint's; ``feature_images`` images per dataset)."""
    from synthgap.stats import write_stats
    from synthgap.stats.features import datasets_feature_gap

    path = storage.join(out, "stats", "stats.json")
    entries = study_datasets(cfg, out)
    sources = made_from(out, "sources") or {}
    want = {k: sources.get(k) for k in ("synthetic", "real_train", "real_test")}
    record = storage.join(out, "stats", MADE_FROM)
    doc = storage.read_json(path) if storage.exists(path) else None
    if (doc is None or list(doc.get("datasets", {})) != [e[0] for e in entries]  # none yet, or other names
            or not storage.exists(record) or storage.read_json(record) != want):  # or other data
        doc = write_stats([e[1] for e in entries], storage.join(out, "stats"), names=[e[0] for e in entries],
                          formats=[e[2] for e in entries])
        storage.write_json(record, want)
    ckpt = feature_checkpoint(cfg, out)
    others = [e for e in entries[1:] if e[0] in doc.get("gap", {})]
    if ckpt is None or not others or all((doc["gap"][e[0]].get("features") or {}).get("backbone") == ckpt
                                         for e in others):
        return doc
    t0 = time.perf_counter()
    gaps = datasets_feature_gap(entries[0][1], [e[1] for e in others], checkpoint=ckpt, format_a=entries[0][2],
                                formats_b=[e[2] for e in others], max_images=cfg.feature_images,
                                max_crops_per_class=cfg.feature_crops_per_class, crops=cfg.feature_crops_per_class > 0)
    for (name, _, _), gap in zip(others, gaps):
        doc["gap"][name]["features"] = gap
    storage.write_json(path, doc)
    log.info("feature distance (%s's backbone, up to %d images per dataset): %.1f s", ckpt, cfg.feature_images,
             time.perf_counter() - t0)
    return doc
