"""Baselines that answer "is this good?": the majority class, and TF-IDF + logistic regression.

TF-IDF features (Sparck Jones 1972; Salton & Buckley 1988) with an L2-regularised logistic regression are the
classic bag-of-words text classifier (scikit-learn's ``TfidfVectorizer`` + ``LogisticRegression``). A
transformer that does not beat it has learned little beyond which words occur. The n-gram range and the
inverse regularisation strength C are chosen on the validation split; test is touched once.
"""
from __future__ import annotations

import itertools

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from ..measure.stats import with_ci

NGRAMS = ((1, 1), (1, 2))
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)


def majority_label(train_labels) -> int:
    """The most frequent label of ``train_labels`` (shape ``(n,)``, ints; ties go to the smallest)."""
    return int(np.bincount(np.asarray(train_labels)).argmax())


def majority(data) -> dict:
    """Always the training split's most frequent class: ``<split>_accuracy`` and its interval
    (``<split>_ci_low`` / ``<split>_ci_high``) on validation and test. Figures drawn on validation take the
    validation rate: the two splits' class balances differ (57.5% and 64.0% on the default split)."""
    label = majority_label(data["train"]["label"])
    out = {"model": "majority", "predicts": label}
    for split in ("validation", "test"):
        out.update(with_ci(split, np.asarray(data[split]["label"]) == label))
    return out


def tfidf_logreg(data, seed: int = 0) -> dict:
    """TF-IDF + logistic regression with n-grams and C chosen on validation (grid :data:`NGRAMS` x :data:`C_GRID`).

    ``data``: a ``DatasetDict`` with train / validation / test (``text``, ``label``). Returns the accuracies with
    95% intervals, the chosen ``ngram_range`` and ``C``, and the per-example test correctness (``test_correct``).
    """
    y = {s: np.asarray(data[s]["label"]) for s in ("train", "validation", "test")}
    best = None
    for ngrams, c in itertools.product(NGRAMS, C_GRID):
        vec = TfidfVectorizer(ngram_range=ngrams, sublinear_tf=True, min_df=2)
        x_train = vec.fit_transform(data["train"]["text"])
        clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x_train, y["train"])
        val = clf.score(vec.transform(data["validation"]["text"]), y["validation"])
        if best is None or val > best[0]:
            best = (val, ngrams, c, vec, clf)
    _, ngrams, c, vec, clf = best
    out = {"model": "tfidf-logreg", "ngram_range": list(ngrams), "C": c}
    for split in ("validation", "test"):
        correct = clf.predict(vec.transform(data[split]["text"])) == y[split]
        out.update(with_ci(split, correct))
        out[f"{split}_correct"] = correct
    return out
