"""Weight masks on XLNet through ``torch.nn.utils.prune``.

``torch.nn.utils.prune`` reparametrises a parameter ``w`` as ``w_orig * w_mask`` with a forward pre-hook, so the
mask lives beside the weight, is applied in every forward pass and survives any number of optimizer steps:
the gradient of ``w_orig`` at a masked entry is multiplied by zero. Masking the same tensor again stacks the
new mask on the old one (a ``PruningContainer``), so sparsity only grows. This module is the mechanism only:
attaching a mask, reading the weight as the forward pass uses it, counting, copying and saving. Which entries
a mask removes is decided by the rules of ``prune/select.py``, never here.

Live masks everywhere. Every public function of the library that takes a model works on a model whose masks
are still live and returns what it returns on the same model made permanent (``tests/test_live_masks.py``
runs each one both ways): surgery slices ``w_orig`` and ``w_mask`` alike, savers write the masked tensors
(:func:`effective_state_dict`), scores differentiate the weights the forward pass used, and ``copy.deepcopy`` and
``pickle`` work after any forward pass (every mask is attached through :func:`attach`). Two kinds differ by
design: training keeps masked entries at zero (that is what a live mask is for), and :func:`live_masks` /
``rounds.live_weight_masks`` report the masks themselves.
"""
from __future__ import annotations

import copy

import torch
from torch.nn.utils import prune

from .structure import XLNetStructure


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


def mask_sparsity(pairs) -> float:
    """Fraction of zero entries in the masks of ``pairs`` (counted, not requested; no mask: nothing masked)."""
    return _zero_fraction(current_mask(m, n) for m, n in pairs)


def weight_sparsity(pairs) -> float:
    """Fraction of exact zeros in the weights the forward pass uses (masked, or made permanent)."""
    return _zero_fraction(current_weight(m, n) for m, n in pairs)


def make_permanent(model, pairs=None) -> None:
    """``prune.remove`` on every pruned pair: the zeros are written into the weights, the hooks go away."""
    for module, name in pairs if pairs is not None else XLNetStructure(model).prunable():
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

    Masks the library attaches (:func:`attach`) already leave the model copyable by
    ``copy.deepcopy``. A mask attached by hand leaves a non-leaf ``name_orig * name_mask`` after a forward
    pass with autograd on, which ``deepcopy`` refuses; this function makes such modules copyable too
    (:func:`_copyable`, which changes only how the original stores its computed tensors), then copies.
    """
    for module in {id(m): m for m, _ in live_masks(model)}.values():
        _copyable(module)
    return copy.deepcopy(model)


def counts(model) -> dict:
    """Entries and nonzeros of the prunable set, and of the whole model (masked entries count as zero)."""
    pairs = XLNetStructure(model).prunable()
    prunable = sum(current_weight(*p).numel() for p in pairs)
    nonzero = sum(int((current_weight(*p) != 0).sum()) for p in pairs)
    total = sum(p.numel() for p in model.parameters())
    return {"prunable": prunable, "prunable_nonzero": nonzero, "model": total,
            "model_nonzero": total - prunable + nonzero}


def sparsity_from(model, start: dict) -> dict:
    """Sparsity of the prunable set and of the whole model now, against the sizes ``start`` (:func:`counts` of
    the model before pruning: surgery shrinks the tensors, so the fractions are of what there was)."""
    now = counts(model)
    return {"prunable_sparsity": 1 - now["prunable_nonzero"] / start["prunable"],
            "model_sparsity": 1 - now["model_nonzero"] / start["model"],
            "prunable_nonzero": now["prunable_nonzero"], "model_nonzero": now["model_nonzero"]}
