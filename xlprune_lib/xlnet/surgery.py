"""Physical removal of attention heads, FFN neurons and whole layers from a ``transformers`` XLNet.

Masks (``masks.py``) only zero weights; surgery makes the tensors smaller so that every matrix
multiplication gets cheaper. Layers are pruned independently, so after surgery layers may have different head
and neuron counts. These are the low-level cuts, in the positions the model has *now*; they do not touch the
config. Pruning code removes units through a plan (``PruningPlan.apply_surgery``), which calls them and records in
the config which original units survive.

Heads (Michel et al. 2019, "Are Sixteen Heads Really Better than One?"). XLNet stores its projections as
``(d_model, n_head, d_head)`` tensors and computes, per head n, ``q_n = h W_q[:, n, :]`` (and likewise k, v, r);
the per-head biases ``r_w_bias``, ``r_r_bias``, ``r_s_bias`` and ``seg_embed`` index the same axis, and the
output is ``sum_n attn_vec_n W_o[:, n, :]^T``. Removing head n is therefore slicing index n out of the head
axis of all nine tensors; nothing in ``XLNetRelativeAttention.forward`` depends on ``n_head`` except through
those shapes. The scale ``1 / sqrt(d_head)`` is unchanged. Which tensors carry a head or neuron axis is
declared once, in ``XLNetStructure``.

FFN neurons: neuron j is row j of ``layer_1`` (weight and bias) and column j of ``layer_2``'s weight.

Removing *every* head of a layer (or every neuron) is allowed and leaves a zero-width sublayer: XLNet is
post-LayerNorm, ``LN(x + sublayer(x))``, so a sublayer whose output is zero still applies its LayerNorm (and,
for the FFN, ``layer_2``'s bias). The zero-width tensors compute exactly that, which is also what the masked
model computes; the sublayer's matrix multiplications are gone, and the sublayer gets a forward that skips the
zero-sized products (``modeling_xlnet_pruned.fit_zero_width``; ONNX exporters cannot handle them). Whole layers are removed with
:func:`drop_layers`, which changes the function (a residual stream skips the layer) and is not an
equivalence.
"""
from __future__ import annotations

import torch
from torch import nn

from .modeling_xlnet_pruned import cut_units, keep_index, slice_tensor
from .structure import XLNetStructure


def _slice_param(module: nn.Module, name: str, dim: int, keep: torch.Tensor) -> None:
    """Keep only indices ``keep`` of ``module.name`` along ``dim``; while ``torch.nn.utils.prune`` masks the
    tensor, its ``name_orig`` parameter and ``name_mask`` buffer are sliced alike (the masks stay live)."""
    if hasattr(module, f"{name}_orig") and hasattr(module, f"{name}_mask"):
        slice_tensor(module, f"{name}_orig", dim, keep)
        mask = getattr(module, f"{name}_mask")
        module.register_buffer(f"{name}_mask", mask.index_select(dim, keep.to(mask.device)).clone())
        with torch.no_grad():
            setattr(module, name, getattr(module, f"{name}_orig") * getattr(module, f"{name}_mask"))
        return
    slice_tensor(module, name, dim, keep)


def prune_heads(model, heads: dict[int, list[int]]) -> None:
    """Remove heads in place: ``{layer position: [head positions of that layer as it is now]}``."""
    _cut(model, "head", heads)


def prune_neurons(model, neurons: dict[int, list[int]]) -> None:
    """Remove FFN neurons in place: ``{layer position: [neuron positions of that layer as it is now]}``."""
    _cut(model, "neuron", neurons)


def _cut(model, kind: str, removal: dict[int, list[int]]) -> None:
    """Slice the ``kind`` axis of every tensor that carries it (``modeling_xlnet_pruned.cut_units``, the code
    that also replays a plan on load), layer by layer; live masks are sliced with their tensors."""
    s = XLNetStructure(model)
    for li, remove in removal.items():
        keep = keep_index(s.unit_counts(kind)[li], remove)
        cut_units(s.layers[li], **{f"{kind}s": keep}, slice_fn=_slice_param)


def drop_layers(model, remove: list[int]) -> None:
    """Remove whole layers in place (Sajjad et al. 2023, "On the effect of dropping layers")."""
    s = XLNetStructure(model)
    keep = keep_index(len(s.layers), remove)
    if len(keep) == 0:
        raise ValueError("cannot drop every layer of the model")
    s.base.layer = nn.ModuleList([s.layers[i] for i in keep.tolist()])
    s.base.n_layer = len(keep)
