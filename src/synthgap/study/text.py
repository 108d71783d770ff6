"""The study summary in words: the conclusions (what a reader should take away; stored in summary.json,
shown first in the report) and the plain-text table that `synthgap study` / `synthgap demo` print and
``summary.txt`` holds. Numbers are metric units (COCO AP50 in [0, 1]) with 3 decimals."""

from __future__ import annotations

from synthgap.study.config import fraction_tag
from synthgap.study.intervals import ImageSeedBootstrap, MetricStat
from synthgap.study.summary import (NOT_LEARNED, FeatureGap, StudySummary, as_summary, metric_label, metric_name,
                                    short_target_name)


def _num(value: float | None, signed: bool = False) -> str:
    return "n/a" if value is None else (f"{value:+.3f}" if signed else f"{value:.3f}")


def _pm(stat: MetricStat | None) -> str:
    if not stat:
        return "n/a"
    return f"{stat.mean:.3f}" + ("" if stat.std is None else f" +/- {stat.std:.3f}")


def conclusions(summary: StudySummary) -> list[str]:
    """What a reader should take away, in words, from a summary (the CLI prints it; the report shows it)."""
    metric = summary.headline
    label = metric_label(metric)
    target = short_target_name(summary.target_name)
    lines = []
    for c in summary.comparison:
        m = c.metrics.get(metric)
        if not m:
            continue
        diff = m.difference
        pct = f"{fraction_tag(c.fraction)} % {target} data" + (f" ({c.train_images} images)" if c.train_images else "")
        if c.warning:
            lines.append(f"At {pct}: no conclusion: {c.warning}.")
            continue
        verb = "added" if diff.mean >= 0 else "cost"
        text = (f"At {pct}, synthetic pretraining {verb} {diff.mean:+.3f} {label} "
                f"({target} only {_pm(m.real)} -> synthetic then {target} {_pm(m.finetune)}; ")
        if diff.ci is None:
            text += "1 seed: no confidence interval, run more seeds)."
        else:
            lo, hi = diff.ci
            text += f"95 % CI of the paired difference [{lo:+.3f}, {hi:+.3f}] over {diff.n} seeds; "
            text += ("the interval excludes 0: larger than seed-to-seed variation)." if diff.excludes_zero else
                     "the interval includes 0: not distinguishable from seed-to-seed variation at this number "
                     "of seeds).")
        if m.bootstrap is not None:
            text += " " + bootstrap_words(m.bootstrap)
        lines.append(text)
    syn = summary.row("synthetic")
    if syn and syn.target.get(metric):
        own, ratio = syn.in_domain.get(metric), syn.transfer_ratio
        if syn.warning:
            lines.append(f"Synthetic only: {syn.warning}.")
        else:
            lines.append(f"Synthetic only: {syn.target[metric].mean:.3f} {label} on the {summary.target_name} test set "
                         f"vs {_num(own and own.mean)} on held-out synthetic images (transfer ratio "
                         f"{_num(ratio and ratio.mean)}): the synthetic-to-{target} gap.")
    bad = [r.name for r in summary.rows if r.learned is False]
    if bad:
        lines.append(f"Did not learn in their own domain ({', '.join(bad)}): their numbers say nothing about the "
                     f"dataset; train longer.")
    return lines


def bootstrap_words(b: ImageSeedBootstrap) -> str:
    """The bootstrap over seeds and test images in words: the interval, whether it excludes 0, which source
    of variation dominates, and roughly how many seeds / test images would resolve a difference of this size
    (where the interval includes 0: which extra data would settle it)."""
    text = (f"Over seeds and test images (hierarchical bootstrap, {b.resamples} resamples): 95 % interval "
            f"[{b.ci[0]:+.3f}, {b.ci[1]:+.3f}], P(difference > 0) = {b.p_positive:.2f}; ")
    if b.excludes_zero:
        text += (f"the interval excludes 0: synthetic pretraining {'helps' if b.mean > 0 else 'hurts'} at this "
                 "budget, beyond both the seed-to-seed and the test-image variation.")
    else:
        text += "the interval includes 0: not settled."
    spread = [f"one seed's sd {b.seed_sd:.3f}" if b.seed_sd is not None else "seed spread unknown (1 seed)",
              f"test-image sd {b.image_sd:.3f} at {b.images} images" if b.image_sd is not None else None]
    spread = ", ".join(x for x in spread if x)
    if b.dominant is not None:
        text += f" The {'seed spread' if b.dominant == 'seeds' else 'test-image spread'} dominates ({spread})."
    else:
        text += f" ({spread}.)"
    if b.mean == 0:
        return text + " The difference is 0: no number of seeds or test images resolves it."
    plural = (lambda n, what: f"about {n} {what}{'' if n == 1 else 's'}")
    seeds = plural(b.seeds_needed, "seed") if b.seeds_needed is not None else "an unknown number of seeds"
    images = plural(b.images_needed, "test image") if b.images_needed is not None else None
    text += (f" A difference of {abs(b.mean):.3f} needs {seeds} (now {b.seeds})"
             + (f" or {images} (now {b.images})" if images else "") + " (each ignoring the other source of variation).")
    if not b.excludes_zero:
        more_seeds = b.seeds_needed is None or b.seeds_needed > b.seeds
        more_images = b.images_needed is not None and b.images_needed > b.images
        if b.dominant == "seeds" or (more_seeds and not more_images):
            text += " To settle it: run more seeds" + (" (and add test images)." if more_images else ".")
        else:
            text += " To settle it: add test images" + (" (and run more seeds)." if more_seeds else ".")
    return text


def format_feature_gap(fg: FeatureGap) -> list[str]:
    """`feature_gap` as text lines: one per dataset pair, the distances beside the synthetic model's AP."""
    metric = fg.metric[1]
    lines = [f"Feature distance beside the AP gap ({fg.model}'s backbone; Fréchet distance, squared feature "
             "units):",
             f"  {'dataset pair':<28}{'images':>9}{'FD image':>10}{'FD class mean':>15}{'in-domain ' + metric:>16}"
             f"{'target ' + metric:>13}{'AP gap':>8}{'ratio':>7}"]
    for r in fg.rows:
        images = "/".join(str(n) for n in r.images or []) or "n/a"
        lines.append(f"  {r.pair:<28}{images:>9}{_num(r.image):>10}{_num(r.per_class_mean):>15}"
                     f"{_num(r.in_domain):>16}{_num(r.target):>13}{_num(r.ap_gap):>8}{_num(r.transfer_ratio):>7}")
    if fg.learned is False:
        lines.append(f"  !! {fg.model} {NOT_LEARNED}")
    return lines


def format_summary(summary: StudySummary | dict) -> str:
    """The summary (or a summary.json document of any schema) as plain text for a terminal: one line per
    cell, flags, then the conclusions."""
    summary = as_summary(summary)
    metric = summary.headline
    name = metric_name(metric)
    cols = [("in-domain", lambda r: r.in_domain.get(metric)), ("target", lambda r: r.target.get(metric)),
            ("target AP", lambda r: r.target.get(("coco", "AP")))]
    lines = [f"{'cell':<14}{'seeds':>6}" + "".join(f"{title + ' ' + metric[1] if i < 2 else title:>22}"
                                                 for i, (title, _) in enumerate(cols)) + f"{'ratio':>8}"]
    for row in summary.rows:
        ratio = row.transfer_ratio
        line = (f"{row.name:<14}{len(row.seeds):>6}" + "".join(f"{_pm(get(row)):>22}" for _, get in cols)
                + f"{_num(ratio and ratio.mean):>8}")
        if row.warning:
            line += f"  !! {row.warning}"
        lines.append(line)
    lines.append(f"(transfer ratio = target / in-domain {name}; floor for 'learned': in-domain {name} >= "
                 f"{summary.in_domain_floor:g})")
    if summary.feature_gap:
        lines += ["", *format_feature_gap(summary.feature_gap)]
    if summary.conclusions:
        lines += ["", "What this says:"] + [f"  - {c}" for c in summary.conclusions]
    return "\n".join(lines)
