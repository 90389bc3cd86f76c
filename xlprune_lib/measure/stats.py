"""Uncertainty of an accuracy: a 95% percentile-bootstrap interval over the evaluation examples.

An accuracy measured on n examples is the mean of n 0/1 outcomes, k of them 1. Resampling the examples with
replacement (Efron & Tibshirani 1993, ch. 13, the percentile interval) draws each outcome as 1 with
probability k / n, independently, so the number of 1s in a resample is exactly Binomial(n, k / n): the
bootstrap distribution of the accuracy is Binomial(n, k / n) / n. Its 2.5th and 97.5th percentiles are
therefore computed exactly here (the limit of infinitely many resamples) instead of by Monte Carlo. Two
consequences the library relies on: the interval depends only on (k, n), so it can be attached to any
recorded accuracy whose split size is known (:func:`add_intervals`), and it is deterministic. On this book's
test split (about 1,500 examples) it is about +-2 points, so differences smaller than that are not called
differences.
"""
from __future__ import annotations

import re

import numpy as np
from scipy.stats import binom


CONFIDENCE = 0.95
_ACCURACY = re.compile(r"^(?P<split>.+)_accuracy$")


def interval(accuracy: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """``(low, high)``: the exact percentile-bootstrap interval of an accuracy (a fraction) measured on ``n``
    examples. ``accuracy * n`` is rounded to the count of correct examples.

    Raises ``ValueError`` if ``n < 1`` or the accuracy is outside [0, 1].
    """
    if n < 1:
        raise ValueError(f"an accuracy needs at least one example, got n={n}")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got {accuracy}")
    k = round(accuracy * n)
    tail = (1.0 - confidence) / 2
    low, high = binom.ppf([tail, 1.0 - tail], n, k / n)
    return float(low) / n, float(high) / n


def accuracy_ci(correct, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """``(low, high)`` bootstrap interval of the mean of ``correct`` (shape ``(n,)``, 0/1 or bool; fractions).

    Raises ``ValueError`` on an empty array.
    """
    x = np.asarray(correct, dtype=float)
    if x.size == 0:
        raise ValueError("no examples")
    return interval(float(x.mean()), x.size, confidence)


def with_ci(prefix: str, correct) -> dict:
    """``{prefix_accuracy, prefix_ci_low, prefix_ci_high}`` of a 0/1 vector (the columns results files carry)."""
    low, high = accuracy_ci(correct)
    return {f"{prefix}_accuracy": float(np.mean(correct)), f"{prefix}_ci_low": low, f"{prefix}_ci_high": high}


def add_intervals(rows: list[dict], sizes: dict[str, int]) -> list[dict]:
    """``rows`` with ``<split>_ci_low`` / ``<split>_ci_high`` set beside every ``<split>_accuracy`` whose split
    is in ``sizes`` (``{"validation": 1399, "test": 1494}``: examples per split), recomputed from the accuracy
    and the size, so every row of a table gets the same kind of interval whether it was measured now or read
    from a cached run. Missing or NaN accuracies get NaN bounds. New dicts; ``rows`` is not changed.

    Raises ``ValueError`` if a row has an accuracy of a split not in ``sizes``.
    """
    out = []
    for row in rows:
        row = dict(row)
        for key, value in list(row.items()):
            if not (m := _ACCURACY.match(key)):
                continue
            split = m["split"]
            if split not in sizes:
                raise ValueError(f"no size for split {split!r} (column {key}); known: {', '.join(sizes)}")
            bounds = (np.nan, np.nan) if value is None or np.isnan(value) else interval(value, sizes[split])
            row[f"{split}_ci_low"], row[f"{split}_ci_high"] = bounds
        out.append(row)
    return out


def apart(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two intervals ``(low, high)`` do not overlap: only then is a difference between the two
    accuracies called a difference in this book."""
    return a[0] > b[1] or b[0] > a[1]


def difference(a: float, a_interval: tuple[float, float], b: float, b_interval: tuple[float, float]) -> str:
    """``a - b`` in percentage points and what the 95% intervals say about it, as one phrase:
    ``"+1.2 points, intervals overlap: not a difference"`` or ``"+6.0 points, intervals apart"``."""
    verdict = "intervals apart" if apart(a_interval, b_interval) else "intervals overlap: not a difference"
    return f"{100 * (a - b):+.1f} points, {verdict}"
