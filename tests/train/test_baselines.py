"""Baselines (majority, TF-IDF + logistic regression), bootstrap intervals, and the chapter-1 comparison table."""
from __future__ import annotations

import numpy as np
import pytest

from xlprune_lib.train import baselines, comparison
from xlprune_lib.measure import stats
from xlprune_lib.config import UserError
from xlprune_lib.train.finetune import classification_metrics


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


def test_results_tables_refuse_an_accuracy_without_its_interval(tmp_path):
    from xlprune_lib.book import results

    rows = [{"approach": "x", "sparsity": 0.5, "validation_accuracy": 0.8, "test_accuracy": 0.7, "steps": 1,
             "seconds": 1.0}]
    config = {"profile": "smoke", "seed": 0}
    with pytest.raises(ValueError, match="ci_low"):
        results.save_table(rows, "04_iterative", tmp_path, config)
    path = results.save_table(rows, "04_iterative", tmp_path, config, sizes={"validation": 100, "test": 200})
    assert {"validation_ci_low", "test_ci_high"} <= set(results.check_table(path))
    bare = tmp_path / "bare" / "04_iterative.csv"
    bare.parent.mkdir()
    bare.write_text("profile,seed,approach,sparsity,validation_accuracy,test_accuracy,steps,seconds\n"
                    "smoke,0,x,0.5,0.8,0.7,1,1.0\n")
    with pytest.raises(UserError, match="ci_low"):
        results.check_table(bare)


def test_committed_results_carry_intervals_on_every_accuracy():
    from xlprune_lib.book import results

    for path in sorted(results.results_dir().glob("*.csv")):
        results.check_table(path)     # raises when an *_accuracy column has no *_ci_low / *_ci_high


def test_every_evaluation_carries_its_interval():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0]] * 25)
    labels = np.array([0, 1, 1, 1] * 25)
    m = classification_metrics(logits, labels)
    assert m["accuracy"] == 0.75 and m["ci_low"] < 0.75 < m["ci_high"]


def test_tfidf_logreg_learns_the_real_corpus_and_chooses_on_validation(rows):
    from xlprune_lib.train.data import load_offline

    data = load_offline(max_examples=2500, rows=rows)
    out = baselines.tfidf_logreg(data)
    maj = baselines.majority(data)
    assert tuple(out["ngram_range"]) in baselines.NGRAMS and out["C"] in baselines.C_GRID
    # words carry sentiment: far above always-the-majority-class
    assert out["validation_accuracy"] > maj["validation_accuracy"] + 0.05
    assert out["test_ci_low"] < out["test_accuracy"] < out["test_ci_high"]
    assert out["test_accuracy"] == pytest.approx(np.mean(out["test_correct"]))
    assert baselines.tfidf_logreg(data)["test_accuracy"] == out["test_accuracy"]   # same seed, same numbers


def test_majority_predicts_the_training_majority(rows):
    from xlprune_lib.train.data import load_offline

    data = load_offline(max_examples=500, rows=rows)
    out = baselines.majority(data)
    labels = np.asarray(data["train"]["label"])
    assert out["predicts"] == int(np.bincount(labels).argmax())
    assert out["test_accuracy"] == pytest.approx(np.mean(np.asarray(data["test"]["label"]) == out["predicts"]))


def test_comparison_rows_and_bad_names(smoke):
    row = comparison.model_row(smoke, "majority")
    assert set(comparison.COLUMNS) == set(row) and row["model"] == "majority" and row["profile"] == "smoke"
    with pytest.raises(UserError, match="unknown model 'bert'"):
        comparison.models_table(smoke, models=["bert"])
    with pytest.raises(UserError, match="needs a warm-start profile"):
        comparison.model_row(smoke, "source-bert")


def test_a_difference_is_called_one_only_when_the_intervals_are_apart():
    assert stats.apart((0.70, 0.74), (0.75, 0.79)) and not stats.apart((0.70, 0.76), (0.75, 0.79))
    assert stats.difference(0.80, (0.78, 0.82), 0.72, (0.70, 0.74)) == "+8.0 points, intervals apart"
    assert stats.difference(0.72, (0.70, 0.74), 0.73, (0.71, 0.75)) == "-1.0 points, intervals overlap: not a difference"
