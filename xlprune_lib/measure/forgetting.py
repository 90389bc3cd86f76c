"""What pruning forgets: the examples whose prediction changes when a model is pruned.

Hooker et al. (2019, "What Do Compressed Deep Neural Networks Forget?") find that pruning at moderate
sparsity costs little *average* accuracy but changes the predictions on a small set of examples, and that
those examples are disproportionately hard or atypical ones. Here, for one dense and one pruned classifier on
the same examples: how many predictions flip, how many of those were right before (lost) or wrong before
(gained), and how the flips spread over the dense model's confidence (its softmax probability of the class it
predicts): if pruning mostly forgets what the dense model was unsure of, the flips pile up in the lowest bins.
"""
from __future__ import annotations

import numpy as np
from scipy.special import softmax


def flips(labels, dense_logits, pruned_logits) -> dict:
    """Counts over the examples: ``examples``, ``flipped`` (the predicted class changed), ``lost`` (dense right,
    pruned wrong), ``gained`` (dense wrong, pruned right), both accuracies, and ``pruned_classes``, how many
    classes the pruned model predicts at all (1 when it collapsed to one class: its flips are then every example
    the dense model gave another class, whatever their difficulty). ``labels``: ``(n,)`` ints; logits:
    ``(n, classes)``. Raises ``ValueError`` when the shapes disagree."""
    labels, dense, pruned = np.asarray(labels), np.asarray(dense_logits), np.asarray(pruned_logits)
    if dense.shape != pruned.shape or dense.shape[0] != labels.shape[0]:
        raise ValueError(f"shapes disagree: labels {labels.shape}, dense {dense.shape}, pruned {pruned.shape}")
    d, p = dense.argmax(-1), pruned.argmax(-1)
    return {"examples": int(len(labels)), "flipped": int((d != p).sum()),
            "lost": int(((d == labels) & (p != labels)).sum()), "gained": int(((d != labels) & (p == labels)).sum()),
            "dense_accuracy": float((d == labels).mean()), "pruned_accuracy": float((p == labels).mean()),
            "pruned_classes": int(len(np.unique(p)))}


def by_confidence(labels, dense_logits, pruned_logits, bins: int = 5) -> list[dict]:
    """The examples split into ``bins`` groups of (nearly) equal size by the dense model's confidence, lowest
    first; per group its confidence range, ``examples``, ``flipped_share`` (share whose prediction changed),
    ``lost_share`` (share the dense model had right and the pruned one has wrong) and the dense accuracy."""
    labels, dense, pruned = np.asarray(labels), np.asarray(dense_logits), np.asarray(pruned_logits)
    confidence = softmax(dense.astype(np.float64), axis=-1).max(-1)
    d, p = dense.argmax(-1), pruned.argmax(-1)
    rows = []
    for part in np.array_split(np.argsort(confidence, kind="stable"), bins):
        rows.append({"confidence_low": float(confidence[part].min()), "confidence_high": float(confidence[part].max()),
                     "examples": int(len(part)), "flipped_share": float((d[part] != p[part]).mean()),
                     "lost_share": float(((d[part] == labels[part]) & (p[part] != labels[part])).mean()),
                     "dense_accuracy": float((d[part] == labels[part]).mean())})
    return rows


def forgotten(labels, dense_logits, pruned_logits) -> list[dict]:
    """The examples the pruned model lost (dense right, pruned wrong), least confident first: ``index`` (in the
    split's order), ``label`` and the dense model's ``confidence``."""
    labels, dense, pruned = np.asarray(labels), np.asarray(dense_logits), np.asarray(pruned_logits)
    confidence = softmax(dense.astype(np.float64), axis=-1).max(-1)
    lost = np.flatnonzero((dense.argmax(-1) == labels) & (pruned.argmax(-1) != labels))
    return [{"index": int(i), "label": int(labels[i]), "confidence": float(confidence[i])}
            for i in lost[np.argsort(confidence[lost], kind="stable")]]
