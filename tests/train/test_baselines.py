"""Baselines (majority, TF-IDF + logistic regression), bootstrap intervals, and the chapter-1 comparison table."""
from __future__ import annotations

import numpy as np
import pytest

from xlprune_lib.train import baselines
from xlprune_lib.config import UserError
from xlprune_lib.train.finetune import classification_metrics


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


