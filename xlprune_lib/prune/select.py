"""Threshold rules: from scores to a :class:`~xlprune_lib.prune.plan.PruningPlan`.

A rule is a small frozen dataclass whose call ``rule(model, scores) -> PruningPlan`` decides what goes:

* :class:`UnitFraction`: the ``round(f * n)`` lowest-scoring heads, FFN neurons or layers, ranked across all
  layers at once (``scope="global"``; non-negative scores first divided by their layer's L2 norm, Michel et
  al. 2019, Sec. 4.2) or the same fraction of every layer (``"local"``);
* :class:`EncoderBudget`: heads and neurons together until ``f`` of the encoder's parameters are gone,
  attention and FFN giving up the same share of what they own (chapter 5's structured pruning);
* :class:`WeightSparsity`: the lowest-scoring weights until ``f`` of the scored tensors is masked, one
  threshold over all of them (``"global"``) or per tensor (``"local"``);
* :class:`NM`: N:M semi-structured sparsity, at most ``n`` of every ``m`` consecutive weights of an input row
  kept (the pattern sparse tensor cores run; Mishra et al. 2021, "Accelerating Sparse Deep Neural Networks").

Rules are the only place that decides what goes: every loop, study and chapter hands its :class:`Scores` to
one, and every cut by a score is :func:`lowest`. L0 gates are the one other source of plans: what the gates
learned (``l0.prune_with_gates``). Every rule starts from the plan the model realises (``PruningPlan.of``) and
removes more, so pruning is cumulative; units are named in the positions the model has now and the plan
translates them to original indices. A rule may also give new values for the weights it keeps
(``PruningPlan.values``).
"""
from __future__ import annotations

import re

from dataclasses import dataclass

import torch

from .. import validate
from ..config import UserError
from ..xlnet.masks import current_weight
from ..xlnet.structure import ENCODER, XLNetStructure
from .plan import PruningPlan, named_weights
from .scores import Scores


# --- the one cut ---------------------------------------------------------------------------------------------

def lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` lowest entries along the last axis of ``scores``, lowest first; ties go to the lower
    index (a stable sort, so the cut is the same on every CPU). Shape: ``scores.shape[:-1] + (k,)``. The one
    top-k selection of the library: every rule, and every chapter that cuts by a score, goes through it."""
    if not 0 <= k <= scores.shape[-1]:
        raise ValueError(f"cannot take the {k} lowest of {scores.shape[-1]} entries")
    return torch.argsort(scores.float(), dim=-1, stable=True)[..., :k]


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
    """``(layer position, unit)`` of every head or neuron, lowest score first, ranked across layers (ties: lower
    layer, then lower unit). ``scores``: one 1-D tensor per layer; ``normalize``: :func:`layer_normalized`
    first."""
    if not any(len(s) for s in scores):
        return []
    per_layer = layer_normalized(scores) if normalize else [s.float() for s in scores]
    owner = [(li, u) for li, s in enumerate(per_layer) for u in range(len(s))]
    flat = torch.cat(per_layer)
    return [owner[i] for i in lowest(flat, len(flat)).tolist()]


def _still_to_remove(fraction: float, start: int, now: int) -> int:
    """Units to remove now so that ``round(fraction * start)`` of the ``start`` units are gone (never negative,
    never more than are left)."""
    return min(now, max(0, round(fraction * start) - (start - now)))


# --- rules ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class UnitFraction:
    """Remove heads, neurons or layers (``kind``), lowest scores first, until ``fraction`` of them are gone.

    ``scores``: :class:`Scores` of ``kind``, read by name (``ValueError`` when a kept layer has none, or one of
    another length than its units). ``scope="global"`` ranks all layers' units at once (non-negative
    scores divided by their layer's L2 norm first, :func:`layer_normalized`); ``"local"`` removes the fraction
    from every layer separately (heads and neurons only). ``start``: the unit count ``fraction`` is of, for a
    cumulative run (the original model's: the total, or for ``"local"`` one count per layer); default the
    model's count now. Weight masks are left out of the plan (live masks stay live through the surgery).
    """

    kind: str
    fraction: float
    scope: str = "global"
    start: int | tuple[int, ...] | None = None

    def __post_init__(self):
        if self.kind not in ("head", "neuron", "layer"):
            raise UserError(f"unit rules remove heads, neurons or layers, not {self.kind!r}")
        validate.sparsity(self.fraction)
        validate.scope(self.scope)

    def __call__(self, model, scores: Scores) -> PruningPlan:
        scores = _of_kind(scores, self.kind)
        plan = PruningPlan.of(model, weights=False)
        if self.kind == "layer":
            vector = torch.cat(_per_layer(scores, plan, "layer"))
            k = _still_to_remove(self.fraction, self.start if self.start is not None else len(vector), len(vector))
            if k >= len(vector):
                raise UserError("cannot remove every layer")
            return plan.without("layer", sorted(lowest(vector, k).tolist()))
        per_layer = _per_layer(scores, plan, self.kind)
        now = [len(s) for s in per_layer]
        if self.scope == "global":
            k = _still_to_remove(self.fraction, self.start if self.start is not None else sum(now), sum(now))
            removal: dict[int, list[int]] = {}
            for li, u in ranked_units(per_layer)[:k]:
                removal.setdefault(li, []).append(u)
        else:
            start = self.start if self.start is not None else now
            removal = {li: sorted(lowest(s, _still_to_remove(self.fraction, n0, len(s))).tolist())
                       for li, (s, n0) in enumerate(zip(per_layer, start))}
        return plan.without(self.kind, removal)


@dataclass(frozen=True)
class EncoderBudget:
    """Remove heads and neurons until ``fraction`` of the encoder's parameters are gone.

    Costs are ``XLNetStructure.unit_cost(..., within="encoder")``. Attention and FFN each give up the same
    share ``s`` of the parameters their units own, chosen so that the total reaches ``fraction``; within a kind
    the lowest-scoring units go first (:func:`ranked_units`). Heads take their share first, then neurons close
    the gap as tightly as whole units allow. ``scores``: ``head+neuron`` :class:`Scores`. Weight masks are left
    out of the plan (live masks stay live through the surgery).
    """

    fraction: float

    def __post_init__(self):
        validate.sparsity(self.fraction)

    def __call__(self, model, scores) -> PruningPlan:
        return self.plan_with_share(model, scores)[0]

    def plan_with_share(self, model, scores) -> tuple[PruningPlan, dict]:
        """``(plan, {"share": s, "params": n})``: ``n`` the encoder parameters the plan removes, by the costs."""
        scores = _of_kind(scores, ENCODER)
        now = PruningPlan.of(model, weights=False)
        head_scores, neuron_scores = _per_layer(scores, now, "head"), _per_layer(scores, now, "neuron")
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
    """Mask the lowest-scoring weights until ``target`` of the scored tensors is masked: one threshold over all
    of them (``scope="global"``) or the same fraction of each (``"local"``).

    ``scores``: weight :class:`Scores`; only the tensors it names are pruned (the whole prunable set, or a
    part of it, as chapter 2's per-layer scan does). Scores are ranked as given, signed ones included (the most
    negative movement score goes first, Sanh et al. 2020, eq. 5). Cumulative: the rule counts what the live
    masks already remove and removes the rest from the entries still kept, and weights that are exactly zero
    (pruned before and made permanent) go first whatever their score, so a model gets the same masks whether
    its earlier pruning is live or written in. The model is not changed.
    """

    target: float
    scope: str = "global"

    def __post_init__(self):
        validate.sparsity(self.target)
        validate.scope(self.scope)

    def __call__(self, model, scores: Scores) -> PruningPlan:
        scores = _of_kind(scores, "weight")
        plan = PruningPlan.of(model)
        keep, weights = {}, {}
        for name, module, attr in named_weights(model, plan):
            if name in scores:
                weights[name] = current_weight(module, attr).detach()
                live = getattr(module, f"{attr}_mask", None)
                keep[name] = live.bool() if live is not None else torch.ones_like(weights[name], dtype=torch.bool)
        return plan.with_weights(self.masks(scores, keep, weights))

    def masks(self, scores, keep: dict, weights: dict | None = None) -> dict:
        """The keep-masks (bool, by name) this rule gives: ``keep`` (the masks now) with more entries removed,
        ranked by ``scores`` (tensors by name, each of its mask's shape). ``weights``: the weights by name, whose
        exact zeros go first. Pure: the tensors are not changed (``learned.py`` calls it in every forward
        pass)."""
        names = list(keep)
        ranked = {n: _zeros_first(scores[n], None if weights is None else weights[n]) for n in names}
        groups = [names] if self.scope == "global" else [[n] for n in names]
        out = {}
        for group in groups:
            kept = torch.cat([keep[n].reshape(-1) for n in group])
            order = torch.cat([ranked[n].reshape(-1) for n in group])
            where = torch.nonzero(kept).flatten()
            k = _still_to_remove(self.target, len(kept), len(where))
            cut = kept.clone()
            cut[where[lowest(order[where], k)]] = False
            start = 0
            for n in group:
                size = keep[n].numel()
                out[n] = cut[start:start + size].view_as(keep[n])
                start += size
        return out


def _zeros_first(score: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """``score`` (float32) with ``-inf`` where ``weight`` is exactly zero."""
    score = score.detach().float()
    return score if weight is None else torch.where(weight == 0, torch.full_like(score, float("-inf")), score)


def _per_layer(scores: Scores, plan: PruningPlan, kind: str) -> list[torch.Tensor]:
    """The ``kind`` scores of the layers ``plan`` keeps, read by name (``plan.unit_names``) in the model's order:
    one 1-D float32 tensor per layer (one entry for a layer score). ``ValueError`` when a kept layer has no score
    or its score has another length than the layer has units (scores of another model, or of this one before a
    round cut it): positions alone would silently rank the wrong units."""
    counts = dict(zip(("head", "neuron"), plan.widths())).get(kind, [1] * len(plan.layers))
    out = []
    for name, n in zip(plan.unit_names(kind), counts):
        if name not in scores:
            raise ValueError(f"no score named {name!r}: these {kind} scores are not of this model")
        t = scores[name].detach().float().reshape(-1)
        if len(t) != n:
            raise ValueError(f"{name!r} has {len(t)} scores for {n} {kind}s")
        out.append(t)
    return out


def _of_kind(scores, kind: str) -> Scores:
    if not isinstance(scores, Scores) or scores.kind != kind:
        got = scores.kind if isinstance(scores, Scores) else type(scores).__name__
        raise ValueError(f"this rule needs {kind} scores (importance.score), got {got}")
    return scores


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
    def pattern_sparsity(self) -> float:
        """The sparsity N:M gives a dense weight: ``1 - n / m``."""
        return 1 - self.n / self.m

    def groups(self, model) -> dict:
        """Counted from the weights as the forward pass uses them: ``groups`` of ``m`` consecutive inputs in the
        prunable set, and ``over_n``, how many hold more than ``n`` nonzeros (0 after this rule)."""
        total = over = 0
        for name, module, attr in named_weights(model):
            nonzero = current_weight(module, attr).detach() != 0
            per_group = _groups(nonzero, self.m, XLNetStructure.input_axis(name), name).sum(-1)
            total, over = total + per_group.numel(), over + int((per_group > self.n).sum())
        return {"groups": total, "over_n": over}

    def __call__(self, model, scores: Scores) -> PruningPlan:
        scores = _of_kind(scores, "weight")
        plan = PruningPlan.of(model)
        masks = {}
        for name, module, attr in named_weights(model, plan):
            if name in scores:
                score = _zeros_first(scores[name], current_weight(module, attr).detach())
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
    keep = torch.ones_like(groups, dtype=torch.bool)
    keep.scatter_(-1, lowest(groups, m - n), False)   # the m - n lowest of every group go
    return keep.flatten(-2).movedim(-1, axis)   # flatten, not reshape(..., -1): a tensor may have no entries
