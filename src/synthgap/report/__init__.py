"""A single self-contained HTML report over one or more runs (folders written by `synthgap evaluate`).

    from synthgap.report import build_report
    build_report(["runs/synthetic", "runs/real"], "report.html", test_data="data/real/test")

The page needs no network: CSS is inline, every plot and image is a base64 PNG, there are no scripts.
It is written atomically through `synthgap.io.storage`. See docs/report.md for the run-folder layout.
"""

from __future__ import annotations

import datetime
from typing import Any, Sequence

from synthgap.io import storage
from synthgap.report.run import PROTOCOLS, Run, load_run, read_scalars

__all__ = ["build_report", "write_study_report", "load_run", "read_scalars", "render_report", "Run", "PROTOCOLS"]


def _stats_plots(doc: dict[str, Any]) -> list[tuple[str, bytes]]:
    """The `synthgap stats` plots of a stats document (all datasets on the same axes)."""
    from synthgap.stats import plots

    stats = list(doc["datasets"].values())
    out = [("objects per class", plots.class_counts_png(stats)), ("box centres", plots.heatmaps_png(stats))]
    for key in ("box_size", "log2_aspect_ratio", "objects_per_image", "visible_size", "visible_fraction"):
        if any(s["histograms"][key]["count"] for s in stats):
            out.append((stats[0]["histograms"][key]["label"], plots.histogram_png(stats, key)))
    return out


def dataset_frames(datasets: Sequence[tuple[str, str, str | None]], n: int) -> dict[str, list[tuple[bytes, str]]]:
    """The first ``n`` frames of each (name, path, format) dataset with their ground-truth boxes drawn:
    name -> [(PNG, caption)]."""
    from synthgap.data import open_dataset
    from synthgap.report.gallery import draw_ground_truth

    out = {}
    for name, path, fmt in datasets:
        ds = open_dataset(path, fmt)
        items = []
        for i in range(min(n, len(ds))):
            sample = ds[i]
            base = sample.image.replace("\\", "/").rsplit("/", 1)[-1]
            items.append((draw_ground_truth(sample, ds.label_map), f"{base}: {len(sample.boxes)} boxes"))
        out[name] = items
    return out


def render_report(runs: Sequence[Run], *, title: str = "synthgap report", gallery_images: int = 6,
                  score_thresh: float = 0.5, summary: Any = None,
                  stats: dict[str, Any] | None = None,
                  datasets: Sequence[tuple[str, str, str | None]] | None = None) -> str:
    """The HTML text of a report over loaded runs (``stats``: a `synthgap.stats.write_stats` document;
    ``datasets``: (name, path, format) of datasets whose first frames are shown side by side; ``summary``: a
    `synthgap.study.StudySummary` or a study's summary.json document of any schema)."""
    from synthgap.report import figures
    from synthgap.study.summary import as_summary
    from synthgap.report.gallery import draw_matches
    from synthgap.report.html import render_page

    summary = as_summary(summary) if summary else None
    galleries = {}
    for run in runs:
        if run.result is None or not run.samples:
            continue
        galleries[run.name] = [draw_matches(s, run.result.matches, run.predictions, run.label_map, score_thresh)
                               for s in run.samples[:gallery_images]]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("Generated %Y-%m-%d %H:%M UTC by synthgap.")
    return render_page(title, runs, pr=figures.pr_curves_png(runs), per_class=figures.per_class_ap_png(runs),
                       curves=figures.training_curves_png(runs), galleries=galleries, score_thresh=score_thresh,
                       summary=summary, generated=stamp,
                       data_stats=(stats, _stats_plots(stats)) if stats else None,
                       budget=figures.budget_curve_png(summary) if summary else None,
                       frames=dataset_frames(datasets, gallery_images) if datasets and gallery_images else None)


def build_report(run_dirs: Sequence[str], out: str, *, test_data: str | None = None,
                 names: Sequence[str] | None = None, title: str = "synthgap report", gallery_images: int = 6,
                 score_thresh: float = 0.5, summary: Any = None,
                 stats: dict[str, Any] | str | None = None,
                 datasets: Sequence[tuple[str, str, str | None]] | None = None) -> str:
    """Load each run folder, render the page and write it to ``out`` (atomically). Returns ``out``.

    ``test_data`` applies to runs whose ``run.json`` names none. ``summary`` (a `synthgap.study.StudySummary`,
    a summary.json document of any schema, or its path) adds the study's sections: conclusions, the
    per-budget comparison with its intervals, mean +/- std per cell. ``stats`` (a `synthgap stats` stats.json document
    or its path) adds a section on the datasets themselves: sizes, gap numbers and plots. ``datasets``
    ((name, path, format) tuples) adds their first ``gallery_images`` frames, boxes drawn, side by side.
    """
    if not run_dirs:
        raise ValueError("no run folders given")
    if names is not None and len(names) != len(run_dirs):
        raise ValueError(f"{len(names)} names given for {len(run_dirs)} runs")
    test_sets: dict = {}  # test sets shared by runs are read once
    runs = [load_run(d, names[i] if names else None, test_data, test_sets) for i, d in enumerate(run_dirs)]
    seen: dict[str, int] = {}
    for run in runs:  # two folders both called "eval" must stay apart on the page
        seen[run.name] = seen.get(run.name, 0) + 1
        if seen[run.name] > 1:
            run.name = f"{run.name}-{seen[run.name]}"
    if isinstance(stats, str):
        stats = storage.read_json(stats)
    if isinstance(summary, str):
        summary = storage.read_json(summary)
    text = render_report(runs, title=title, gallery_images=gallery_images, score_thresh=score_thresh,
                         summary=summary, stats=stats, datasets=datasets)
    storage.write_text(out, text)
    return out


def write_study_report(study_out: str, out: str | None = None) -> str:
    """The report of a study folder that `synthgap.study.run_study` filled: its config (``study.yaml``),
    ``summary.json``, the finished cells' run folders, the data statistics (``stats/stats.json``, when the
    study made them) and the first frames of its datasets. Writes ``out`` (default
    ``STUDY_OUT/report.html``) atomically and returns its path."""
    from synthgap.study import cell_dir, cell_names, is_finished, load_study_config, study_datasets

    study_out = storage.absolute(study_out)
    summary = storage.join(study_out, "summary.json")
    if not storage.exists(summary):
        raise FileNotFoundError(f"{study_out}: no summary.json (run the study first: synthgap study)")
    cfg = load_study_config(storage.join(study_out, "study.yaml"))
    runs = [cell_dir(study_out, c, s) for c in cell_names(cfg) for s in cfg.seeds if is_finished(study_out, c, s)]
    stats = storage.join(study_out, "stats", "stats.json")
    return build_report(runs, out or storage.join(study_out, "report.html"), title=cfg.name,
                        gallery_images=cfg.gallery_images, summary=summary,
                        stats=stats if cfg.data_stats and storage.exists(stats) else None,
                        datasets=study_datasets(cfg, study_out))
