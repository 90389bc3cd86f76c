"""Chapter 2's measurements on one trained classifier, no fine-tuning: accuracy curves over sparsities, the
per-block sensitivity scan and the sublayer ablation. Each prunes copies of the model; the model itself is
never changed."""
from __future__ import annotations

from dataclasses import asdict

import torch

from ..xlnet.masks import copy_model, prunable_parameters, prune_to
from ..xlnet.gates import unit_gates
from ..xlnet.structure import XLNetStructure
from .oneshot import PruneSpec, apply


def curve(model, spec: PruneSpec, sparsities, scores, evaluate_fn) -> list[dict]:
    """One-shot accuracy at each sparsity, pruning a fresh copy of ``model`` each time (no fine-tuning).

    ``evaluate_fn(model) -> dict`` of metrics; rows carry the requested and the measured sparsity.
    """
    rows = []
    for s in sparsities:
        pruned = copy_model(model)
        run = PruneSpec(**{**asdict(spec), "sparsity": s}).check()
        measured = apply(pruned, run, _rekey(scores, model, pruned))
        rows.append({"method": spec.method, "granularity": spec.granularity, "requested": s,
                     "sparsity": measured["prunable_sparsity"], **evaluate_fn(pruned)})
    return rows


def _rekey(scores, original, clone):
    """Weight scores are keyed by ``(module, name)``; map them onto the same modules of a deep copy."""
    if not isinstance(scores, dict):
        return scores
    lookup = dict(zip([id(m) for m, _ in prunable_parameters(original)],
                      [m for m, _ in prunable_parameters(clone)]))
    return {(lookup[id(m)], n): s for (m, n), s in scores.items()}


def sensitivity(model, sparsities, evaluate_fn, parts=("attention", "ffn")) -> list[dict]:
    """Per-layer sensitivity scan: prune one layer's attention or FFN weights alone (magnitude, local) at each
    sparsity and evaluate; everything else stays dense (Han et al. 2015, Fig. 5; Li et al. 2017, Fig. 2)."""
    rows = []
    for li in range(len(XLNetStructure(model).layers)):
        for part in parts:
            for s in sparsities:
                pruned = copy_model(model)
                pairs = XLNetStructure(pruned).prunable(part="attention" if part == "attention" else "ffn", layer=li)
                reached = prune_to(pruned, s, scope="local", pairs=pairs)
                rows.append({"layer": li, "part": part, "requested": s, "sparsity": reached, **evaluate_fn(pruned)})
    return rows


ABLATIONS = {"all-heads-off": "head", "all-ffn-off": "neuron"}


def sublayer_ablation(model, evaluate_fn) -> list[dict]:
    """``dense``, ``all-heads-off`` and ``all-ffn-off`` rows (``data/results/02_ablation.csv``): every head, or
    every FFN neuron, switched off at once through zero gates (``gates.py``, the same as removing them), no
    fine-tuning; ``evaluate_fn(model)`` gives the accuracy columns. What survives is what the residual stream,
    the LayerNorms and the classifier head decide without that kind of sublayer (Michel et al. 2019 ablate
    heads one at a time; here all at once, as a first check that the encoder matters)."""
    rows = [{"ablation": "dense", **evaluate_fn(model)}]
    for name, granularity in ABLATIONS.items():
        with unit_gates(model, granularity) as gates, torch.no_grad():
            for g in gates:
                g.zero_()
            rows.append({"ablation": name, **evaluate_fn(model)})
    return rows
