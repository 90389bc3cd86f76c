"""Uncertainty of an accuracy: a 95% bootstrap interval over the evaluation examples (Efron & Tibshirani 1993).

An accuracy measured on n examples is the mean of n 0/1 outcomes; resampling the examples with replacement and
taking the 2.5th and 97.5th percentiles of the resampled means gives the interval (``scipy.stats.bootstrap``,
percentile method). On this book's test split (about 1,500 examples) it is about +-2 points, so differences
smaller than that are not called differences.
"""
from __future__ import annotations

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000


def accuracy_ci(correct, seed: int = 0, confidence: float = CONFIDENCE, resamples: int = RESAMPLES) -> tuple:
    """``(low, high)`` bootstrap interval of the mean of ``correct`` (shape ``(n,)``, 0/1 or bool; a fraction).

    Deterministic for a given ``seed``. Raises ``ValueError`` on an empty array.
    """
    from scipy.stats import bootstrap

    x = np.asarray(correct, dtype=float)
    if x.size == 0:
        raise ValueError("no examples")
    if x.min() == x.max():           # every resample has the same mean
        return float(x[0]), float(x[0])
    res = bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=resamples, method="percentile",
                    random_state=np.random.default_rng(seed), vectorized=True)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def with_ci(prefix: str, correct, seed: int = 0) -> dict:
    """``{prefix_accuracy, prefix_ci_low, prefix_ci_high}`` of a 0/1 vector (the columns results files carry)."""
    low, high = accuracy_ci(correct, seed)
    return {f"{prefix}_accuracy": float(np.mean(correct)), f"{prefix}_ci_low": low, f"{prefix}_ci_high": high}
