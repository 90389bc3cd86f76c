"""Baselines (majority, TF-IDF + logistic regression), bootstrap intervals, and the chapter-1 comparison table."""
from __future__ import annotations

import numpy as np
import pytest

from xlprune_lib import baselines, comparison, stats
from xlprune_lib.config import UserError
from xlprune_lib.finetune import classification_metrics


def test_bootstrap_interval_brackets_the_accuracy_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = rng.random(200) < 0.8
    large = rng.random(5000) < 0.8
    lo_s, hi_s = stats.accuracy_ci(small, seed=1)
    lo_l, hi_l = stats.accuracy_ci(large, seed=1)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 3           # the width falls like 1 / sqrt(n)
    # about +-1.96 * sqrt(p (1 - p) / n) for a binomial mean
    assert (hi_l - lo_l) == pytest.approx(2 * 1.96 * np.sqrt(0.8 * 0.2 / 5000), rel=0.15)
    assert stats.accuracy_ci(small, seed=1) == (lo_s, hi_s)  # deterministic
    assert stats.accuracy_ci(np.ones(30)) == (1.0, 1.0)
    with pytest.raises(ValueError):
        stats.accuracy_ci([])


def test_every_evaluation_carries_its_interval():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0]] * 25)
    labels = np.array([0, 1, 1, 1] * 25)
    m = classification_metrics(logits, labels)
    assert m["accuracy"] == 0.75 and m["ci_low"] < 0.75 < m["ci_high"]


def test_tfidf_logreg_learns_the_real_corpus_and_chooses_on_validation(rows):
    from xlprune_lib.data import load_offline

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
    from xlprune_lib.data import load_offline

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
