"""synthgap.study.intervals: mean and std over seeds, the paired t-interval (scipy's t quantile), and the
hierarchical bootstrap over seeds and test images the study's comparison carries."""

from __future__ import annotations

import pytest

from synthgap.study.intervals import (ImageSeedBootstrap, mean_std, paired_difference, seed_image_bootstrap,
                                      t_quantile_975)


def test_t_quantiles_and_paired_interval():
    # the printed table of Student's t (two-sided 95 %), 3 decimals
    for df, table in ((1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (30, 2.042), (60, 2.000), (120, 1.980)):
        assert t_quantile_975(df) == pytest.approx(table, abs=6e-4), df
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_quantile_975(0)
    d = paired_difference([0.1, 0.3])  # mean 0.2, sd sqrt(0.02): half width 12.706 * 0.1414 / sqrt(2) = 1.2706
    assert d.mean == pytest.approx(0.2) and d.n == 2 and d.values == pytest.approx([0.1, 0.3])
    assert d.ci == pytest.approx((0.2 - 1.2706, 0.2 + 1.2706), abs=1e-4) and not d.excludes_zero
    d = paired_difference([0.05, 0.07, 0.06, 0.06, 0.06])  # small spread: the interval excludes 0
    assert 0 < d.ci[0] < 0.06 < d.ci[1] and d.excludes_zero
    assert paired_difference([0.1]).ci is None and paired_difference([]) is None


def test_mean_std_is_the_sample_std():
    s = mean_std([0.2, 0.4])
    assert s.mean == pytest.approx(0.3) and s.std == pytest.approx(0.1414213, rel=1e-6) and s.values == [0.2, 0.4]
    assert mean_std([0.5]).std is None and mean_std([]) is None


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """COCO results with matches of fake detectors on one generated test set: (real-only, finetune) per seed."""
    from synthgap.data import open_dataset
    from synthgap.metrics import evaluate
    from tests.helpers.runs import fake_predictions, make_test_set

    ds = open_dataset(make_test_set(str(tmp_path_factory.mktemp("t") / "test"), frames=6))
    samples = list(ds)
    run = lambda keep, seed: evaluate(samples, fake_predictions(samples, keep, seed), "coco",  # noqa: E731
                                      label_map=ds.label_map)
    return [(run(0.3, s), run(0.9, 100 + s)) for s in (1, 2, 3)]


def test_bootstrap_over_seeds_and_images(scored):
    """The mean is the seeds' mean difference on the full test set (the engine's AP50); one pair gives the
    paired image bootstrap's interval; identical arms give a zero difference that nothing resolves."""
    from synthgap.metrics.bootstrap import paired_difference as image_paired

    b = seed_image_bootstrap(scored, "AP50", resamples=300, seed=4)
    per_seed = [ft.stats["AP50"] - real.stats["AP50"] for real, ft in scored]
    assert isinstance(b, ImageSeedBootstrap) and b.mean == pytest.approx(sum(per_seed) / 3, abs=1e-12)
    assert b.ci[0] <= b.mean <= b.ci[1] and 0.0 <= b.p_positive <= 1.0 and (b.seeds, b.images) == (3, 6)
    assert b.seed_sd == pytest.approx(mean_std(per_seed).std) and b.image_sd > 0
    assert b.dominant in ("seeds", "test images") and (b.resamples, b.seed) == (300, 4)
    assert ImageSeedBootstrap.from_dict(b.to_dict()) == b
    one = seed_image_bootstrap(scored[:1], "AP50", resamples=300, seed=4)
    ref = image_paired(*scored[0], metric="AP50", resamples=300, seed=4)
    assert one.ci == pytest.approx((ref.low, ref.high)) and one.seed_sd is None and one.seeds_needed is None
    same = seed_image_bootstrap([(a, a) for a, _ in scored], "AP50", resamples=50)
    assert same.mean == 0 and same.ci == (0.0, 0.0) and not same.excludes_zero and same.images_needed is None
