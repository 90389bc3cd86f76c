"""Learned scores: a trained score per weight whose mask the rule recomputes in every forward pass.

Movement pruning as Sanh et al. 2020 train it ("Movement Pruning", Sec. 3 and eq. 4-5): every prunable weight
``W`` gets a score ``S`` of its shape, trained with the weights; the forward pass uses ``W * M`` with
``M = TopK(S)``, the mask a rule computes from the scores *now*. ``TopK`` has no useful gradient, so the
backward pass treats it as the identity (the straight-through estimator of Bengio et al. 2013):
``dL/dS = dL/d(W M) * W``. A masked weight keeps its value and its score keeps learning, so it comes back
when its score climbs above the cut.

Here the mask comes from the same rules as every other path (``select.WeightSparsity.masks``), so the cut
of a learned score is the library's one cut. :func:`attach_learned_mask` puts it on one weight with
``torch.nn.utils.parametrize`` (recomputed at every access of the weight, so in every forward pass);
:func:`learned_plan` reads the plan the scores give now, to make it permanent like any other.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from .plan import PruningPlan, named_weights
from .select import WeightSparsity
from ..xlnet.gates import tensor_name
from ..xlnet.masks import current_weight


class _StraightThrough(torch.autograd.Function):
    """Forward: the 0/1 ``mask`` (given); backward: the incoming gradient passed to the scores unchanged."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return mask.to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class LearnedMask(nn.Module):
    """The parametrization ``W -> W * M(S)`` of one weight, ``M`` recomputed from the trained ``scores`` ``S`` by
    ``rule`` (per tensor: ``WeightSparsity(target, "local")``) at every call.

    ``scores``: an ``nn.Parameter`` of the weight's shape (float). ``name``: the weight's plan name, the key the
    rule reads. The gradient reaching ``scores`` is ``dL/d(W M) * W`` (straight-through, module docstring).
    """

    def __init__(self, name: str, scores: nn.Parameter, rule: WeightSparsity):
        super().__init__()
        if rule.scope != "local":
            raise ValueError("a mask recomputed per tensor needs a local rule (one tensor's scores at a time)")
        self.name, self.scores, self.rule = name, scores, rule

    def mask(self) -> torch.Tensor:
        """The keep-mask (bool) the rule gives the scores now."""
        keep = {self.name: torch.ones_like(self.scores, dtype=torch.bool)}
        return self.rule.masks({self.name: self.scores.detach()}, keep)[self.name]

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * _StraightThrough.apply(self.scores, self.mask())


def attach_learned_mask(model, name: str, target: float, init: torch.Tensor | None = None) -> LearnedMask:
    """Mask the prunable weight ``name`` (``layer.<L>.ff.layer_1.weight``, a plan name) of ``model`` by a
    trained score, keeping ``1 - target`` of its entries by the rule's cut in every forward pass. ``init``:
    the scores to start from (default ``|W|``, so the first mask is magnitude pruning's). Returns the
    parametrization (its ``scores`` is the parameter to train). Raises ``KeyError`` for an unknown name."""
    module, attr = {n: (m, a) for n, m, a in named_weights(model)}[name]
    weight = current_weight(module, attr).detach()    # w_orig * w_mask under a live mask, as it is now
    scores = nn.Parameter((weight.abs() if init is None else init.detach()).float().clone())
    learned = LearnedMask(name, scores, WeightSparsity(target, "local"))
    # under a live torch.nn.utils.prune mask the parameter is ``<attr>_orig``: the learned mask goes on it
    parametrize.register_parametrization(module, tensor_name(module, attr), learned)
    return learned


def learned_plan(model, masks: list[LearnedMask]) -> PruningPlan:
    """The plan the learned scores give now: the model's plan with each learned mask's keep-mask, as any rule
    would return it (``apply_masks`` or ``apply_surgery`` then makes it live or permanent once the
    parametrizations are removed)."""
    return PruningPlan.of(model, weights=False).with_weights({m.name: m.mask() for m in masks})
