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
#study-summary td,#comparison td{white-space:nowrap} #study-summary td.name,#comparison td.name{white-space:normal} td.note{min-width:20em}
.warn{color:#b00020;font-weight:600} tr[data-learned="false"] td{background:#fff1f1} #conclusions li{margin:4px 0}
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes | None, alt: str, cls: str = "plot") -> str:
    if png is None:
        return f'<p class="muted">{html.escape(alt)}: no data</p>'
    return f'<img class="{cls}" alt="{html.escape(alt)}" src="{data_uri(png)}">'


def esc(value: Any) -> str:
    """Any value as HTML text (escaped, quotes too): every value from a file or a name goes through here."""
    return html.escape(str(value), quote=True)


def num(value: Any, spec: str) -> str:
    """A number formatted with ``spec`` (e.g. ``+.4f``, ``g``); anything that is not a number, escaped as text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return esc(value)


def fmt(value: Any) -> str:
    """Metric values with 4 decimals; missing or undefined (-1 / NaN) as an en dash; a non-number escaped."""
    if value is None:
        return "&ndash;"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return esc(value)
    if math.isnan(value) or value < 0:
        return "&ndash;"
    return f"{value:.4f}"


def metrics_table(runs: Sequence[Run]) -> str:
    """Runs as rows; COCO then datasetinsights (unity) summary numbers as columns."""
    head = "".join(f"<th>{c}</th>" for c in COCO_COLUMNS) + "".join(f"<th>{c}</th>" for c in UNITY_COLUMNS)
    own_key = "in_domain coco AP50"  # written by synthgap.study into run.json
    own = any(own_key in run.info for run in runs)
    rows = []
    for run in runs:
        coco = run.metrics.get("coco", {}).get("stats", {})
        unity = run.metrics.get("unity", {}).get("stats", {})
        cells = "".join(f"<td>{fmt(coco.get(c))}</td>" for c in COCO_COLUMNS)
        cells += "".join(f"<td>{fmt(unity.get(c))}</td>" for c in UNITY_COLUMNS)
        flag = ""
        if own:
            cells = f"<td>{fmt(run.info.get(own_key))}</td>{cells}<td class=\"name note\">{_warning(run.info.get('warning'))}</td>"
            flag = ' data-learned="false"' if run.info.get("learned") is False else ""
        rows.append(f'<tr class="run-row" data-run="{html.escape(run.name)}"{flag}><td class="name">'
                    f"{html.escape(run.name)}</td>{cells}</tr>")
    return (f'<table id="metrics"><tr><th class="name" rowspan="2">run</th>'
            + ('<th rowspan="2">in-domain AP50</th>' if own else "")
            + f'<th colspan="{len(COCO_COLUMNS)}">COCO protocol (test set)</th><th colspan="{len(UNITY_COLUMNS)}">'
            f'datasetinsights (unity) protocol (test set)</th>' + ('<th class="name" rowspan="2">note</th>' if own else "")
            + f"</tr><tr>{head}</tr>{''.join(rows)}</table>")


def _pm(stat: dict[str, Any] | None) -> str:
    """mean &plusmn; std of a {"mean", "std"} entry (just the mean for one seed)."""
    stat = stat or {}
    mean, std = stat.get("mean"), stat.get("std")
    return fmt(mean) if std is None else f"{fmt(mean)} &plusmn; {fmt(std)}"


def _warning(text: str | None) -> str:
    return f'<span class="warn">&#9888; {html.escape(text)}</span>' if text else ""


def summary_table(summary: dict[str, Any]) -> str:
    """Study summary: {"columns": [...], "rows": [{"name", "seeds", metric -> {"mean", "std"}, "in-domain ...",
    "transfer ratio", "warning"}]}: in-domain numbers first, then the target metrics, ratio and the flag."""
    cols = summary["columns"]
    own = [c for c in summary.get("in_domain_columns", []) if any(r.get(c) for r in summary["rows"])]
    ratio = any(r.get("transfer ratio") for r in summary["rows"])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in own) + "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    head += "<th>transfer ratio</th>" if ratio else ""
    rows = []
    for row in summary["rows"]:
        cells = "".join(f"<td>{_pm(row.get(c))}</td>" for c in [*own, *cols])
        if ratio:
            cells += f"<td>{_pm(row.get('transfer ratio'))}</td>"
        flagged = ' data-learned="false"' if row.get("learned") is False else ""
        rows.append(f'<tr{flagged} data-cell="{html.escape(row["name"])}"><td class="name">{html.escape(row["name"])}'
                    f'</td><td>{esc(row.get("seeds", 1))}</td>{cells}<td class="name note">{_warning(row.get("warning"))}</td></tr>')
    head_groups = ""
    if own:
        head_groups = (f'<tr><th class="name" rowspan="2">cell</th><th rowspan="2">seeds</th><th colspan="{len(own)}">'
                       f'in its own domain (held out)</th><th colspan="{len(cols) + ratio}">on the real test set</th>'
                       f'<th class="name" rowspan="2">note</th></tr><tr>{head}</tr>')
    else:
        head_groups = f'<tr><th class="name">cell</th><th>seeds</th>{head}<th class="name">note</th></tr>'
    note = ""
    if "in_domain_floor" in summary:
        note = (f'<p class="muted">In-domain: the synthetic model on held-out synthetic images, real and fine-tuned '
                f"models on the held-out real validation images. Transfer ratio = target {html.escape(summary.get('headline', ''))}"
                f" / in-domain {html.escape(summary.get('headline', ''))} (per seed, then averaged). A cell whose in-domain "
                f"{html.escape(summary.get('headline', ''))} is below {num(summary['in_domain_floor'], 'g')} is flagged: it "
                f"{html.escape(summary.get('not_learned', 'did not learn'))}.</p>")
    return f'<table id="study-summary">{head_groups}{"".join(rows)}</table>{note}'


def comparison_section(summary: dict[str, Any], plot: bytes | None) -> str:
    """Per real fraction: real only vs synthetic then real (same subset, same seeds), the paired difference
    with its confidence interval, and the budget plot."""
    entries = summary.get("comparison") or []
    if not entries:
        return '<p class="muted">comparison: no finished pair of real-only and fine-tuned cells</p>'
    metric = summary.get("headline", "coco AP50")
    syn = next((r for r in summary["rows"] if r["name"] == "synthetic"), None)
    rows = []
    for c in entries:
        for col in (metric, *[k for k in ("coco AP",) if k != metric]):
            m = c["metrics"].get(col)
            if not m:
                continue
            d = m["difference"]
            ci = "&ndash;" if d["ci"] is None else f"[{num(d['ci'][0], '+.4f')}, {num(d['ci'][1], '+.4f')}]"
            fraction = c["fraction"] * 100 if isinstance(c["fraction"], (int, float)) else c["fraction"]
            rows.append(f'<tr class="comparison-row" data-fraction="{num(c["fraction"], "g")}"><td class="name">'
                        f'{num(fraction, "g")} %</td><td>{esc(c.get("train_images") or "–")}</td>'
                        f"<td>{html.escape(col)}</td><td>{_pm(m['real'])}</td><td>{_pm(m['finetune'])}</td>"
                        f"<td>{num(d['mean'], '+.4f')}</td><td>{ci}</td><td>{esc(d['n'])}</td>"
                        f'<td>{_pm(syn.get(col)) if syn else "&ndash;"}</td>'
                        f'<td class="name note">{_warning(c.get("warning"))}</td></tr>')
    table = ('<table id="comparison"><tr><th class="name">real data</th><th>images</th><th>metric</th>'
             "<th>real only</th><th>synthetic then real</th><th>difference</th><th>95 % CI</th><th>seeds</th>"
             '<th>synthetic only</th><th class="name">note</th></tr>' + "".join(rows) + "</table>")
    method = html.escape(summary.get("ci_method", ""))
    return (f"{_img(plot, 'target AP against the real fraction')}{table}"
            f'<p class="muted">Same real subset and same seeds in both arms; the synthetic-then-real arm starts '
            f"from the synthetic model of the same seed (and uses the study's finetune_overrides, e.g. its learning "
            f"rate), the real-only arm from scratch. Difference = synthetic then real minus real only. "
            f"CI: {method}.</p>")


def conclusions_section(summary: dict[str, Any]) -> str:
    items = "".join(f"<li>{html.escape(c)}</li>" for c in summary.get("conclusions") or [])
    return f'<ul id="conclusions">{items}</ul>' if items else ""


def frames_section(frames: dict[str, list[tuple[bytes, str]]]) -> str:
    """A few frames of every dataset side by side, ground-truth boxes drawn: the domain gap at a glance."""
    parts = ['<p class="muted">Ground-truth boxes with class names, the first frames of each dataset.</p>']
    for name, items in frames.items():
        figs = "".join(f'<figure><img class="dataset-frame" alt="{html.escape(name)}: {html.escape(caption)}" '
                       f'src="{data_uri(png)}"><figcaption>{html.escape(caption)}</figcaption></figure>'
                       for png, caption in items)
        parts.append(f'<h3>{html.escape(name)}</h3><div class="gallery" data-dataset="{html.escape(name)}">{figs}</div>')
    return "".join(parts)


def stats_section(doc: dict[str, Any], plots: list[tuple[str, bytes]]) -> str:
    """The datasets themselves (a `synthgap.stats.write_stats` document): sizes, gap numbers, plots."""
    rows = []
    for name, d in doc["datasets"].items():
        h = d["histograms"]
        rows.append(f'<tr class="dataset-row"><td class="name">{html.escape(name)}</td><td>{esc(d["images"])}</td>'
                    f'<td>{esc(d["objects"])}</td><td>{fmt(d["objects_per_image_mean"])}</td>'
                    f'<td>{fmt(h["box_size"]["mean"])}</td><td>{fmt(h["visible_fraction"]["mean"])}</td></tr>')
    parts = ['<table id="datasets"><tr><th class="name">dataset</th><th>images</th><th>objects</th>'
             "<th>objects / image</th><th>mean box size</th><th>mean visible fraction</th></tr>"
             + "".join(rows) + "</table>"]
    gaps = doc.get("gap") or {}
    if gaps:
        keys = [k for k in next(iter(gaps.values())) if "wasserstein" in next(iter(gaps.values()))[k]]
        head = "".join(f"<th>{esc(k)}<br>W1 / TV</th>" for k in keys)
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
        features = {name: g["features"] for name, g in gaps.items() if isinstance(g.get("features"), dict)}
        if features:
            parts.append(feature_gap_table(doc["reference"], features))
    parts += [f"<figure>{_img(png, title)}<figcaption>{html.escape(title)}</figcaption></figure>"
              for title, png in plots]
    return "".join(parts)


def gallery_section(galleries: dict[str, list[GalleryImage]], score_thresh: float) -> str:
    legend = "".join(f'<span style="background:rgb{COLORS[k]}">{label}</span>' for k, label in
                     (("tp", "true positive"), ("fp", "false positive"), ("miss", "missed ground truth")))
    parts = [f'<p class="legend">{legend}</p><p class="muted">IoU 0.5; detections scoring &ge; {esc(score_thresh)} '
             f"are drawn.</p>"]
    for name, images in galleries.items():
        figs = []
        for g in images:
            base = g.image.replace("\\", "/").rsplit("/", 1)[-1]
            figs.append(f'<figure><img class="gallery-image" data-tp="{esc(g.tp)}" data-fp="{esc(g.fp)}" '
                        f'data-miss="{esc(g.miss)}" alt="{html.escape(name)}: {html.escape(base)}" '
                        f'src="{data_uri(g.png)}"><figcaption>'
                        f"{html.escape(base)}: {esc(g.tp)} TP, {esc(g.fp)} FP, {esc(g.miss)} missed</figcaption></figure>")
        parts.append(f'<h3>{html.escape(name)}</h3><div class="gallery" data-run="{html.escape(name)}">'
                     f"{''.join(figs)}</div>")
    return "".join(parts)


def render_page(title: str, runs: Sequence[Run], *, pr: bytes | None, per_class: bytes | None,
                curves: bytes | None, galleries: dict[str, list[GalleryImage]], score_thresh: float,
                summary: dict[str, Any] | None = None, generated: str = "",
                data_stats: tuple[dict[str, Any], list[tuple[str, bytes]]] | None = None,
                budget: bytes | None = None, frames: dict[str, list[tuple[bytes, str]]] | None = None) -> str:
    notes = "".join(f"<li>{html.escape(r.name)}: {html.escape(n)}</li>" for r in runs for n in r.notes)
    sources = "".join(f"<li><b>{html.escape(r.name)}</b>: {html.escape(r.path)}"
                      + (f" &mdash; test data {html.escape(r.test_data)}" if r.test_data else "") + "</li>"
                      for r in runs)
    body = [f"<h1>{html.escape(title)}</h1>",
            f'<p class="muted">{len(runs)} run(s). {html.escape(generated)}</p><ul class="muted">{sources}</ul>']
    if summary:
        if summary.get("conclusions"):
            body += ["<h2>What this study says</h2>", conclusions_section(summary)]
        if summary.get("comparison") is not None:
            body += ["<h2>Synthetic pretraining per real-data budget</h2>", comparison_section(summary, budget)]
        body += ["<h2>Study summary (mean &plusmn; std over seeds)</h2>", summary_table(summary)]
        if summary.get("feature_gap"):
            body += ["<h2>How far apart the data are, beside the AP gap</h2>",
                     feature_vs_ap_table(summary["feature_gap"])]
    body += ["<h2>Metrics on the test set</h2>", metrics_table(runs),
             '<p class="muted">&ndash; = undefined (no ground truth in that range). COCO numbers are '
             "pycocotools' COCOeval; unity numbers follow datasetinsights.</p>",
             "<h2>Precision&ndash;recall</h2>", _img(pr, "precision-recall curves"),
             "<h2>Per-class AP</h2>", _img(per_class, "per-class AP"),
             "<h2>Why the models lose AP (error breakdown)</h2>", diagnosis_section(runs),
             "<h2>Training curves</h2>", _img(curves, "training curves")]
    if data_stats:
        body += ["<h2>Datasets (the gap in the data itself)</h2>", stats_section(*data_stats)]
    body += ["<h2>Gallery</h2>"]
    if frames:
        body += ["<h3>The datasets side by side</h3>", frames_section(frames), "<h3>Predictions on the test set</h3>"]
    body += [gallery_section(galleries, score_thresh) if galleries else
             '<p class="muted">gallery: no data (test data or predictions missing)</p>']
    if notes:
        body += ["<h2>Notes</h2>", f'<ul class="muted">{notes}</ul>']
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


def diagnosis_section(runs: Sequence[Run]) -> str:
    """Why each model loses AP (issue 15): one sentence per run from TIDE's breakdown, a table of dAP per
    error type (AP points), the side-by-side breakdown figure and AP by object attribute."""
    from synthgap.metrics.tide import ERROR_NAMES, ERROR_TYPES, SPECIAL_TYPES, headline
    from synthgap.report import figures

    found = [(run, figures.diagnosis(run)[0]) for run in runs]
    found = [(run, e) for run, e in found if e]
    if not found:
        return '<p class="muted">error breakdown: no data (predictions and test data needed)</p>'
    keys = list(ERROR_TYPES) + list(SPECIAL_TYPES)
    head = "".join(f"<th>{esc(ERROR_NAMES[k])}</th>" for k in keys)
    rows = []
    for run, e in found:
        vals = {**e.get("dap", {}), **e.get("special", {})}
        cells = "".join(f"<td>{'&ndash;' if vals.get(k) is None else f'{100 * vals[k]:.2f}'}</td>" for k in keys)
        ap = e.get("ap")
        rows.append(f'<tr><td class="name">{esc(run.name)}</td><td>{"&ndash;" if ap is None else f"{100 * ap:.2f}"}'
                    f"</td>{cells}</tr>")
    sentences = "".join(f"<li><b>{esc(run.name)}</b>: {esc(headline(e))}</li>" for run, e in found)
    return (f"<ul>{sentences}</ul>"
            f'<table id="error-breakdown"><tr><th class="name">run</th><th>AP50 (TIDE)</th>{head}</tr>'
            + "".join(rows) + "</table>"
            '<p class="muted">dAP: AP points (x 100) gained if only that error type were fixed (TIDE, IoU 0.5, '
            "background below IoU 0.1); the last two: with every false positive / every missed box removed. "
            "See docs/metrics.md.</p>"
            + _img(figures.error_breakdown_png(runs), "error breakdown")
            + "<h3>AP by object attribute</h3>" + _img(figures.attribute_ap_png(runs), "AP by attribute"))


def feature_gap_table(reference: str, features: dict[str, dict[str, Any]]) -> str:
    """The `synthgap stats --features` distances (Fréchet distance of a trained detector's backbone features)
    from ``reference`` to each dataset: whole images, and object crops per class (mean, worst class)."""
    rows = []
    for name, f in features.items():
        per = {k: v for k, v in (f.get("per_class") or {}).items() if v is not None}
        worst = max(per, key=per.get) if per else None
        value = (lambda v: "&ndash;" if v is None else num(v, ".4g"))
        rows.append(f'<tr><td class="name">{esc(reference)} &rarr; {esc(name)}</td><td>{value(f.get("image"))}</td>'
                    f'<td>{value(f.get("per_class_mean"))}</td>'
                    f'<td class="name">{"&ndash;" if worst is None else f"{esc(worst)} ({per[worst]:.4g})"}</td>'
                    f'<td>{esc(" / ".join(str(n) for n in f.get("images", [])))}</td></tr>')
    backbone = next(iter(features.values())).get("backbone", "")
    return ('<table id="feature-gap"><tr><th class="name">feature gap</th><th>images FD</th>'
            '<th>object crops FD<br>mean over classes</th><th class="name">farthest class</th><th>images used</th></tr>'
            + "".join(rows) + "</table>"
            f'<p class="muted">FD: Fréchet distance between Gaussians fitted to the backbone features of '
            f"{esc(backbone)} (squared feature units, 0 = same distribution; comparable only for one checkpoint). "
            "Set it beside the AP gap: see docs/metrics.md.</p>")


def feature_vs_ap_table(fg: dict[str, Any]) -> str:
    """The study's ``feature_gap`` (`synthgap.study.feature_gap_summary`): per dataset pair, the Fréchet
    distances measured with the synthetic model's backbone beside that model's in-domain and target AP."""
    metric = str(fg.get("metric", "coco AP50"))
    short = metric.split()[-1]
    value = (lambda v: "&ndash;" if v is None else num(v, ".4g"))
    rows = []
    for r in fg.get("rows") or []:
        rows.append(f'<tr class="feature-ap-row" data-dataset="{esc(r.get("dataset"))}"><td class="name">'
                    f'{esc(r.get("reference"))} &rarr; {esc(r.get("dataset"))}</td>'
                    f'<td>{esc(" / ".join(str(n) for n in r.get("images") or []))}</td>'
                    f'<td>{value(r.get("image"))}</td><td>{value(r.get("per_class_mean"))}</td>'
                    f'<td>{fmt(r.get("in-domain " + metric))}</td><td>{fmt(r.get(metric))}</td>'
                    f'<td>{fmt(r.get("AP gap"))}</td><td>{fmt(r.get("transfer ratio"))}</td></tr>')
    flag = _warning(f"{fg.get('model')} did not learn in its own domain: these numbers say nothing about the "
                    "dataset") if fg.get("learned") is False else ""
    return (f'<table id="feature-vs-ap"><tr><th class="name" rowspan="2">dataset pair</th><th rowspan="2">images'
            f'</th><th colspan="2">Fréchet distance ({esc(fg.get("model"))} backbone)</th><th colspan="4">'
            f'{esc(fg.get("model"))} ({esc(metric)})</th></tr><tr><th>whole images</th><th>object crops<br>mean over '
            f'classes</th><th>in-domain {esc(short)}</th><th>target {esc(short)}</th><th>AP gap</th>'
            f'<th>transfer ratio</th></tr>' + "".join(rows) + f"</table>{flag}"
            f'<p class="muted">{esc(fg.get("note", ""))} The model is scored only on the real test data, so the other '
            "pairs show distances alone. See docs/metrics.md.</p>")
