"""Verdicts the chapters print beside their tables, decided by fixed rules on measured rows.

A generated sentence in a chapter calls these functions, so its wording follows the numbers: two accuracies
are called different only when their 95% bootstrap intervals are apart (:func:`..measure.stats.apart`), as
Blalock et al. (2020) ask of pruning comparisons. Rows are dicts with ``<split>_accuracy``, ``<split>_ci_low``
and ``<split>_ci_high`` (fractions in [0, 1]), as the evaluator and the reference tables give them.
"""
from __future__ import annotations

from ..measure import stats


def _interval(row: dict, split: str) -> tuple[float, float]:
    return row[f"{split}_ci_low"], row[f"{split}_ci_high"]


def against_control(rows: dict[str, dict], control: str = "random", split: str = "test") -> dict:
    """Scores at one sparsity against the best of them and against the ``control``.

    ``rows``: ``{method: row}``. Returns ``best`` (the highest accuracy), ``ties`` (the other methods whose
    interval overlaps the best's: not told apart from it) and ``beaten`` (the methods other than the control
    that are above it with intervals apart), both in the order of ``rows``. Raises ``KeyError`` if the control
    has no row.
    """
    acc = {m: r[f"{split}_accuracy"] for m, r in rows.items()}
    best = max(acc, key=acc.get)
    ties = [m for m in rows if m != best and not stats.apart(_interval(rows[m], split), _interval(rows[best], split))]
    base = rows[control]
    beaten = [m for m in rows if m != control and acc[m] > acc[control]
              and stats.apart(_interval(rows[m], split), _interval(base, split))]
    return {"best": best, "ties": ties, "beaten": beaten}


def keep_more_despite_size(inside: dict[str, dict], rows: dict[str, dict], control: str = "random",
                           split: str = "validation") -> list[str]:
    """The scores whose cut removes more of the largest weights than the ``control``'s does and still keeps
    more accuracy, intervals apart: evidence that weight size alone does not say what a weight does.

    ``inside``: :meth:`ScoreStudy.inside_cut` (``largest_removed``: share of the largest 10% by |w| removed);
    ``rows``: ``{method: row}`` of the same cuts.
    """
    base = inside[control]["largest_removed"]
    return [m for m in inside if m != control and inside[m]["largest_removed"] > base
            and rows[m][f"{split}_accuracy"] > rows[control][f"{split}_accuracy"]
            and stats.apart(_interval(rows[m], split), _interval(rows[control], split))]
