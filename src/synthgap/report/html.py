"""The report page: one self-contained HTML string (inline CSS, images as base64 data URIs, no scripts)."""

from __future__ import annotations

import base64
import html
import math
from typing import Any, Sequence

from synthgap.report.gallery import COLORS, GalleryImage
from synthgap.report.run import Run

COCO_COLUMNS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")
UNITY_COLUMNS = ("mAP", "mAPIOU50", "mAR")

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#1d1d1f;
padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px} h2{font-size:1.2em;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:0.9em;margin:8px 0} th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f4f4f6} td.name,th.name{text-align:left} .muted{color:#777;font-size:0.85em}
figure{display:inline-block;margin:8px;vertical-align:top} figcaption{font-size:0.8em;color:#444;max-width:480px}
img{max-width:100%} .legend span{display:inline-block;padding:2px 8px;margin-right:8px;border-radius:3px;color:#fff}
.gallery{display:flex;flex-wrap:wrap;gap:8px}
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes | None, alt: str, cls: str = "plot") -> str:
    if png is None:
        return f'<p class="muted">{html.escape(alt)}: no data</p>'
    return f'<img class="{cls}" alt="{html.escape(alt)}" src="{data_uri(png)}">'


def fmt(value: Any) -> str:
    """Metric values with 4 decimals; missing or undefined (-1 / NaN) as an en dash."""
    if value is None:
        return "&ndash;"
    value = float(value)
    if math.isnan(value) or value < 0:
        return "&ndash;"
    return f"{value:.4f}"


def metrics_table(runs: Sequence[Run]) -> str:
    """Runs as rows; COCO then datasetinsights (unity) summary numbers as columns."""
    head = "".join(f"<th>{c}</th>" for c in COCO_COLUMNS) + "".join(f"<th>{c}</th>" for c in UNITY_COLUMNS)
    rows = []
    for run in runs:
        coco = run.metrics.get("coco", {}).get("stats", {})
        unity = run.metrics.get("unity", {}).get("stats", {})
        cells = "".join(f"<td>{fmt(coco.get(c))}</td>" for c in COCO_COLUMNS)
        cells += "".join(f"<td>{fmt(unity.get(c))}</td>" for c in UNITY_COLUMNS)
        rows.append(f'<tr class="run-row" data-run="{html.escape(run.name)}"><td class="name">'
                    f"{html.escape(run.name)}</td>{cells}</tr>")
    return (f'<table id="metrics"><tr><th class="name" rowspan="2">run</th><th colspan="{len(COCO_COLUMNS)}">'
            f'COCO protocol</th><th colspan="{len(UNITY_COLUMNS)}">datasetinsights (unity) protocol</th></tr>'
            f"<tr>{head}</tr>{''.join(rows)}</table>")


def summary_table(summary: dict[str, Any]) -> str:
    """Study summary: {"columns": [...], "rows": [{"name", "seeds", metric -> {"mean", "std"}}]}."""
    cols = summary["columns"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    rows = []
    for row in summary["rows"]:
        cells = []
        for c in cols:
            v = row.get(c) or {}
            mean, std = v.get("mean"), v.get("std")
            text = fmt(mean) if std is None else f"{fmt(mean)} &plusmn; {fmt(std)}"
            cells.append(f"<td>{text}</td>")
        rows.append(f'<tr><td class="name">{html.escape(row["name"])}</td><td>{row.get("seeds", 1)}</td>'
                    f"{''.join(cells)}</tr>")
    return (f'<table id="study-summary"><tr><th class="name">cell</th><th>seeds</th>{head}</tr>'
            f"{''.join(rows)}</table>")


def stats_section(doc: dict[str, Any], plots: list[tuple[str, bytes]]) -> str:
    """The datasets themselves (a `synthgap.stats.write_stats` document): sizes, gap numbers, plots."""
    rows = []
    for name, d in doc["datasets"].items():
        h = d["histograms"]
        rows.append(f'<tr class="dataset-row"><td class="name">{html.escape(name)}</td><td>{d["images"]}</td>'
                    f'<td>{d["objects"]}</td><td>{fmt(d["objects_per_image_mean"])}</td>'
                    f'<td>{fmt(h["box_size"]["mean"])}</td><td>{fmt(h["visible_fraction"]["mean"])}</td></tr>')
    parts = ['<table id="datasets"><tr><th class="name">dataset</th><th>images</th><th>objects</th>'
             "<th>objects / image</th><th>mean box size</th><th>mean visible fraction</th></tr>"
             + "".join(rows) + "</table>"]
    gaps = doc.get("gap") or {}
    if gaps:
        keys = [k for k in next(iter(gaps.values())) if "wasserstein" in next(iter(gaps.values()))[k]]
        head = "".join(f"<th>{html.escape(k)}<br>W1 / TV</th>" for k in keys)
        grow = []
        for name, g in gaps.items():
            cells = "".join(f"<td>{fmt(g[k]['wasserstein'])} / {fmt(g[k]['total_variation'])}</td>" for k in keys)
            grow.append(f'<tr><td class="name">{html.escape(doc["reference"])} &rarr; {html.escape(name)}</td>{cells}'
                        f'<td>{fmt(g["class_distribution"]["total_variation"])}</td>'
                        f'<td>{fmt(g["center_heatmap"]["total_variation"])}</td></tr>')
        parts.append(f'<table id="data-gap"><tr><th class="name">gap</th>{head}<th>classes TV</th><th>box centres TV'
                     f"</th></tr>{''.join(grow)}</table>"
                     '<p class="muted">W1: 1-Wasserstein distance in the statistic\'s units; TV: total variation '
                     "(0 = same distribution, 1 = disjoint), both on the shared histogram bins.</p>")
    parts += [f"<figure>{_img(png, title)}<figcaption>{html.escape(title)}</figcaption></figure>"
              for title, png in plots]
    return "".join(parts)


def gallery_section(galleries: dict[str, list[GalleryImage]], score_thresh: float) -> str:
    legend = "".join(f'<span style="background:rgb{COLORS[k]}">{label}</span>' for k, label in
                     (("tp", "true positive"), ("fp", "false positive"), ("miss", "missed ground truth")))
    parts = [f'<p class="legend">{legend}</p><p class="muted">IoU 0.5; detections scoring &ge; {score_thresh} '
             f"are drawn.</p>"]
    for name, images in galleries.items():
        figs = []
        for g in images:
            base = g.image.replace("\\", "/").rsplit("/", 1)[-1]
            figs.append(f'<figure><img class="gallery-image" data-tp="{g.tp}" data-fp="{g.fp}" data-miss="{g.miss}" '
                        f'alt="{html.escape(name)}: {html.escape(base)}" src="{data_uri(g.png)}"><figcaption>'
                        f"{html.escape(base)}: {g.tp} TP, {g.fp} FP, {g.miss} missed</figcaption></figure>")
        parts.append(f'<h3>{html.escape(name)}</h3><div class="gallery" data-run="{html.escape(name)}">'
                     f"{''.join(figs)}</div>")
    return "".join(parts)


def render_page(title: str, runs: Sequence[Run], *, pr: bytes | None, per_class: bytes | None,
                curves: bytes | None, galleries: dict[str, list[GalleryImage]], score_thresh: float,
                summary: dict[str, Any] | None = None, generated: str = "",
                data_stats: tuple[dict[str, Any], list[tuple[str, bytes]]] | None = None) -> str:
    notes = "".join(f"<li>{html.escape(r.name)}: {html.escape(n)}</li>" for r in runs for n in r.notes)
    sources = "".join(f"<li><b>{html.escape(r.name)}</b>: {html.escape(r.path)}"
                      + (f" &mdash; test data {html.escape(r.test_data)}" if r.test_data else "") + "</li>"
                      for r in runs)
    body = [f"<h1>{html.escape(title)}</h1>",
            f'<p class="muted">{len(runs)} run(s). {html.escape(generated)}</p><ul class="muted">{sources}</ul>']
    if summary:
        body += ["<h2>Study summary (mean &plusmn; std over seeds)</h2>", summary_table(summary)]
    body += ["<h2>Metrics on the test set</h2>", metrics_table(runs),
             '<p class="muted">&ndash; = undefined (no ground truth in that range). COCO numbers are '
             "pycocotools' COCOeval; unity numbers follow datasetinsights.</p>",
             "<h2>Precision&ndash;recall</h2>", _img(pr, "precision-recall curves"),
             "<h2>Per-class AP</h2>", _img(per_class, "per-class AP"),
             "<h2>Training curves</h2>", _img(curves, "training curves")]
    if data_stats:
        body += ["<h2>Datasets (the gap in the data itself)</h2>", stats_section(*data_stats)]
    body += ["<h2>Gallery</h2>", gallery_section(galleries, score_thresh) if galleries else
             '<p class="muted">gallery: no data (test data or predictions missing)</p>']
    if notes:
        body += ["<h2>Notes</h2>", f'<ul class="muted">{notes}</ul>']
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")
