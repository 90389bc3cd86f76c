"""Threshold rules: from scores to a :class:`~xlprune_lib.prune.plan.PruningPlan`.

A rule is a small frozen dataclass whose call ``rule(model, scores) -> PruningPlan`` decides what goes:

* :class:`UnitFraction`: the ``round(f * n)`` lowest-scoring heads, FFN neurons or layers, ranked across all
  layers at once (``scope="global"``; non-negative scores first divided by their layer's L2 norm, Michel et
  al. 2019, Sec. 4.2) or the same fraction of every layer (``"local"``);
* :class:`EncoderBudget`: heads and neurons together until ``f`` of the encoder's parameters are gone,
  attention and FFN giving up the same share of what they own (chapter 5's structured pruning);
* :class:`WeightSparsity`: the lowest-scoring weights of the prunable set until ``f`` of it is zero, one
  threshold over all of it (``"global"``) or per tensor (``"local"``), through ``torch.nn.utils.prune``;
* :class:`NM`: N:M semi-structured sparsity, at most ``n`` of every ``m`` consecutive weights of an input row
  kept (the pattern sparse tensor cores run; Mishra et al. 2021, "Accelerating Sparse Deep Neural Networks").

L0 gates make their plan from what the gates learned (``l0.finalize``). Every rule starts from the plan the
model realises (``PruningPlan.of``) and removes more, so pruning is cumulative; units are named in the
positions the model has now and the plan translates them to original indices.
"""
from __future__ import annotations

import re

from dataclasses import dataclass

import torch
from torch import nn

from .. import validate
from ..config import UserError
from ..xlnet.structure import XLNetStructure
from ..xlnet.masks import attach, current_mask, current_weight, prune_to
from .plan import PruningPlan



# --- ranking units -----------------------------------------------------------------------------------------

def layer_normalized(scores) -> list[torch.Tensor]:
    """Per-layer unit scores divided by their layer's L2 norm (Michel et al. 2019, Sec. 4.2), so that a layer
    with large gradients does not keep everything, for non-negative scores.

    Signed scores (movement, Sanh et al. 2020) are returned as given: their sign and size are the ranking
    (the most negative goes first), and dividing each layer by its own norm would re-weigh the layers and let a
    unit at -1 go before one at -100.
    """
    scores = [s.float() for s in scores]
    if any(bool((s < 0).any()) for s in scores):
        return scores
    return [s / (s.norm() + 1e-12) for s in scores]


def ranked_units(scores, normalize: bool = True) -> list[tuple[int, int]]:
    """``(layer, unit)`` of every head or neuron, lowest score first, ranked across layers (ties: lower layer,
    then lower unit). ``scores``: one 1-D tensor per layer; ``normalize``: :func:`layer_normalized` first."""
    if not any(len(s) for s in scores):
        return []
    per_layer = layer_normalized(scores) if normalize else [s.float() for s in scores]
    owner = [(li, u) for li, s in enumerate(per_layer) for u in range(len(s))]
    return [owner[i] for i in torch.argsort(torch.cat(per_layer), stable=True).tolist()]


def lowest_units(scores, fraction: float, normalize: bool = True) -> dict[int, list[int]] | list[int]:
    """The ``round(fraction * total)`` lowest-scoring units, ranked across all layers at once.

    Heads / neurons (a list of per-layer tensors) give ``{layer: [indices]}`` (:func:`ranked_units`). Layers
    (one 1-D tensor) give a list of layer indices. Raises ``UserError`` for a fraction outside [0, 1).
    """
    validate.sparsity(fraction)
    if isinstance(scores, torch.Tensor):
        k = round(fraction * len(scores))
        return sorted(torch.argsort(scores.float(), stable=True)[:k].tolist())
    ranked = ranked_units(scores, normalize)
    out: dict[int, list[int]] = {}
    for li, u in ranked[:round(fraction * len(ranked))]:
        out.setdefault(li, []).append(u)
    return {li: sorted(v) for li, v in sorted(out.items())}


# --- rules ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class UnitFraction:
    """Remove ``fraction`` of the model's current heads, neurons or layers (``kind``), lowest scores first.

    ``scores``: one 1-D tensor per layer (heads, neurons) or one 1-D tensor over layers. ``scope="local"``
    removes the fraction from every layer separately (heads and neurons only). Weight masks are left out of
    the plan (live masks stay live through the surgery).
    """

    kind: str
    fraction: float
    scope: str = "global"

    def __post_init__(self):
        if self.kind not in ("head", "neuron", "layer"):
            raise UserError(f"unit rules remove heads, neurons or layers, not {self.kind!r}")
        validate.sparsity(self.fraction)
        validate.scope(self.scope)

    def __call__(self, model, scores) -> PruningPlan:
        if self.scope == "global" or self.kind == "layer":
            removal = lowest_units(scores, self.fraction)
        else:
            removal = {li: lowest_units([s], self.fraction).get(0, []) for li, s in enumerate(scores)}
        if self.kind == "layer" and len(removal) >= len(XLNetStructure(model).layers):
            raise UserError("cannot remove every layer")
        return PruningPlan.of(model, weights=False).without(self.kind, removal)


@dataclass(frozen=True)
class EncoderBudget:
    """Remove heads and neurons until ``fraction`` of the encoder's parameters are gone.

    Costs are ``XLNetStructure.unit_cost(..., within="encoder")``. Attention and FFN each give up the same
    share ``s`` of the parameters their units own, chosen so that the total reaches ``fraction``; within a kind
    the lowest-scoring units go first (:func:`ranked_units`). Heads take their share first, then neurons close
    the gap as tightly as whole units allow. ``scores``: ``(head_scores, neuron_scores)``, one tensor per layer
    each. Weight masks are left out of the plan (live masks stay live through the surgery).
    """

    fraction: float

    def __post_init__(self):
        validate.sparsity(self.fraction)

    def __call__(self, model, scores) -> PruningPlan:
        return self.plan_with_share(model, scores)[0]

    def plan_with_share(self, model, scores) -> tuple[PruningPlan, dict]:
        """``(plan, {"share": s, "params": n})``: ``n`` the encoder parameters the plan removes, by the costs."""
        head_scores, neuron_scores = scores
        s = XLNetStructure(model)
        n_layers = len(s.layers)
        if len(head_scores) != n_layers or len(neuron_scores) != n_layers:
            raise ValueError("one score tensor per layer is needed for heads and for neurons")
        cost = {k: [s.unit_cost(i, k) for i in range(n_layers)] for k in ("head", "neuron")}
        total = {k: sum(c * len(sc) for c, sc in zip(cost[k], kind_scores))
                 for k, kind_scores in (("head", head_scores), ("neuron", neuron_scores))}
        encoder = s.encoder_params()
        need = self.fraction * encoder
        if need > total["head"] + total["neuron"]:
            raise UserError(f"heads and neurons are {(total['head'] + total['neuron']) / encoder:.4f} of the "
                            f"encoder's parameters; {self.fraction} of them cannot be removed")
        share = need / (total["head"] + total["neuron"])
        plan, taken = PruningPlan.of(model, weights=False), 0
        for kind, kind_scores in (("head", head_scores), ("neuron", neuron_scores)):
            goal = share * total["head"] if kind == "head" else need - taken
            removal, got = {}, 0
            for li, u in ranked_units(kind_scores):
                if got + cost[kind][li] / 2 > goal:
                    break
                removal.setdefault(li, []).append(u)
                got += cost[kind][li]
            taken += got
            plan = plan.without(kind, removal)
        return plan, {"share": share, "params": taken}


@dataclass(frozen=True)
class WeightSparsity:
    """Mask the lowest-scoring weights of the prunable set until ``target`` of it is zero (``masks.prune_to``:
    scores ranked as given, exact zeros first, cumulative). ``scores``: ``{(module, name): tensor}`` or
    ``None`` for magnitude. The model is not changed: the masks are computed on stand-ins that hold its
    current weights and masks."""

    target: float
    scope: str = "global"

    def __post_init__(self):
        validate.sparsity(self.target)
        validate.scope(self.scope)

    def __call__(self, model, scores=None) -> PruningPlan:
        plan = PruningPlan.of(model)
        pairs = XLNetStructure(model).prunable()
        stand_ins = [_stand_in(m, n) for m, n in pairs]
        keyed = {(h, "weight"): scores[p] for h, p in zip(stand_ins, pairs)} if scores else None
        prune_to(None, self.target, keyed, self.scope, pairs=[(h, "weight") for h in stand_ins])
        return plan.with_weights({name: current_mask(h, "weight").bool()
                                  for name, h in zip(plan.names(), stand_ins)})


@dataclass(frozen=True)
class NM:
    """Keep the ``n`` highest-scoring of every ``m`` consecutive weights along each matrix's input (reduction)
    axis (N:M semi-structured sparsity, Mishra et al. 2021; 2:4 is what sparse tensor cores execute, and only
    with the groups on the input side). The axes are ``XLNetStructure.INPUT_AXES``: ``d_model`` for ``q, k, v,
    r`` and ``layer_1``, ``d_head`` for ``o``, ``d_inner`` for ``layer_2``. Already pruned weights count as
    pruned. ``scores``: as :class:`WeightSparsity`. ``UserError`` when an input size is not a multiple of
    ``m``."""

    n: int
    m: int

    def __post_init__(self):
        if not 0 < self.n < self.m:
            raise UserError(f"N:M sparsity needs 0 < n < m, got {self.n}:{self.m}")

    @classmethod
    def parse(cls, granularity: str) -> "NM | None":
        """``"2:4"`` -> ``NM(2, 4)``; ``None`` for any other granularity; ``UserError`` for ``"4:2"``."""
        match = re.fullmatch(r"(\d+):(\d+)", str(granularity).strip())
        return cls(int(match.group(1)), int(match.group(2))) if match else None

    @property
    def sparsity(self) -> float:
        """The sparsity N:M gives a dense weight: ``1 - n / m``."""
        return 1 - self.n / self.m

    def groups(self, model) -> dict:
        """Counted from the weights as the forward pass uses them: ``groups`` of ``m`` consecutive inputs in the
        prunable set, and ``over_n``, how many hold more than ``n`` nonzeros (0 after this rule)."""
        total = over = 0
        for name, pair in zip(PruningPlan.of(model).names(), XLNetStructure(model).prunable()):
            nonzero = current_weight(*pair).detach() != 0
            per_group = _groups(nonzero, self.m, XLNetStructure.input_axis(name), name).sum(-1)
            total, over = total + per_group.numel(), over + int((per_group > self.n).sum())
        return {"groups": total, "over_n": over}

    def __call__(self, model, scores=None) -> PruningPlan:
        plan = PruningPlan.of(model)
        masks = {}
        for name, pair in zip(plan.names(), XLNetStructure(model).prunable()):
            w = current_weight(*pair).detach()
            score = (w.abs() if not scores else scores[pair]).float()
            score = torch.where(w == 0, torch.full_like(score, float("-inf")), score)
            masks[name] = _n_of_m(score, self.n, self.m, XLNetStructure.input_axis(name), name)
        return plan.with_weights(masks)


def _groups(t: torch.Tensor, m: int, axis: int, name: str) -> torch.Tensor:
    """``t`` with ``axis`` moved last and split into groups of ``m`` consecutive entries: shape
    ``(..., size // m, m)``. ``UserError`` when the size along ``axis`` is not a multiple of ``m``."""
    moved = t.movedim(axis, -1)
    size = moved.shape[-1]
    if size % m:
        raise UserError(f"N:M sparsity needs the input size ({size}) of {name} to be a multiple of m={m}")
    return moved.reshape(*moved.shape[:-1], size // m, m)


def _n_of_m(score: torch.Tensor, n: int, m: int, axis: int, name: str) -> torch.Tensor:
    groups = _groups(score, m, axis, name)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, groups.topk(n, dim=-1).indices, True)
    return keep.flatten(-2).movedim(-1, axis)   # flatten, not reshape(..., -1): a tensor may have no entries


class _StandIn(nn.Module):
    """A module holding a copy of one weight as the model uses it, and its live mask if it has one."""

    def __init__(self, weight: torch.Tensor, mask: torch.Tensor | None):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        if mask is not None:
            attach(self, "weight", mask)


def _stand_in(module, name: str) -> _StandIn:
    live = getattr(module, f"{name}_mask", None)
    return _StandIn(getattr(module, f"{name}_orig" if live is not None else name).detach().clone(),
                    None if live is None else live.detach().clone())
