"""Weight masks on XLNet through ``torch.nn.utils.prune``.

``torch.nn.utils.prune`` reparametrises a parameter ``w`` as ``w_orig * w_mask`` with a forward pre-hook, so the
mask lives beside the weight, is applied in every forward pass and survives any number of optimizer steps:
the gradient of ``w_orig`` at a masked entry is multiplied by zero. Pruning the same tensor again stacks the
new mask on the old one (a ``PruningContainer``), so sparsity only grows. This module adds what XLNet needs on
top: the default prunable set (the five 3-D attention projections and the two FFN matrices of every layer),
local (per-tensor) and global (one threshold across the set) rules driven by any importance score, targets
given as the *total* sparsity to reach, and sparsity counted from the masks themselves.

Live masks everywhere. Every public function of the library that takes a model works on a model whose masks
are still live and returns what it returns on the same model made permanent (``tests/test_live_masks.py``
runs each one both ways): surgery slices ``w_orig`` and ``w_mask`` alike, savers write the masked tensors
(:func:`effective_state_dict`), scores differentiate the weights the forward pass used, and ``copy.deepcopy`` and
``pickle`` work after any forward pass (every mask is attached through :func:`attach` or :func:`prune_to`). Two kinds differ by design: training keeps masked entries at zero (that is what a live
mask is for), and :func:`live_masks` / ``rounds.masks_of`` report the masks themselves.
"""
from __future__ import annotations

import copy

import torch
from torch.nn.utils import prune

from .. import validate
from .structure import XLNetStructure

def prunable_parameters(model, include_embeddings: bool = False) -> list[tuple[torch.nn.Module, str]]:
    """``(module, name)`` pairs of the default prunable set (``XLNetStructure.prunable``).

    Per layer: ``rel_attn.{q,k,v,o,r}`` (shape ``(d_model, n_head, d_head)``) and ``ff.layer_1.weight`` /
    ``ff.layer_2.weight``. Embeddings, LayerNorm, biases and the classifier head are excluded (the word
    embedding only when asked: it is a lookup table, pruning it saves storage, not compute).
    """
    return XLNetStructure(model).prunable(include_embeddings)


def current_weight(module, name: str) -> torch.Tensor:
    """The effective (masked) tensor as it stands now, whether or not the parameter is pruned yet: the
    parameter itself, or ``name_orig * name_mask`` while ``torch.nn.utils.prune`` masks it.

    The product is computed here, not read from ``module.name``: that attribute is refreshed only by the
    forward pre-hook, so after an optimizer step (or any in-place edit of ``name_orig``) it still holds the
    weights of the last forward pass. Shape: the parameter's. Not part of any autograd graph of a forward pass
    (:func:`forward_weight` is).
    """
    mask, orig = getattr(module, f"{name}_mask", None), getattr(module, f"{name}_orig", None)
    if mask is not None and orig is not None:
        return orig * mask.to(dtype=orig.dtype)   # what prune's forward pre-hook computes, bit for bit
    return getattr(module, name)


def forward_weight(module, name: str) -> torch.Tensor:
    """The tensor the last forward pass used for ``module.name``: with a live mask, the pre-hook's
    ``name_orig * name_mask``, attached to that pass's autograd graph (so a gradient with respect to it is the
    gradient with respect to the effective weight). Read it right after a forward pass; anywhere else use
    :func:`current_weight`. For a mask made by this module the tensor is kept by :class:`_UsedWeights` (the
    attribute itself is detached after each forward); otherwise it is ``module.name``."""
    used = _used_weights(module)
    if used is not None and name in used.tensors:
        return used.tensors[name]
    return getattr(module, name)


class _UsedWeights:
    """Forward hook on a module with live masks: keeps the masked tensors its forward used, and leaves
    detached copies in their place.

    ``torch.nn.utils.prune`` stores ``name_orig * name_mask`` as the plain attribute ``module.name``. With
    autograd on, that product is not a graph leaf, and ``copy.deepcopy`` and ``pickle`` refuse such tensors
    (pytorch#37322). After the module's forward this hook moves the product here (for :func:`forward_weight`)
    and sets ``module.name`` to the same values, detached. The graph already holds the product, so backward
    still reaches ``name_orig``. A copy of the hook starts empty: a copied model has no last forward pass.
    """

    def __init__(self):
        self.tensors: dict[str, torch.Tensor] = {}

    def __call__(self, module, inputs, output):
        self.tensors = {name: getattr(module, name) for name in _masked_names(module)}
        for name, tensor in self.tensors.items():
            setattr(module, name, tensor.detach())

    def __deepcopy__(self, memo):
        return type(self)()

    def __getstate__(self):
        return {"tensors": {}}


def _masked_names(module) -> list[str]:
    return [hook._tensor_name for hook in module._forward_pre_hooks.values()
            if isinstance(hook, prune.BasePruningMethod)]


def _used_weights(module) -> _UsedWeights | None:
    return next((h for h in module._forward_hooks.values() if isinstance(h, _UsedWeights)), None)


def _copyable(module) -> None:
    """Make a module with live masks copyable: its masked attributes detached now (``prune`` computes them
    with autograd on when it attaches a mask) and after every forward (:class:`_UsedWeights`). Idempotent."""
    with torch.no_grad():
        for name in _masked_names(module):
            setattr(module, name, getattr(module, name).detach())
    if _used_weights(module) is None:
        module.register_forward_hook(_UsedWeights())


def attach(module, name: str, keep: torch.Tensor | None = None) -> None:
    """Mask ``module.name`` with ``keep`` (bool, the parameter's shape; ``None``: all ones) through
    ``torch.nn.utils.prune.custom_from_mask`` (``prune.identity``). Stacks on a live mask. The one way the
    library attaches a mask: the module stays copyable by ``copy.deepcopy`` and ``pickle`` (:class:`_UsedWeights`).
    """
    if keep is None:
        prune.identity(module, name)
    else:
        prune.custom_from_mask(module, name, keep)
    _copyable(module)


def current_mask(module, name: str) -> torch.Tensor:
    mask = getattr(module, f"{name}_mask", None)
    return mask if mask is not None else torch.ones_like(getattr(module, name))


def _zero_fraction(tensors) -> float:
    tensors = list(tensors)
    total = sum(t.numel() for t in tensors)
    return sum(int((t == 0).sum()) for t in tensors) / total if total else 0.0


def sparsity(pairs) -> float:
    """Fraction of zero entries in the masks of ``pairs`` (counted, not requested)."""
    return _zero_fraction(current_mask(m, n) for m, n in pairs)


def weight_sparsity(pairs) -> float:
    """Fraction of exact zeros in the weights the forward pass uses (masked, or made permanent)."""
    return _zero_fraction(current_weight(m, n) for m, n in pairs)


class LowestScore(prune.BasePruningMethod):
    """Mask the ``amount`` entries with the *lowest raw score* among those still unmasked.

    ``torch.nn.utils.prune.L1Unstructured`` ranks ``|score|``, which is right for magnitude, gradient, Taylor
    and Fisher scores (all non-negative) and wrong for signed ones: movement pruning (Sanh et al. 2020, eq. 5)
    removes the weights with the most *negative* ``S = -sum_t w_t g_t`` (those moving towards zero), not those
    with the smallest ``|S|``. This method ranks the scores exactly as given, so "lower score = pruned first"
    holds for every score. Used through ``prune.global_unstructured`` or ``LowestScore.apply``; inside a
    ``PruningContainer`` it only sees the entries earlier masks left, so pruning stays cumulative.
    """

    PRUNING_TYPE = "unstructured"

    def __init__(self, amount: int):
        if not isinstance(amount, int) or amount < 0:
            raise ValueError(f"amount must be a non-negative number of entries, got {amount!r}")
        self.amount = amount

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        if self.amount > t.numel():
            raise ValueError(f"cannot prune {self.amount} entries of a tensor with {t.numel()}")
        mask = default_mask.clone(memory_format=torch.contiguous_format)
        if self.amount:
            lowest = torch.topk(t.reshape(-1).float(), k=self.amount, largest=False).indices
            mask.view(-1)[lowest] = 0
        return mask


def _amount_of_remaining(target: float, already: float, n_total: int) -> int:
    """Entries to remove now so that the total sparsity becomes ``target`` (never negative)."""
    return max(0, round(target * n_total) - round(already * n_total))


def prune_to(model, target: float, scores: dict | None = None, scope: str = "global", pairs=None) -> float:
    """Mask the lowest-scoring weights until ``target`` of the prunable set is zero; returns measured sparsity.

    ``scores``: ``{(module, name): tensor}`` importances of the same shape as each weight (default: |w|,
    magnitude pruning, Han et al. 2015). Scores are ranked as given, signed ones included (:class:`LowestScore`):
    the most negative movement score goes first. ``scope="local"`` removes the same fraction from every tensor;
    ``"global"`` ranks all entries of the set against one threshold. Cumulative: earlier zeros stay, because
    ``torch.nn.utils.prune`` only ranks the entries its previous masks left, and weights that are already exactly
    zero (pruned earlier and made permanent) count as pruned and are masked first, whatever their score, so a
    model gets the same masks whether its earlier pruning is live or written in. Returns the zero fraction of
    the prunable weights the forward pass now uses (at least ``target``).
    """
    validate.sparsity(target)
    validate.scope(scope)
    pairs = pairs if pairs is not None else prunable_parameters(model)
    scores = scores or {}
    importance = {p: _zeros_first(p, scores.get(p)) for p in pairs}
    if scope == "global":
        n_total = sum(current_mask(*p).numel() for p in pairs)
        amount = _amount_of_remaining(target, sparsity(pairs), n_total)
        prune.global_unstructured(pairs, pruning_method=LowestScore, amount=amount, importance_scores=importance)
    else:
        for p in pairs:
            n = current_mask(*p).numel()
            amount = _amount_of_remaining(target, sparsity([p]), n)
            LowestScore.apply(p[0], p[1], amount, importance_scores=importance[p])
    for module, _ in pairs:
        _copyable(module)
    return weight_sparsity(pairs)


def _zeros_first(pair, score: torch.Tensor | None) -> torch.Tensor:
    """``score`` (default ``|w|``) with ``-inf`` where the weight is already exactly zero."""
    w = current_weight(*pair).detach()
    score = (w.abs() if score is None else score).float()
    return torch.where(w == 0, torch.full_like(score, float("-inf")), score)


def make_permanent(model, pairs=None) -> None:
    """``prune.remove`` on every pruned pair: the zeros are written into the weights, the hooks go away."""
    for module, name in pairs if pairs is not None else prunable_parameters(model):
        if prune.is_pruned(module) and hasattr(module, f"{name}_orig"):
            prune.remove(module, name)


def live_masks(model) -> list[tuple[torch.nn.Module, str]]:
    """``(module, name)`` of every tensor ``torch.nn.utils.prune`` masks right now (``name_orig`` + ``name_mask``)."""
    return [(m, name) for m in model.modules() for name in _masked_names(m)]


def effective_state_dict(model) -> dict:
    """``model.state_dict()`` as the forward pass sees it: every masked ``name_orig`` / ``name_mask`` pair becomes
    one tensor ``name = name_orig * name_mask`` (what :func:`make_permanent` would write), so a model with live
    masks saves exactly like the same model made permanent. The model is not changed."""
    state, out = model.state_dict(), {}
    for key, value in state.items():
        base = key[:-len("_orig")]
        if key.endswith("_orig") and f"{base}_mask" in state:
            out[base] = (value * state[f"{base}_mask"].to(value.dtype)).detach()
        elif not (key.endswith("_mask") and f"{key[:-len('_mask')]}_orig" in state):
            out[key] = value
    return out


def copy_model(model):
    """``copy.deepcopy(model)``, also for masks attached with ``torch.nn.utils.prune`` directly.

    Masks the library attaches (:func:`attach`, :func:`prune_to`) already leave the model copyable by
    ``copy.deepcopy``. A mask attached by hand leaves a non-leaf ``name_orig * name_mask`` after a forward
    pass with autograd on, which ``deepcopy`` refuses; this function makes such modules copyable too
    (:func:`_copyable`, which changes only how the original stores its computed tensors), then copies.
    """
    for module in {id(m): m for m, _ in live_masks(model)}.values():
        _copyable(module)
    return copy.deepcopy(model)


def counts(model) -> dict:
    """Entries and nonzeros of the prunable set, and of the whole model (masked entries count as zero)."""
    pairs = prunable_parameters(model)
    prunable = sum(current_weight(*p).numel() for p in pairs)
    nonzero = sum(int((current_weight(*p) != 0).sum()) for p in pairs)
    total = sum(p.numel() for p in model.parameters())
    return {"prunable": prunable, "prunable_nonzero": nonzero, "model": total,
            "model_nonzero": total - prunable + nonzero}


def measured(model, start: dict) -> dict:
    """Sparsity of the prunable set and of the whole model against the *starting* model's sizes."""
    now = counts(model)
    return {"prunable_sparsity": 1 - now["prunable_nonzero"] / start["prunable"],
            "model_sparsity": 1 - now["model_nonzero"] / start["model"],
            "prunable_nonzero": now["prunable_nonzero"], "model_nonzero": now["model_nonzero"]}
