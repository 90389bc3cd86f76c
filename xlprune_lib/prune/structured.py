"""Structured pruning to a fraction of the *encoder's* parameters: attention heads and FFN neurons together.

Unstructured zeros leave every matrix its full size, so dense kernels run exactly as long as before (chapter 5
measures it). Removing whole heads and neurons with surgery makes every matrix multiplication smaller, so the
saving in parameters turns into a saving in time. Here the request is a fraction ``f`` of the encoder's
parameters (everything inside the XLNet layers: attention, FFN, LayerNorms, biases; not the embeddings or the
classifier), which is the quantity speed follows.

How the budget is split: a head and a neuron are scored with the same importance method (``importance.py``),
but their scores are on different scales, so they are ranked within their own kind. Attention and FFN each
give up the same share of their removable parameters, chosen so that the parameters removed in all reach
``f`` of the encoder; within a kind the lowest-scoring units go first, ranked across layers after each
layer's non-negative scores are divided by their L2 norm (Michel et al. 2019, Sec. 4.2; signed movement
scores are ranked as given). Layers may end up with different
widths; a layer may lose every head (see ``surgery``). L0 gates on heads and neurons (``l0.py``, granularity
``head+neuron``, after CoFi, Xia et al. 2022) learn the split instead of fixing it.

The parameters a unit carries, counted from the tensors: a head owns its slice of ``q, k, v, o, r``
(``5 * d_model * d_head``), of the three relative biases and of ``seg_embed`` (``5 * d_head``); an FFN neuron
owns its ``layer_1`` row and bias entry and its ``layer_2`` column (``2 * d_model + 1``). LayerNorms and
``layer_2``'s bias cannot be removed, so ``f`` is capped just below 1.
"""
from __future__ import annotations

import torch

from ..config import UserError
from .masks import check_sparsity
from ..xlnet.surgery import HEAD_BIASES, HEAD_PARAMS, prune_heads, prune_neurons, xlnet_layers

GRANULARITY = "head+neuron"


def head_params(layer) -> int:
    """Parameters one head of this layer owns (0 when the layer has no heads left)."""
    attn = layer.rel_attn
    heads = int(attn.q.shape[1])
    if heads == 0:
        return 0
    owned = sum(getattr(attn, n).numel() for n in HEAD_PARAMS + HEAD_BIASES) + attn.seg_embed.numel()
    return owned // heads


def neuron_params(layer) -> int:
    """Parameters one FFN neuron of this layer owns: its ``layer_1`` row and bias, its ``layer_2`` column."""
    return layer.ff.layer_1.in_features + 1 + layer.ff.layer_2.out_features


def encoder_params(model) -> int:
    """Parameters inside the XLNet layers, counted from the tensors (embeddings and task head excluded)."""
    return sum(p.numel() for layer in xlnet_layers(model) for p in layer.parameters())


def _ranked(scores) -> list[tuple[int, int]]:
    """``(layer, unit)`` from lowest to highest score, non-negative scores first divided by their layer's L2 norm
    (``importance.layer_normalized``; signed scores are ranked as given)."""
    from .importance import layer_normalized

    if not any(len(s) for s in scores):
        return []
    flat = torch.cat(layer_normalized(scores))
    owner = [(li, u) for li, s in enumerate(scores) for u in range(len(s))]
    return [owner[i] for i in torch.argsort(flat, stable=True).tolist()]


def plan(model, head_scores, neuron_scores, fraction: float) -> dict:
    """Which heads and neurons to remove so that ``fraction`` of the encoder's parameters go.

    Returns ``{"head": {layer: [indices]}, "neuron": {layer: [indices]}, "share": s, "params": n}``: ``s`` is
    the share of attention and of FFN parameters removed, ``n`` the parameters the plan removes (from the unit
    sizes above; the tests check it against the tensors after surgery).
    """
    check_sparsity(fraction)
    layers = xlnet_layers(model)
    if len(head_scores) != len(layers) or len(neuron_scores) != len(layers):
        raise ValueError("one score tensor per layer is needed for heads and for neurons")
    cost = {"head": [head_params(layer) for layer in layers], "neuron": [neuron_params(layer) for layer in layers]}
    total = {k: sum(c * len(s) for c, s in zip(cost[k], scores))
             for k, scores in (("head", head_scores), ("neuron", neuron_scores))}
    encoder = encoder_params(model)
    need = fraction * encoder
    if need > total["head"] + total["neuron"]:
        raise UserError(f"heads and neurons are {(total['head'] + total['neuron']) / encoder:.4f} of the encoder's "
                        f"parameters; {fraction} of them cannot be removed")
    share = need / (total["head"] + total["neuron"])
    removed, taken = {"head": {}, "neuron": {}}, 0
    for kind, scores in (("head", head_scores), ("neuron", neuron_scores)):
        # heads go to their share first; neurons then close the gap to ``need`` as tightly as whole units allow
        goal = share * total["head"] if kind == "head" else need - taken
        got = 0
        for li, u in _ranked(scores):
            if got + cost[kind][li] / 2 > goal:
                break
            removed[kind].setdefault(li, []).append(u)
            got += cost[kind][li]
        taken += got
    return {"head": _sorted(removed["head"]), "neuron": _sorted(removed["neuron"]), "share": share,
            "params": taken}


def _sorted(units: dict) -> dict:
    return {li: sorted(v) for li, v in sorted(units.items())}


def apply_plan(model, removal: dict) -> dict:
    """Remove the planned heads and neurons with surgery (in place); return the encoder fraction measured."""
    before = encoder_params(model)
    prune_heads(model, removal["head"])
    prune_neurons(model, removal["neuron"])
    after = encoder_params(model)
    return {"encoder_params_before": before, "encoder_params_after": after, "encoder_removed": 1 - after / before}


def prune_encoder(model, head_scores, neuron_scores, fraction: float) -> dict:
    """:func:`plan` then :func:`apply_plan`: the model loses ``fraction`` of its encoder parameters."""
    removal = plan(model, head_scores, neuron_scores, fraction)
    return {**apply_plan(model, removal), "removed": {"head": removal["head"], "neuron": removal["neuron"]},
            "share": removal["share"]}
