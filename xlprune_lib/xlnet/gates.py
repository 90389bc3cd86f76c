"""Multiplicative gates on XLNet's heads, FFN neurons and layers, owned by the model as modules.

The ``transformers`` XLNet has no ``head_mask``, so a gate ``xi`` per unit is put into the computation here:

* a **head** ``n`` of a layer: its slice ``o[:, n, :]`` of the output projection is scaled by ``xi_n``. XLNet
  computes the attention output as ``sum_n attn_vec_n o[:, n, :]^T`` (``post_attention``), so this is exactly
  the gate on the head's attention vector of Michel et al. 2019 (eq. 1-2), with the same gradient
  ``dL/dxi_n = <dL/d(o_n xi_n), o_n>``;
* an FFN **neuron** ``j``: column ``j`` of ``layer_2.weight`` is scaled by ``xi_j``, i.e. the neuron's activation
  is (Molchanov et al. 2017, eq. 5);
* a **layer**: the layer is wrapped so that it returns ``h + xi (layer(h) - h)`` for both attention streams.

Head and neuron gates are ``torch.nn.utils.parametrize`` parametrizations (:class:`AxisGate`), a layer gate is
a wrapper module (:class:`GatedLayer`). Either way every gate is a module inside the model: ``copy.deepcopy``,
``state_dict``, ``.to(device)`` and DistributedDataParallel see it, and a deep copy is gated by its own copy of
the gates, never the original's (no state hides in closures). A gate is a tensor (trainable ones, for scores)
or a module whose call returns the gate values (a hard-concrete sample, ``l0.HardConcrete``).

On a weight that ``torch.nn.utils.prune`` masks, the gate goes on ``<name>_orig`` (the prune hook then
multiplies the gated tensor by the mask), so gates and live masks combine.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..config import UserError
from .structure import UNIT_KINDS, XLNetStructure

GRANULARITIES = UNIT_KINDS


def gate_value(gate):
    """A gate is a tensor, or a module whose call returns the gate values."""
    return gate() if isinstance(gate, nn.Module) else gate


def _own(module: nn.Module, gate) -> None:
    """Make ``gate`` part of ``module``: a module or parameter as itself, a plain tensor as a buffer (so that
    ``state_dict`` and ``.to()`` see it too)."""
    if isinstance(gate, torch.Tensor) and not isinstance(gate, nn.Parameter):
        module.register_buffer("gate", gate)
    else:
        module.gate = gate


class AxisGate(nn.Module):
    """Parametrization ``W -> W * xi`` with ``xi`` broadcast along axis ``axis`` of ``W``.

    ``xi`` has one value per index of that axis (heads: axis 1 of ``o``, shape ``(d_model, n_head, d_head)``;
    neurons: axis 1 of ``layer_2.weight``, shape ``(d_model, d_inner)``).
    """

    def __init__(self, gate, axis: int):
        super().__init__()
        _own(self, gate)
        self.axis = axis

    def forward(self, w):
        return w * along(gate_value(self.gate).to(w.dtype), w, self.axis)


def along(values: torch.Tensor, w: torch.Tensor, axis: int) -> torch.Tensor:
    """``values`` (one per index of ``w``'s axis ``axis``) shaped to broadcast against ``w``."""
    shape = [1] * w.dim()
    shape[axis] = -1
    return values.view(shape)


class GatedLayer(nn.Module):
    """An ``XLNetLayer`` whose update is scaled by a gate: ``h + xi (layer(h) - h)`` for ``h`` and ``g``."""

    def __init__(self, layer: nn.Module, gate):
        super().__init__()
        self.layer = layer
        _own(self, gate)

    def forward(self, output_h, output_g=None, *args, **kwargs):
        out = self.layer(output_h, output_g, *args, **kwargs)
        xi = gate_value(self.gate)
        h = output_h + xi * (out[0] - output_h)
        g = None if out[1] is None else output_g + xi * (out[1] - output_g)
        return (h, g) + tuple(out[2:])


def tensor_name(module, name: str) -> str:
    """Where a gate goes: ``name_orig`` while ``torch.nn.utils.prune`` masks ``name``, else ``name`` itself."""
    return f"{name}_orig" if hasattr(module, f"{name}_orig") else name


def gated_weights(model, granularity: str):
    """``(module, name, axis)`` of the tensor each layer's head or neuron gate scales (``XLNetStructure.GATED``)."""
    s = XLNetStructure(model)
    return [s.gated_tensor(i, granularity) for i in range(len(s.layers))]


def install(model, granularity: str, gates) -> None:
    """Put one gate per layer (a tensor or module of that layer's unit count, a scalar for a layer) on ``model``."""
    if granularity not in GRANULARITIES:
        raise UserError(f"gates exist for heads, neurons and layers, not {granularity!r}")
    if granularity == "layer":
        base = XLNetStructure.base_of(model)
        base.layer = nn.ModuleList(GatedLayer(layer, gate) for layer, gate in zip(base.layer, gates))
        return
    for (module, name, axis), gate in zip(gated_weights(model, granularity), gates):
        parametrize.register_parametrization(module, tensor_name(module, name), AxisGate(gate, axis))


def remove(model, granularity: str, keep_values: bool = False) -> None:
    """Take the gates of ``granularity`` off ``model``. ``keep_values``: write ``W * xi`` into the weights (the gate
    values as they are now) instead of restoring ``W``. Layer gates are always simply removed."""
    if granularity == "layer":
        base = XLNetStructure.base_of(model)
        base.layer = nn.ModuleList(m.layer if isinstance(m, GatedLayer) else m for m in base.layer)
        return
    for module, name, _ in gated_weights(model, granularity):
        name = tensor_name(module, name)
        if parametrize.is_parametrized(module, name) and any(
                isinstance(p, AxisGate) for p in module.parametrizations[name]):
            unparametrize(module, name, keep_values)


def unparametrize(module, name: str, keep_values: bool = False) -> None:
    """``parametrize.remove_parametrizations`` that leaves deep copies of ``module`` alone.

    ``parametrize`` swaps a module's class for a generated subclass holding one property per parametrized
    tensor, and ``copy.deepcopy`` keeps that class, so a module and its copy share it; removing a
    parametrization deletes the property from the class, which would break the other one. The module gets its
    own copy of the class first.
    """
    cls = type(module)
    if parametrize.is_parametrized(module):
        namespace = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
        module.__class__ = type(cls.__name__, cls.__bases__, namespace)
    parametrize.remove_parametrizations(module, name, leave_parametrized=keep_values)


def is_gated(model) -> bool:
    """Whether any head, neuron or layer gate of this module is on ``model``."""
    return any(isinstance(m, (AxisGate, GatedLayer)) for m in model.modules())


@contextlib.contextmanager
def unit_gates(model, granularity: str):
    """Multiplicative gates ``xi`` (ones, trainable) on every head, FFN neuron or layer; yields their list.

    The gates are modules of the model while the block runs (a head's slice of the output
    projection ``o``, a neuron's column of ``layer_2``, a layer's update ``h + xi * (layer(h) - h)``), so a deep
    copy made inside the block carries its own gates. Setting a gate to 0 removes the unit from the
    computation, exactly as surgery does. On exit the model is as before.
    """
    if granularity not in GRANULARITIES:
        raise UserError(f"gates exist for heads, neurons and layers, not {granularity!r}")
    device = next(model.parameters()).device
    values = [nn.Parameter(torch.ones(n, device=device)) for n in XLNetStructure(model).unit_counts(granularity)]
    install(model, granularity, values)
    try:
        yield values
    finally:
        remove(model, granularity)
