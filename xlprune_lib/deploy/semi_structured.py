"""2:4 weights executed by sparse tensor cores (Mishra et al. 2021, "Accelerating Sparse Deep Neural Networks").

A model pruned with ``--granularity 2:4`` (``select.NM``) keeps 2 of every 4 consecutive inputs of each prunable
matrix. On an NVIDIA GPU since Ampere, ``torch.sparse.to_sparse_semi_structured`` stores such a matrix as its
nonzeros plus 2-bit indices, and ``torch.nn.functional.linear`` with it runs on the sparse tensor cores. This
module converts every prunable matrix of a 2:4 model that way:

* the FFN weights are ``nn.Linear`` weights already, and are replaced in place;
* XLNet computes ``q, k, v, r`` and ``o`` as einsums over 3-D ``(d_model, n_head, d_head)`` weights
  (``ibh,hnd->ibnd`` and ``ibnd,hnd->ibh``), which no sparse kernel takes. Each is stored as the 2-D
  ``linear`` weight it equals (``XLNetStructure.linear_weight``), and while the converted model runs forward,
  ``torch.einsum`` answers those two equations for exactly these weights with ``linear``; every other call
  passes through unchanged (the override is undone after the forward pass, also when it raises). The 3-D
  parameter is replaced by a ``meta`` placeholder that holds no memory: the model keeps only the compressed
  copy.

``convert`` is injectable: on a CPU (tests) an identity conversion checks the rewiring against the original
model; the real one needs CUDA and fp16 or bf16 weights.
"""
from __future__ import annotations

import threading

import torch
from torch import nn
from torch.nn import functional as F

from ..config import UserError
from ..prune.plan import named_weights
from ..prune.select import NM
from ..xlnet.structure import XLNetStructure
from .onnx import PROJECTION_OUT, PROJECTIONS_IN

_EINSUM = torch.einsum
_LOCAL = threading.local()   # the converted weights of the model whose forward is running: {id(placeholder): ...}


def _semi_structured(weight: torch.Tensor) -> torch.Tensor:
    from torch.sparse import to_sparse_semi_structured  # CUDA only; imported once a conversion is asked for

    return to_sparse_semi_structured(weight)


def _linear(x: torch.Tensor, weight) -> torch.Tensor:
    """``linear`` on the last axis of ``x``, any leading shape (the sparse kernels take 2-D inputs)."""
    return F.linear(x.reshape(-1, x.shape[-1]), weight).reshape(*x.shape[:-1], -1)


def _einsum(equation, *operands):
    table = getattr(_LOCAL, "weights", None)
    ops = operands[0] if len(operands) == 1 and isinstance(operands[0], (list, tuple)) else operands
    if table and len(ops) == 2 and id(ops[1]) in table:
        weight, (n_head, d_head) = table[id(ops[1])]
        x = ops[0]
        if equation.replace(" ", "") == PROJECTIONS_IN:
            return _linear(x, weight).reshape(*x.shape[:-1], n_head, d_head)
        if equation.replace(" ", "") == PROJECTION_OUT:
            return _linear(x.flatten(-2), weight)
    return _EINSUM(equation, *operands)


def semi_structured(model, convert=_semi_structured) -> int:
    """Convert every prunable matrix of ``model`` (in place, after it is on its device and dtype) to ``convert``'s
    format (default: ``torch.sparse.to_sparse_semi_structured``); return how many were converted.

    Raises ``UserError`` unless every matrix is 2:4 along its input (``select.NM(2, 4).groups``: no group of 4
    inputs with more than 2 nonzeros), if live masks remain (make them permanent first), or when ``convert``
    refuses a matrix (torch's kernels take only some shapes and dtypes). The model then only runs forward
    (inference).
    """
    if any(hasattr(m, f"{n}_mask") for m, n in XLNetStructure(model).prunable()):
        raise UserError("semi-structured weights need the masks made permanent (a saved pruned folder is)")
    if NM(2, 4).groups(model)["over_n"]:
        raise UserError("semi-structured sparsity needs a 2:4 model (xlprune prune --granularity 2:4): some groups "
                        "of 4 inputs hold more than 2 nonzeros")
    packed_all = []   # every matrix converted first: a refusal leaves the model as it was
    for name, module, attr in named_weights(model):
        weight = getattr(module, attr).detach()
        matrix = XLNetStructure.linear_weight(name, weight).contiguous()
        try:
            packed_all.append((module, attr, weight, convert(matrix)))
        except RuntimeError as exc:   # torch checks the shapes and dtypes its kernels take (multiples of 32 x 64...)
            raise UserError(f"{name} ({matrix.shape[0]} x {matrix.shape[1]}, {matrix.dtype}) cannot run "
                            f"semi-structured: {str(exc).splitlines()[0]}") from None
    table = {}
    for module, attr, weight, packed in packed_all:
        if isinstance(module, nn.Linear):
            module.weight = nn.Parameter(packed, requires_grad=False)
        else:
            placeholder = nn.Parameter(torch.empty(weight.shape, dtype=weight.dtype, device="meta"),
                                       requires_grad=False)
            setattr(module, attr, placeholder)
            module.register_buffer(f"{attr}_semi_structured", packed, persistent=False)   # the model holds it
            table[id(placeholder)] = (packed, tuple(weight.shape[1:]))
    converted = len(packed_all)
    model.register_forward_pre_hook(lambda *_: _enter(table))
    model.register_forward_hook(lambda *_: _leave(), always_call=True)   # also when the forward raises
    return converted


def semi_structured_checked(model, inputs: dict, convert=_semi_structured) -> dict:
    """:func:`semi_structured` on ``model`` (with ``convert``), checked on ``inputs`` (a batch for its forward pass):
    ``{"semi_structured_weights": matrices converted, "max_abs_logit_difference": against the same weights run
    dense}``."""
    with torch.inference_mode():
        before = model(**inputs, use_mems=False).logits.float()
    converted = semi_structured(model, convert)
    with torch.inference_mode():
        after = model(**inputs, use_mems=False).logits.float()
    return {"semi_structured_weights": converted, "max_abs_logit_difference": float((after - before).abs().max())}


def _enter(table: dict) -> None:
    _LOCAL.weights = table
    torch.einsum = _einsum


def _leave() -> None:
    _LOCAL.weights = None
    torch.einsum = _EINSUM
