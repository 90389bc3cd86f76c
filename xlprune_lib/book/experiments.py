"""Chapter 2's measurements on one trained classifier, no fine-tuning: accuracy curves over sparsities, the
per-block sensitivity scan and the sublayer ablation. Each prunes copies of the model; the model itself is
never changed."""
from __future__ import annotations

from dataclasses import asdict

import torch

from ..loops.oneshot import PruneSpec, apply
from ..prune.importance import magnitude
from ..prune.plan import PruningPlan
from ..prune.select import WeightSparsity
from ..xlnet.gates import unit_gates
from ..xlnet.masks import copy_model, weight_sparsity
from ..xlnet.structure import XLNetStructure


def curve(model, spec: PruneSpec, sparsities, scores, evaluate_fn) -> list[dict]:
    """One-shot accuracy at each sparsity, pruning a fresh copy of ``model`` each time (no fine-tuning).

    ``evaluate_fn(model) -> dict`` of metrics; rows carry the requested and the measured sparsity.
    """
    rows = []
    for s in sparsities:
        pruned = copy_model(model)
        run = PruneSpec(**{**asdict(spec), "sparsity": s}).check()
        measured = apply(pruned, run, scores)   # scores are keyed by unit names, so they fit the copy
        rows.append({"method": spec.method, "granularity": spec.granularity, "requested": s,
                     "sparsity": measured["prunable_sparsity"], **evaluate_fn(pruned)})
    return rows


def sensitivity(model, sparsities, evaluate_fn, parts=("attention", "ffn")) -> list[dict]:
    """Per-layer sensitivity scan: prune one layer's attention or FFN weights alone (magnitude, local) at each
    sparsity and evaluate; everything else stays dense (Han et al. 2015, Fig. 5; Li et al. 2017, Fig. 2).
    ``sparsity``: the zero fraction of the pruned tensors, counted."""
    rows, scores = [], magnitude(model)
    layers = PruningPlan.of(model, weights=False).layers
    for li, L in enumerate(layers):
        for part in parts:
            prefix = f"layer.{L}.rel_attn." if part == "attention" else f"layer.{L}.ff."
            chosen = scores.only([n for n in scores if n.startswith(prefix)])
            for s in sparsities:
                pruned = copy_model(model)
                WeightSparsity(s, "local")(pruned, chosen).apply_masks(pruned)
                reached = weight_sparsity(XLNetStructure(pruned).prunable(part=part, layer=li))
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
