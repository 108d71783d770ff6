"""The report page: one self-contained HTML string (inline CSS, images as base64 data URIs, no scripts)."""

from __future__ import annotations

import base64
import html
import math
from typing import Any, Sequence

from typing import TYPE_CHECKING

from synthgap.report.gallery import COLORS, GalleryImage
from synthgap.report.run import Run

if TYPE_CHECKING:
    from synthgap.study.intervals import MetricStat
    from synthgap.study.summary import FeatureGap, StudySummary

COCO_COLUMNS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")
UNITY_COLUMNS = ("mAP", "mAPIOU50", "mAR")

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#1d1d1f;
padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px} h2{font-size:1.2em;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:0.9em;margin:8px 0} th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f4f4f6} td.name,th.name{text-align:left} .muted{color:#777;font-size:0.85em}
figure{display:inline-block;margin:8px;vertical-align:top;max-width:calc(100% - 16px)} figcaption{font-size:0.8em;color:#444;max-width:480px}
img{max-width:100%} .legend span{display:inline-block;padding:2px 8px;margin-right:8px;border-radius:3px;color:#fff}
.gallery{display:flex;flex-wrap:wrap;gap:8px}
#study-summary td,#comparison td{white-space:nowrap} #study-summary td.name,#comparison td.name{white-space:normal}
td.note{min-width:12em} .sd{color:#777;font-size:0.85em}
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


def _warning(text: str | None) -> str:
    return f'<span class="warn">&#9888; {html.escape(text)}</span>' if text else ""


def _pm2(stat: MetricStat | None) -> str:
    """mean over &plusmn; std on a second line (narrow columns: the study tables fit 1,280 px)."""
    if not stat:
        return "&ndash;"
    return fmt(stat.mean) + ("" if stat.std is None else f'<br><span class="sd">&plusmn; {fmt(stat.std)}</span>')


def _short(metric: tuple[str, str]) -> str:
    return f"{'COCO' if metric[0] == 'coco' else 'DI' if metric[0] == 'unity' else esc(metric[0])} {esc(metric[1])}"


def summary_table(summary: StudySummary | dict[str, Any]) -> str:
    """Study summary (`synthgap.study.StudySummary`, or a summary.json document of any schema): one row per
    cell, in-domain numbers first, then the target metrics, the transfer ratio and the flag."""
    from synthgap.study.summary import as_summary, metric_name, short_target_name

    summary = as_summary(summary)
    cols = summary.target_metrics
    own = [m for m in summary.in_domain_metrics if any(r.in_domain.get(m) for r in summary.rows)]
    ratio = any(r.transfer_ratio for r in summary.rows)
    head = "".join(f"<th>{_short(m)}</th>" for m in [*own, *cols]) + ("<th>transfer<br>ratio</th>" if ratio else "")
    rows = []
    for row in summary.rows:
        cells = "".join(f"<td>{_pm2(row.in_domain.get(m))}</td>" for m in own)
        cells += "".join(f"<td>{_pm2(row.target.get(m))}</td>" for m in cols)
        if ratio:
            cells += f"<td>{_pm2(row.transfer_ratio)}</td>"
        flagged = ' data-learned="false"' if row.learned is False else ""
        rows.append(f'<tr{flagged} data-cell="{esc(row.name)}"><td class="name">{esc(row.name)}'
                    f'</td><td>{esc(len(row.seeds))}</td>{cells}<td class="name note">{_warning(row.warning)}</td>'
                    "</tr>")
    if own:
        head_groups = (f'<tr><th class="name" rowspan="2">cell</th><th rowspan="2">seeds</th><th colspan="{len(own)}">'
                       f'in its own domain (held out)</th><th colspan="{len(cols) + ratio}">on the '
                       f'{esc(summary.target_name)} test set</th><th class="name" rowspan="2">note</th></tr>'
                       f"<tr>{head}</tr>")
    else:
        head_groups = f'<tr><th class="name">cell</th><th>seeds</th>{head}<th class="name">note</th></tr>'
    headline = esc(metric_name(summary.headline))
    target = esc(short_target_name(summary.target_name))
    note = (f'<p class="muted">Mean &plusmn; sample std over seeds. COCO = the COCO protocol, DI = datasetinsights\' '
            f"(unity) protocol. In-domain: the synthetic model on held-out synthetic images, {target} and "
            f"fine-tuned models on the held-out {target} validation images. Transfer ratio = target {headline} / "
            f"in-domain {headline} (per seed, then averaged). A cell whose in-domain {headline} is below "
            f"{num(summary.in_domain_floor, 'g')} is flagged: it {esc(summary.not_learned)}.</p>")
    return f'<table id="study-summary">{head_groups}{"".join(rows)}</table>{note}'


def _interval(ci: tuple[float, float] | None) -> str:
    return "&ndash;" if ci is None else f"[{num(ci[0], '+.4f')},<br>{num(ci[1], '+.4f')}]"


def comparison_section(summary: StudySummary | dict[str, Any], plot: bytes | None) -> str:
    """Per real fraction: real only vs synthetic then real (same subset, same seeds), the paired difference
    with its intervals (t over seeds; bootstrap over seeds and test images when measured), and the budget plot."""
    from synthgap.study.summary import as_summary, short_target_name

    summary = as_summary(summary)
    if not summary.comparison:
        return '<p class="muted">comparison: no finished pair of real-only and fine-tuned cells</p>'
    target = short_target_name(summary.target_name)
    syn = summary.row("synthetic")
    rows = []
    boot = None
    for c in summary.comparison:
        for metric in (summary.headline, *[m for m in (("coco", "AP"),) if m != summary.headline]):
            m = c.metrics.get(metric)
            if not m:
                continue
            d, b = m.difference, m.bootstrap
            boot = boot or b
            cells = (f"<td>{_interval(b and b.ci)}</td><td>{'&ndash;' if b is None else num(b.p_positive, '.2f')}</td>")
            rows.append(f'<tr class="comparison-row" data-fraction="{num(c.fraction, "g")}" '
                        f'data-metric="{esc(" ".join(metric))}"><td class="name">'
                        f'{num(c.fraction * 100, "g")} %</td><td>{esc(c.train_images or "–")}</td>'
                        f"<td>{_short(metric)}</td><td>{_pm2(m.real)}</td><td>{_pm2(m.finetune)}</td>"
                        f"<td>{num(d.mean, '+.4f')}</td><td>{_interval(d.ci)}</td>{cells}<td>{esc(d.n)}</td>"
                        f'<td>{_pm2(syn.target.get(metric)) if syn else "&ndash;"}</td>'
                        f'<td class="name note">{_warning(c.warning)}</td></tr>')
    table = (f'<table id="comparison"><tr><th class="name">{esc(target)}<br>data</th><th>images</th><th>metric</th>'
             f"<th>{esc(target)}<br>only</th><th>synthetic<br>then {esc(target)}</th><th>difference</th>"
             "<th>95 % CI<br>over seeds (t)</th><th>95 % CI seeds<br>+ test images</th><th>P(diff<br>&gt; 0)</th>"
             '<th>seeds</th><th>synthetic<br>only</th><th class="name">note</th></tr>' + "".join(rows) + "</table>")
    method = esc(summary.ci_method)
    if boot is not None:
        method += (f"; seeds + test images: hierarchical bootstrap (seeds resampled, then the test images within "
                   f"each, paired by seed and image; {esc(boot.resamples)} resamples, random seed {esc(boot.seed)}), "
                   "P(diff &gt; 0) = the share of resamples with a positive difference")
    return (f"{_img(plot, 'target AP against the real fraction')}{table}"
            f'<p class="muted">Same {esc(target)} subset and same seeds in both arms; the synthetic-then-{esc(target)} '
            f"arm starts from the synthetic model of the same seed (and uses the study's finetune_overrides, e.g. its "
            f"learning rate), the {esc(target)}-only arm from scratch. Difference = synthetic then {esc(target)} minus "
            f"{esc(target)} only. CI: {method}.</p>")


def conclusions_section(summary: StudySummary | dict[str, Any]) -> str:
    from synthgap.study.summary import as_summary

    items = "".join(f"<li>{esc(c)}</li>" for c in as_summary(summary).conclusions)
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
                summary: StudySummary | None = None, generated: str = "",
                data_stats: tuple[dict[str, Any], list[tuple[str, bytes]]] | None = None,
                budget: bytes | None = None, frames: dict[str, list[tuple[bytes, str]]] | None = None) -> str:
    notes = "".join(f"<li>{html.escape(r.name)}: {html.escape(n)}</li>" for r in runs for n in r.notes)
    sources = "".join(f"<li><b>{html.escape(r.name)}</b>: {html.escape(r.path)}"
                      + (f" &mdash; test data {html.escape(r.test_data)}" if r.test_data else "") + "</li>"
                      for r in runs)
    body = [f"<h1>{html.escape(title)}</h1>",
            f'<p class="muted">{len(runs)} run(s). {html.escape(generated)}</p><ul class="muted">{sources}</ul>']
    if summary:
        from synthgap.study.summary import short_target_name

        if summary.conclusions:
            body += ["<h2>What this study says</h2>", conclusions_section(summary)]
        body += [f"<h2>Synthetic pretraining per {esc(short_target_name(summary.target_name))}-data budget</h2>",
                 comparison_section(summary, budget),
                 "<h2>Study summary (mean &plusmn; std over seeds)</h2>", summary_table(summary)]
        if summary.feature_gap:
            body += ["<h2>How far apart the data are, beside the AP gap</h2>", feature_vs_ap_table(summary.feature_gap)]
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


def feature_vs_ap_table(fg: FeatureGap | dict[str, Any]) -> str:
    """The study's ``feature_gap`` (`synthgap.study.FeatureGap`, or its summary.json entry of any schema): per
    dataset pair, the Fréchet distances measured with the synthetic model's backbone beside that model's
    in-domain and target AP."""
    from synthgap.study.summary import FeatureGap, metric_name

    if not isinstance(fg, FeatureGap):
        fg = FeatureGap.from_dict(fg)
    metric, short = metric_name(fg.metric), fg.metric[1]
    value = (lambda v: "&ndash;" if v is None else num(v, ".4g"))
    rows = []
    for r in fg.rows:
        rows.append(f'<tr class="feature-ap-row" data-dataset="{esc(r.dataset)}"><td class="name">'
                    f'{esc(r.reference)} &rarr; {esc(r.dataset)}</td>'
                    f'<td>{esc(" / ".join(str(n) for n in r.images or []))}</td>'
                    f'<td>{value(r.image)}</td><td>{value(r.per_class_mean)}</td>'
                    f'<td>{fmt(r.in_domain)}</td><td>{fmt(r.target)}</td>'
                    f'<td>{fmt(r.ap_gap)}</td><td>{fmt(r.transfer_ratio)}</td></tr>')
    flag = _warning(f"{fg.model} did not learn in its own domain: these numbers say nothing about the "
                    "dataset") if fg.learned is False else ""
    return (f'<table id="feature-vs-ap"><tr><th class="name" rowspan="2">dataset pair</th><th rowspan="2">images'
            f'</th><th colspan="2">Fréchet distance ({esc(fg.model)} backbone)</th><th colspan="4">'
            f'{esc(fg.model)} ({esc(metric)})</th></tr><tr><th>whole images</th><th>object crops<br>mean over '
            f'classes</th><th>in-domain {esc(short)}</th><th>target {esc(short)}</th><th>AP gap</th>'
            f'<th>transfer ratio</th></tr>' + "".join(rows) + f"</table>{flag}"
            f'<p class="muted">{esc(fg.note)} The model is scored only on the target test data, so the other '
            "pairs show distances alone. See docs/metrics.md.</p>")
