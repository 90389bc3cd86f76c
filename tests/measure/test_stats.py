"""Uncertainty of an accuracy (``measure/stats.py``): the exact percentile-bootstrap interval, its columns on
result rows, and when a difference between two accuracies is called one."""

import numpy as np
import pytest

from xlprune_lib.measure import stats


def test_interval_by_hand_on_small_n():
    """The bootstrap distribution of k/n correct is Binomial(n, k/n) / n; its 2.5% and 97.5% points by hand.

    n = 10, k = 5: P(X <= 1) = 11/1024 < 0.025 <= P(X <= 2) = 56/1024, and symmetrically P(X <= 7) = 968/1024
    < 0.975 <= P(X <= 8) = 1013/1024, so the interval is (2/10, 8/10). n = 4, k = 2: P(X = 0) = 1/16 already
    exceeds 2.5% and P(X <= 3) = 15/16 < 97.5%, so (0, 1).
    """
    assert stats.interval(0.5, 10) == pytest.approx((0.2, 0.8), abs=1e-12)
    assert stats.interval(0.5, 4) == pytest.approx((0.0, 1.0), abs=1e-12)
    # every example right (or wrong): every resample is too, the interval is the point
    assert stats.interval(1.0, 7) == (1.0, 1.0) and stats.interval(0.0, 7) == (0.0, 0.0)
    # the accuracy is rounded to a count of examples first
    assert stats.interval(0.49, 10) == stats.interval(0.5, 10)


def test_interval_contains_the_estimate_and_shrinks_with_n_and_confidence():
    widths = []
    for n in (50, 200, 800, 3200):
        low, high = stats.interval(0.7, n)
        assert low < 0.7 < high
        widths.append(high - low)
    assert widths == sorted(widths, reverse=True) and widths[-1] < widths[0] / 4   # about 1 / sqrt(n)
    low95, high95 = stats.interval(0.7, 800)
    low99, high99 = stats.interval(0.7, 800, confidence=0.99)
    low50, high50 = stats.interval(0.7, 800, confidence=0.5)
    assert low99 <= low95 < low50 < 0.7 < high50 < high95 <= high99


def test_bootstrap_interval_brackets_the_accuracy_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = rng.random(200) < 0.8
    large = rng.random(5000) < 0.8
    lo_s, hi_s = stats.accuracy_ci(small)
    lo_l, hi_l = stats.accuracy_ci(large)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 3           # the width falls like 1 / sqrt(n)
    # about +-1.96 * sqrt(p (1 - p) / n) for a binomial mean
    assert (hi_l - lo_l) == pytest.approx(2 * 1.96 * np.sqrt(0.8 * 0.2 / 5000), rel=0.15)
    assert stats.accuracy_ci(np.ones(30)) == (1.0, 1.0)
    with pytest.raises(ValueError):
        stats.accuracy_ci([])
    for bad in ((0.5, 0), (1.2, 10), (-0.1, 10)):
        with pytest.raises(ValueError):
            stats.interval(*bad)


def test_exact_interval_is_the_monte_carlo_bootstrap_in_the_limit():
    """The binomial percentiles equal scipy's percentile bootstrap with many resamples, for any arrangement
    of the same k correct out of n (the interval depends only on k and n)."""
    from scipy.stats import bootstrap

    rng = np.random.default_rng(3)
    for n, k in ((1494, 1195), (1399, 1149), (300, 40)):
        x = np.zeros(n)
        x[rng.choice(n, k, replace=False)] = 1.0
        mc = bootstrap((x,), np.mean, n_resamples=40000, method="percentile", vectorized=True,
                       random_state=np.random.default_rng(0)).confidence_interval
        low, high = stats.interval(k / n, n)
        assert stats.accuracy_ci(x) == (low, high) == stats.accuracy_ci(rng.permutation(x))
        assert low == pytest.approx(mc.low, abs=1.5 / n) and high == pytest.approx(mc.high, abs=1.5 / n)
        assert low < k / n < high


def test_accuracy_ci_takes_bools_or_zeros_and_ones():
    correct = [True, False, True, True]
    assert stats.accuracy_ci(correct) == stats.accuracy_ci([1, 0, 1, 1]) == stats.interval(0.75, 4)
    assert stats.accuracy_ci(correct, confidence=0.5) == stats.interval(0.75, 4, confidence=0.5)
    with pytest.raises(ValueError, match="no examples"):
        stats.accuracy_ci(np.array([]))


def test_with_ci_gives_the_three_columns_of_a_results_file():
    correct = np.array([1, 1, 0, 1, 0, 1, 1, 1, 1, 0])
    out = stats.with_ci("test", correct)
    assert list(out) == ["test_accuracy", "test_ci_low", "test_ci_high"]
    assert out["test_accuracy"] == pytest.approx(0.7, abs=1e-12)
    assert (out["test_ci_low"], out["test_ci_high"]) == stats.accuracy_ci(correct)
    assert out["test_ci_low"] < 0.7 < out["test_ci_high"]


def test_add_intervals_puts_one_kind_of_interval_on_every_accuracy():
    """Cached rows (no interval, or one from another method) and new rows end up with the same interval;
    a split without a size is an error, not a silent gap."""
    rows = [{"method": "a", "validation_accuracy": 0.8, "test_accuracy": 0.75},
            {"method": "b", "validation_accuracy": 0.8, "validation_ci_low": 0.0, "validation_ci_high": 1.0,
             "test_accuracy": float("nan")}]
    out = stats.add_intervals(rows, {"validation": 1000, "test": 1500})
    assert "validation_ci_low" not in rows[0]                      # the input is untouched
    assert (out[0]["validation_ci_low"], out[0]["validation_ci_high"]) == stats.interval(0.8, 1000)
    assert (out[1]["validation_ci_low"], out[1]["validation_ci_high"]) == stats.interval(0.8, 1000)
    assert out[0]["test_ci_low"] < 0.75 < out[0]["test_ci_high"] and np.isnan(out[1]["test_ci_low"])
    with pytest.raises(ValueError, match="test"):
        stats.add_intervals(rows, {"validation": 1000})


def test_add_intervals_leaves_other_columns_and_gives_a_missing_accuracy_nan_bounds():
    rows = [{"method": "c", "validation_accuracy": None, "seconds": 3.0, "accuracy_note": "x"}]
    (out,) = stats.add_intervals(rows, {"validation": 10})
    assert out["method"] == "c" and out["seconds"] == 3.0 and out["accuracy_note"] == "x"
    assert np.isnan(out["validation_ci_low"]) and np.isnan(out["validation_ci_high"])
    assert set(out) == {"method", "validation_accuracy", "seconds", "accuracy_note", "validation_ci_low",
                        "validation_ci_high"}
    assert stats.add_intervals([], {}) == []
    # a split of size 10: the interval of 5 right out of 10 (see test_interval_by_hand_on_small_n)
    (half,) = stats.add_intervals([{"validation_accuracy": 0.5}], {"validation": 10})
    assert (half["validation_ci_low"], half["validation_ci_high"]) == pytest.approx((0.2, 0.8), abs=1e-12)


def test_a_difference_is_called_one_only_when_the_intervals_are_apart():
    assert stats.apart((0.70, 0.74), (0.75, 0.79)) and not stats.apart((0.70, 0.76), (0.75, 0.79))
    assert stats.difference(0.80, (0.78, 0.82), 0.72, (0.70, 0.74)) == "+8.0 points, intervals apart"
    assert stats.difference(0.72, (0.70, 0.74), 0.73, (0.71, 0.75)) == "-1.0 points, intervals overlap: not a difference"


def test_apart_is_symmetric_and_touching_intervals_overlap():
    a, b = (0.70, 0.74), (0.75, 0.79)
    assert stats.apart(b, a) == stats.apart(a, b) is True
    assert not stats.apart((0.70, 0.75), (0.75, 0.79)) and not stats.apart((0.75, 0.79), (0.70, 0.75))
    assert not stats.apart((0.6, 0.9), (0.7, 0.8))           # one inside the other
    assert stats.difference(0.5, (0.4, 0.6), 0.5, (0.4, 0.6)) == "+0.0 points, intervals overlap: not a difference"
