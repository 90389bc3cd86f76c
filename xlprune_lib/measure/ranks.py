"""Comparing importance scores: rank correlations between the scores of the same units (chapter 2's heatmap).

Spearman's rho is the Pearson correlation of the ranks; ties are broken by position, which for continuous
scores over millions of weights changes nothing measurable.
"""
from __future__ import annotations

import numpy as np
import torch


def _centred_ranks(a: torch.Tensor) -> torch.Tensor:
    """Ranks 0..n-1 of ``a`` (ties broken by position), centred, in float64."""
    ranks = torch.empty(len(a), dtype=torch.float64)
    ranks.scatter_(0, torch.argsort(a, stable=True), torch.arange(len(a), dtype=torch.float64))
    return ranks - ranks.mean()


def spearman_matrix(vectors: list[torch.Tensor]) -> np.ndarray:
    """Spearman rank correlations of every pair of score vectors (Pearson correlation of the ranks).

    Each vector is ranked once, so k vectors of n scores cost k sorts, not k² (chapter 2 compares five scores
    of every prunable weight).
    """
    ranks = [_centred_ranks(v) for v in vectors]
    norms = [r.norm() for r in ranks]
    k = len(ranks)
    out = np.eye(k)
    for i in range(k):
        for j in range(i + 1, k):
            out[i, j] = out[j, i] = float((ranks[i] @ ranks[j]) / (norms[i] * norms[j]))
    return out


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two score vectors (ties broken by position)."""
    return float(spearman_matrix([a, b])[0, 1])
