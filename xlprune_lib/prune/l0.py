"""The L0 objective ``min_theta L(theta) + lambda * ||theta||_0``, made trainable with hard-concrete gates.

``||theta||_0`` counts nonzero parameters: it is piecewise constant, so its gradient is zero almost everywhere
and undefined where it jumps. Louizos, Welling & Kingma 2018 ("Learning Sparse Neural Networks through L0
Regularization") multiply each parameter group by a stochastic gate ``z`` in [0, 1] whose probability of being
exactly 0 is differentiable in a parameter ``log_alpha``:

* sample ``u ~ U(0, 1)``, ``s = sigmoid((log u - log(1 - u) + log_alpha) / beta)``, stretch to
  ``s * (zeta - gamma) + gamma`` and clamp to [0, 1] (eq. 10); ``beta = 2/3``, ``gamma = -0.1``, ``zeta = 1.1``;
* the expected L0 norm is ``sum P(z != 0) = sum sigmoid(log_alpha - beta * log(-gamma / zeta))`` (eq. 12);
* at test time the gate is deterministic: ``clamp(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1)`` (eq. 13).

Gates sit on single weights of the prunable set (unstructured), on FFN neurons, or on attention heads (Voita
et al. 2019, "Analyzing Multi-Head Self-Attention"), and heads and neurons can be gated together (CoFi, Xia et
al. 2022). The trade-off is set either by a fixed ``lambda`` or by a target sparsity enforced with a Lagrangian
``lambda_1 (s - t) + lambda_2 (s - t)^2`` whose multipliers are *maximised* (by dual gradient ascent, one step
per training step) while the model minimises (Wang et al. 2020, "Structured Pruning of Large Language Models",
eq. 6; CoFi eq. 4). ``lambda`` multiplies the
expected L0 norm divided by the number of gated parameters, which keeps it on the scale of the task loss.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from .plan import PruningPlan
from .select import lowest
from ..config import UserError
from ..xlnet import gates as unit_gate
from ..xlnet.structure import ENCODER, KINDS, XLNetStructure

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1
GRANULARITIES = KINDS[:3] + (ENCODER,)   # weights, neurons, heads, or heads and neurons together (CoFi)


class HardConcrete(nn.Module):
    """``n`` hard-concrete gates (Louizos et al. 2018, eq. 10-13); calling the module returns the gate values.

    In training mode each call draws a fresh sample; in eval mode it returns the deterministic test-time gate.
    ``init_keep`` sets ``log_alpha`` so that a gate starts open with about that probability.
    """
    def __init__(self, shape, init_keep: float = 0.9):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.full(torch.Size(shape if isinstance(shape, tuple) else (shape,)),
                                                 math.log(init_keep) - math.log(1 - init_keep)))

    def forward(self) -> torch.Tensor:
        if not self.training:
            return self.deterministic()
        u = torch.rand_like(self.log_alpha).clamp(1e-6, 1 - 1e-6)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / BETA)
        return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)

    def deterministic(self) -> torch.Tensor:
        """The test-time gate ``clamp(sigmoid(log_alpha) (zeta - gamma) + gamma, 0, 1)`` (eq. 13)."""
        return (torch.sigmoid(self.log_alpha) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)

    def prob_nonzero(self) -> torch.Tensor:
        """``P(z != 0)`` per gate (eq. 12)."""
        return torch.sigmoid(self.log_alpha - BETA * math.log(-GAMMA / ZETA))

    def expected_l0(self) -> torch.Tensor:
        return self.prob_nonzero().sum()


class _WeightGate(nn.Module):
    """Parametrization ``w -> w * z`` for one weight tensor (``torch.nn.utils.parametrize``)."""
    def __init__(self, gate: HardConcrete):
        super().__init__()
        self.gate = gate

    def forward(self, w):
        return w * self.gate().to(w.dtype)


class L0Gates(nn.Module):
    """All gates of one model and the bookkeeping of what each gate controls.

    ``cost`` per gate group: how many prunable parameters one open gate keeps (1 for a weight, the five
    ``d_model x d_head`` slices of q, k, v, o, r for a head, a ``layer_1`` row and a ``layer_2`` column for a
    neuron). Attach with :func:`attach`; it registers as ``model.l0_gates`` so the Trainer moves and trains it.
    """
    def __init__(self, model, granularity: str, init_keep: float = 0.9):
        super().__init__()
        if granularity not in GRANULARITIES:
            raise UserError(f"unknown L0 granularity {granularity!r}; valid: {', '.join(GRANULARITIES)}")
        self.granularity = granularity
        self.total = sum(getattr(m, n).numel() for m, n in XLNetStructure(model).prunable())
        s = XLNetStructure(model)
        self.weights = nn.ModuleList()
        self.heads = nn.ModuleList()
        self.neurons = nn.ModuleList()
        self.costs = {}
        if granularity == "weight":
            for m, n in XLNetStructure(model).prunable():
                self.weights.append(HardConcrete(tuple(getattr(m, n).shape), init_keep))
        for kind, group in (("head", self.heads), ("neuron", self.neurons)):
            if kind not in granularity:
                continue
            counts = s.unit_counts(kind)
            if not any(counts):
                raise UserError(f"this model has no {'attention heads' if kind == 'head' else 'FFN neurons'} "
                                "left to gate")
            group.extend(HardConcrete(c, init_keep) for c in counts)
            # what one open gate keeps of the prunable set (what the target sparsity counts)
            self.costs[kind] = [s.unit_cost(i, kind, within="prunable") for i in range(len(counts))]

    def expected_kept(self) -> torch.Tensor:
        """Expected number of prunable parameters the gates keep (the expected L0 norm, eq. 12)."""
        kept = sum((g.expected_l0() for g in self.weights), torch.zeros((), device=self.all_log_alpha()[0].device))
        if self.granularity == "weight":
            return kept
        ungated = self.total
        for kind, gates in (("head", self.heads), ("neuron", self.neurons)):
            if kind in self.costs:
                for g, cost in zip(gates, self.costs[kind]):
                    kept = kept + g.expected_l0() * cost
                    ungated -= g.log_alpha.numel() * cost
        return kept + ungated

    def expected_sparsity(self) -> torch.Tensor:
        return 1.0 - self.expected_kept() / self.total

    def all_log_alpha(self) -> list[nn.Parameter]:
        return [g.log_alpha for g, _ in self.all_gates()]

    def all_gates(self) -> list[tuple[HardConcrete, int]]:
        """Every gate with the prunable parameters one of its units owns (weights 1, then heads, neurons)."""
        out = [(g, 1) for g in self.weights]
        for kind, group in (("head", self.heads), ("neuron", self.neurons)):
            out += [(g, c) for g, c in zip(group, self.costs.get(kind, []))]
        return out


def attach(model, granularity: str, init_keep: float = 0.9) -> L0Gates:
    """Put hard-concrete gates on ``model`` (in place) and return them (also at ``model.l0_gates``).

    Every gate is a module of the model: weight gates are parametrizations ``w -> w * z`` of each prunable
    weight, head and neuron gates parametrizations of ``o`` and ``layer_2.weight`` (``gates.py``), so
    ``copy.deepcopy`` gives a model with independent gates. Works on a model with live
    ``torch.nn.utils.prune`` masks (the gate then scales ``<name>_orig``). Raises ``UserError`` if the model
    already carries gates.
    """
    if hasattr(model, "l0_gates") or unit_gate.is_gated(model):
        raise UserError("this model already carries gates")
    gates = L0Gates(model, granularity, init_keep).to(next(model.parameters()).device)
    model.l0_gates = gates
    for (m, n), g in zip(XLNetStructure(model).prunable(), gates.weights):
        parametrize.register_parametrization(m, unit_gate.tensor_name(m, n), _WeightGate(g))
    if gates.heads:
        unit_gate.install(model, "head", list(gates.heads))
    if gates.neurons:
        unit_gate.install(model, "neuron", list(gates.neurons))
    return gates


def final_gates(gates: L0Gates, target: float | None = None) -> list[torch.Tensor]:
    """The gate values a model pruned with its gates keeps, one tensor per :class:`HardConcrete` of ``gates.all_gates()``.

    Without ``target``: the deterministic test-time gates (eq. 13); units whose gate is exactly 0 are removed.
    With ``target``: units are ranked by ``log_alpha`` (the order of ``P(z != 0)``, eq. 12) and the lowest go,
    each removing the prunable parameters it owns, until ``target`` of the prunable set is removed as closely
    as whole units allow (:func:`_lowest_within`; CoFi, Xia et al. 2022, likewise finalizes to a count of
    units). A target beyond what the gated units own removes them all. Kept units keep their test-time
    value; a kept unit whose test-time gate is 0 is scaled by ``P(z != 0)`` instead, so that it stays.
    """
    groups = gates.all_gates()
    with torch.no_grad():
        z = [g.deterministic() for g, _ in groups]
        if target is None:
            return z
        alpha = torch.cat([g.log_alpha.reshape(-1) for g, _ in groups])
        cost = torch.cat([torch.full((g.log_alpha.numel(),), float(c)) for g, c in groups])
        order = lowest(alpha, len(alpha))
        need = target * gates.total
        keep = torch.ones(len(alpha), dtype=torch.bool)
        keep[_lowest_within(order, cost, need)] = False
        out, start = [], 0
        for (g, _), zg in zip(groups, z):
            kg = keep[start:start + zg.numel()].view_as(zg)
            start += zg.numel()
            out.append(torch.where(kg, torch.where(zg > 0, zg, g.prob_nonzero()), torch.zeros_like(zg)))
        return out


def _lowest_within(order: torch.Tensor, cost: torch.Tensor, need: float) -> torch.Tensor:
    """Units to remove, taken in ``order``, whose costs add up to ``need`` as closely as whole units allow.

    Equal costs (weights): the first ``round(need / cost)``. Mixed costs (a head owns many more parameters than
    a neuron): a unit that would overshoot is skipped and kept, and the smaller units after it fill the rest.
    """
    if bool((cost == cost[0]).all()):
        return order[:min(len(order), round(need / float(cost[0])))]
    removed, chosen = 0.0, []
    for i in order.tolist():
        c = float(cost[i])
        if removed + c <= need + c / 2:
            chosen.append(i)
            removed += c
    return torch.tensor(chosen, dtype=torch.long)


def prune_with_gates(model, target: float | None = None) -> PruningPlan:
    """Replace the gates by fixed values, for good (in place); return the plan the model now realises
    (CoFiPruning's ``prune_model_with_z`` does the same for BERT).

    The values are :func:`final_gates`: the test-time gates (eq. 13), or with ``target`` the units ranked by
    their gates until ``target`` of the prunable set is gone. Weights: ``w <- w * z`` (exact zeros where
    ``z = 0``). Heads: each head's slice of ``o`` is scaled by its gate and heads with ``z = 0`` are removed by
    surgery (a :class:`PruningPlan` without them, ``apply_surgery``); neurons likewise through ``layer_2``'s columns.
    Without a target the result computes what the gated model computes in eval mode; it saves and reloads
    like any pruned model.
    """
    gates: L0Gates = model.l0_gates
    values = dict(zip([id(g) for g, _ in gates.all_gates()], final_gates(gates, target)))
    plan = PruningPlan.of(model, weights=False)
    with torch.no_grad():
        for (m, n), g in zip(XLNetStructure(model).prunable(), gates.weights):
            name = unit_gate.tensor_name(m, n)
            unit_gate.unparametrize(m, name)
            getattr(m, name).mul_(values[id(g)])
        for kind, group in (("head", gates.heads), ("neuron", gates.neurons)):
            if not group:
                continue
            unit_gate.remove(model, kind)
            z = [values[id(g)] for g in group]
            for (module, name, axis), zl in zip(unit_gate.gated_weights(model, kind), z):
                weight = getattr(module, unit_gate.tensor_name(module, name))
                weight.mul_(unit_gate.along(zl, weight, axis))
            plan = plan.without(kind, {i: torch.nonzero(zl == 0).flatten().tolist() for i, zl in enumerate(z)})
    del model.l0_gates
    plan.apply_surgery(model)
    return plan
