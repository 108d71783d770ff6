"""synthgap.study.text: the conclusions follow the numbers (t-interval and bootstrap, both ways), the
target domain is named for what it is, and a summary written before schema 2 prints as it printed then."""

from __future__ import annotations

import os

import pytest

from synthgap.study import (CellRow, Comparison, ImageSeedBootstrap, MetricComparison, StudySummary, conclusions,
                            format_summary, mean_std, paired_difference, read_summary)

DATA = os.path.join(os.path.dirname(__file__), "data")
AP50 = ("coco", "AP50")


def _boot(mean, ci, *, seed_sd, image_sd, dominant, seeds_needed, images_needed, seeds=3, images=50):
    return ImageSeedBootstrap(metric="AP50", mean=mean, ci=ci, p_positive=0.5 + mean, seed_sd=seed_sd,
                              image_sd=image_sd, dominant=dominant, seeds=seeds, images=images,
                              seeds_needed=seeds_needed, images_needed=images_needed, resamples=1000, seed=0)


def _summary(real, ft, boot, target_name="real"):
    """One budget (25 %, 20 images), 3 seeds, both arms learned."""
    rows = [CellRow(name=n, kind=n.split("-")[0], fraction=0.25, seeds=[0, 1, 2], target={AP50: mean_std(v)},
                    in_domain={AP50: mean_std([0.6, 0.6, 0.6])}, learned=True)
            for n, v in (("real-25", real), ("finetune-25", ft))]
    diff = paired_difference([b - a for a, b in zip(real, ft)])
    c = Comparison(fraction=0.25, real_cell="real-25", finetune_cell="finetune-25", seeds=[0, 1, 2], train_images=20,
                   metrics={AP50: MetricComparison(real=mean_std(real), finetune=mean_std(ft), difference=diff,
                                                   bootstrap=boot)})
    return StudySummary(rows=rows, comparison=[c], target_name=target_name)


def test_an_interval_that_excludes_zero_is_said_plainly():
    boot = _boot(0.1, (0.06, 0.14), seed_sd=0.01, image_sd=0.02, dominant="test images", seeds_needed=1,
                 images_needed=8)
    (line,) = conclusions(_summary([0.30, 0.31, 0.29], [0.40, 0.41, 0.39], boot))
    assert "synthetic pretraining added +0.100 COCO AP50" in line
    assert "95 % interval [+0.060, +0.140], P(difference > 0) = 0.60" in line
    assert "the interval excludes 0: synthetic pretraining helps at this budget" in line
    assert "The test-image spread dominates (one seed's sd 0.010, test-image sd 0.020 at 50 images)" in line
    assert "needs about 1 seed (now 3) or about 8 test images (now 50)" in line and "To settle it" not in line
    hurt = _boot(-0.1, (-0.14, -0.06), seed_sd=0.01, image_sd=0.02, dominant="test images", seeds_needed=1,
                 images_needed=8)
    (line,) = conclusions(_summary([0.40, 0.41, 0.39], [0.30, 0.31, 0.29], hurt))
    assert "synthetic pretraining cost -0.100 COCO AP50" in line and "synthetic pretraining hurts" in line


@pytest.mark.parametrize("dominant, seeds_needed, images_needed, settle", [
    ("seeds", 40, 30, "To settle it: run more seeds."),                               # the seeds' spread is the problem
    ("seeds", 40, 400, "To settle it: run more seeds (and add test images)."),
    ("test images", 2, 400, "To settle it: add test images."),                          # the test images' spread
    ("test images", 12, 400, "To settle it: add test images (and run more seeds)."),
])
def test_an_interval_that_includes_zero_says_which_data_would_settle_it(dominant, seeds_needed, images_needed, settle):
    boot = _boot(0.02, (-0.03, 0.07), seed_sd=0.06, image_sd=0.01, dominant=dominant, seeds_needed=seeds_needed,
                 images_needed=images_needed)
    (line,) = conclusions(_summary([0.30, 0.36, 0.26], [0.33, 0.37, 0.28], boot))
    assert "the interval includes 0: not settled" in line and "excludes 0" not in line.split("Over seeds")[1]
    which = "seed spread" if dominant == "seeds" else "test-image spread"
    assert f"The {which} dominates" in line
    assert f"A difference of 0.020 needs about {seeds_needed} seeds (now 3) or about {images_needed} test images " \
           "(now 50)" in line
    assert line.endswith(settle)


def test_one_seed_and_a_zero_difference():
    one = _boot(0.05, (-0.01, 0.11), seed_sd=None, image_sd=0.03, dominant=None, seeds_needed=None,
                images_needed=120, seeds=1)
    (line,) = conclusions(_summary([0.3, 0.3, 0.3], [0.35, 0.35, 0.35], one))
    assert "seed spread unknown (1 seed)" in line and "an unknown number of seeds (now 1)" in line
    assert line.endswith("To settle it: add test images (and run more seeds).")
    zero = _boot(0.0, (-0.02, 0.02), seed_sd=0.01, image_sd=0.01, dominant="test images", seeds_needed=None,
                 images_needed=None)
    (line,) = conclusions(_summary([0.3, 0.3, 0.3], [0.3, 0.3, 0.3], zero))
    assert line.endswith("The difference is 0: no number of seeds or test images resolves it.")


def test_a_procedural_target_is_not_called_real():
    boot = _boot(0.1, (0.06, 0.14), seed_sd=0.01, image_sd=0.02, dominant="test images", seeds_needed=1,
                 images_needed=8)
    s = _summary([0.30, 0.31, 0.29], [0.40, 0.41, 0.39], boot, target_name="target (procedural stand-in)")
    syn = CellRow(name="synthetic", kind="synthetic", fraction=None, seeds=[0, 1, 2],
                  target={AP50: mean_std([0.1, 0.1, 0.1])}, in_domain={AP50: mean_std([0.8, 0.8, 0.8])},
                  transfer_ratio=mean_std([0.125] * 3), learned=True)
    s = StudySummary(rows=[syn, *s.rows], comparison=s.comparison, target_name=s.target_name)
    text = " ".join(conclusions(s))
    assert "At 25 % target data (20 images)" in text and "(target only 0.300 +/- 0.010 -> synthetic then target" in text
    assert "on the target (procedural stand-in) test set" in text and "synthetic-to-target gap" in text
    assert "real" not in text


def test_a_schema_1_summary_prints_as_it_printed():
    """summary_v1.json and summary_v1.txt were written by the code of commit 34529bf."""
    old = read_summary(os.path.join(DATA, "summary_v1.json"))
    assert old.schema_version == 1
    assert format_summary(old) + "\n" == open(os.path.join(DATA, "summary_v1.txt"), encoding="utf-8").read()
