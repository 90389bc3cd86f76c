"""What a ``transformers`` XLNet is made of, for pruning: the one place that knows its layout.

Which tensors form an attention head, an FFN neuron and a layer, along which axis; which weights make up the
prunable set; what each unit costs in parameters. Every other module asks here (nn_pruning's
``ModelStructure`` plays this role for BERT-like models; XLNet also needs axes, because its projections are
3-D).

XLNet (Yang et al. 2019) stores each attention projection as one ``(d_model, n_head, d_head)`` parameter of
``XLNetRelativeAttention``: ``q, k, v, o`` and the relative-position projection ``r``; head ``n`` is index ``n``
of axis 1. The three relative biases ``r_w_bias`` (content), ``r_r_bias`` (position), ``r_s_bias`` (segment)
are ``(n_head, d_head)`` (head axis 0) and ``seg_embed`` is ``(2, n_head, d_head)`` (head axis 1). The
attention output is ``sum_n attn_vec_n o[:, n, :]^T``, so scaling ``o[:, n, :]`` gates head ``n``. FFN neuron
``j`` is row ``j`` of ``ff.layer_1`` (weight and bias) and column ``j`` of ``ff.layer_2.weight``; scaling that
column gates it. Layers are ``transformer.layer``.

Costs come in two currencies: ``"encoder"`` counts every parameter a unit owns (the request of
encoder-budget pruning, ``select.EncoderBudget``: a head owns ``5 * d_model * d_head`` projection entries plus
``5 * d_head`` bias and segment entries, a neuron ``2 * d_model + 1``); ``"prunable"`` counts only the
entries of the prunable set (what a target weight sparsity counts, ``l0.py``: ``5 * d_model * d_head`` and
``2 * d_model``).
"""
from __future__ import annotations

import re

from torch import nn

from . import modeling_xlnet_pruned as layout

# the one vocabulary of what pruning removes: single weights, FFN neurons, attention heads, whole layers; and
# heads and neurons together under an encoder budget (``select.EncoderBudget``, L0's CoFi-style gates)
KINDS = ("weight", "neuron", "head", "layer")
UNIT_KINDS = KINDS[1:]
ENCODER = "head+neuron"
COSTS = ("encoder", "prunable")


class XLNetStructure:
    """A ``transformers`` XLNet (base model, LM head or classifier, pruned or not) seen as prunable units.

    Everything is read from the tensors as the model is *now* (after surgery, layers may differ in width);
    layer ``i`` is the ``i``-th layer present. Class attributes declare the layout (see the module docstring).
    """

    # the head and neuron axes, declared in the file shipped with pruned folders (it must stand alone)
    PROJECTIONS = layout.PROJECTIONS        # rel_attn, (d_model, n_head, d_head)
    HEAD_BIASES = layout.HEAD_BIASES        # rel_attn, (n_head, d_head)
    HEAD_TENSORS = layout.HEAD_TENSORS      # every tensor of ``rel_attn`` with a head axis, and that axis
    NEURON_TENSORS = layout.NEURON_TENSORS  # every tensor of ``ff`` with a neuron axis: (submodule, name, axis)
    FFN_MATRICES = (("layer_1", "weight"), ("layer_2", "weight"))
    # the tensor whose slices gate a unit: a head's slice of ``o``, a neuron's column of ``layer_2``
    GATED = {"head": ("rel_attn", "o", 1), "neuron": ("ff.layer_2", "weight", 1)}
    # the input (reduction) axis of every prunable matrix: what a product with it sums over, so what N:M groups
    # run along (2:4 kernels need the groups on the weight's input side). ``q, k, v, r`` map d_model (axis 0)
    # to heads; ``o`` maps (n_head, d_head) back to d_model, so its groups run along d_head (axis 2, never across
    # heads); ``nn.Linear`` weights are (out, in), so the FFN's input axis is 1 (d_model for ``layer_1``,
    # d_inner for ``layer_2``)
    INPUT_AXES = {"rel_attn.q": 0, "rel_attn.k": 0, "rel_attn.v": 0, "rel_attn.r": 0, "rel_attn.o": 2,
                  "ff.layer_1.weight": 1, "ff.layer_2.weight": 1}
    # the component of every parameter, from its name (first match wins; the order of the printed tables)
    COMPONENTS = {
        "embeddings": r"(word_embedding\.weight|mask_emb)$",
        "attention.q": r"rel_attn\.q$",
        "attention.k": r"rel_attn\.k$",
        "attention.v": r"rel_attn\.v$",
        "attention.o": r"rel_attn\.o$",
        "attention.r": r"rel_attn\.r$",
        "relative_biases": r"rel_attn\.(r_r_bias|r_s_bias|r_w_bias|seg_embed)$",
        "ffn": r"ff\.layer_[12]\.(weight|bias)$",
        "layer_norm": r"layer_norm\.(weight|bias)$",
        "head": r"^(sequence_summary|logits_proj|lm_loss|classifier)\.",
    }

    @classmethod
    def component_of(cls, name: str) -> str:
        """The component (:attr:`COMPONENTS`) of a parameter, from its name; ``ValueError`` for a name no
        pattern matches (nothing is silently dropped from a count)."""
        for component, pattern in cls.COMPONENTS.items():
            if re.search(pattern, name):
                return component
        raise ValueError(f"unclassified XLNet parameter {name!r}")

    @classmethod
    def input_axis(cls, name: str) -> int:
        """The input (reduction) axis of the prunable matrix ``name`` (a parameter name such as
        ``layer.3.rel_attn.o`` or ``transformer.layer.0.ff.layer_1.weight``; :attr:`INPUT_AXES`). Raises
        ``ValueError`` for a name outside the prunable set."""
        for suffix, axis in cls.INPUT_AXES.items():
            if name.endswith(suffix):
                return axis
        raise ValueError(f"{name!r} is not a prunable XLNet matrix")

    @classmethod
    def linear_weight(cls, name: str, weight):
        """The prunable matrix ``name`` as the 2-D ``(out, in)`` weight of ``torch.nn.functional.linear`` (a
        view when possible): ``q, k, v, r`` ``(d_model, n_head, d_head)`` become ``(n_head * d_head, d_model)``
        (``einsum("ibh,hnd->ibnd", x, q)`` is ``linear(x, W)`` viewed as heads), ``o`` becomes
        ``(d_model, n_head * d_head)`` (``einsum("ibnd,hnd->ibh", a, o)`` is ``linear(a.flatten(-2), W)``), the FFN
        weights are already ``(out, in)``. Its last axis is :meth:`input_axis`, flattened. ``ValueError`` for a
        name outside the prunable set."""
        axis = cls.input_axis(name)
        if weight.dim() == 2:    # nn.Linear weights: (out, in) already
            return weight
        return weight.flatten(1) if axis == 2 else weight.flatten(1).t()

    def __init__(self, model: nn.Module):
        self.model = model

    # --- where things are ---------------------------------------------------------------------------

    @staticmethod
    def base_of(model) -> nn.Module:
        """The ``XLNetModel`` inside any XLNet model."""
        return getattr(model, "transformer", model)

    @property
    def base(self) -> nn.Module:
        return self.base_of(self.model)

    @property
    def layers(self) -> nn.ModuleList:
        """The ``XLNetLayer`` list (``transformer.layer``)."""
        return self.base.layer

    def head_tensors(self, i: int) -> list[tuple[nn.Module, str, int]]:
        """``(module, name, axis)`` of every tensor of layer ``i`` that has a head axis."""
        attn = self.layers[i].rel_attn
        return [(attn, name, axis) for name, axis in self.HEAD_TENSORS.items()]

    def neuron_tensors(self, i: int) -> list[tuple[nn.Module, str, int]]:
        """``(module, name, axis)`` of every tensor of layer ``i`` that has a neuron axis."""
        ff = self.layers[i].ff
        return [(getattr(ff, sub), name, axis) for sub, name, axis in self.NEURON_TENSORS]

    def unit_tensors(self, i: int, kind: str) -> list[tuple[nn.Module, str, int]]:
        return {"head": self.head_tensors, "neuron": self.neuron_tensors}[_slice_kind(kind)](i)

    def gated_tensor(self, i: int, kind: str) -> tuple[nn.Module, str, int]:
        """``(module, name, axis)`` whose slices gate layer ``i``'s heads or neurons."""
        path, name, axis = self.GATED[_slice_kind(kind)]
        module = self.layers[i]
        for part in path.split("."):
            module = getattr(module, part)
        return module, name, axis

    def prunable(self, include_embeddings: bool = False, part: str | None = None,
                 layer: int | None = None) -> list[tuple[nn.Module, str]]:
        """``(module, name)`` pairs of the default prunable set, layer by layer: the five attention projections
        (``(d_model, n_head, d_head)``), then ``ff.layer_1.weight`` and ``ff.layer_2.weight``. ``part``:
        ``"attention"`` or ``"ffn"`` only; ``layer``: one layer only; ``include_embeddings``: the word embedding
        last (a lookup table: pruning it saves storage, not compute)."""
        if part not in (None, "attention", "ffn"):
            raise ValueError(f"part is 'attention' or 'ffn', not {part!r}")
        pairs = []
        for i, lay in enumerate(self.layers):
            if layer is not None and i != layer:
                continue
            if part in (None, "attention"):
                pairs += [(lay.rel_attn, name) for name in self.PROJECTIONS]
            if part in (None, "ffn"):
                pairs += [(getattr(lay.ff, sub), name) for sub, name in self.FFN_MATRICES]
        if include_embeddings:
            pairs.append((self.base.word_embedding, "weight"))
        return pairs

    # --- how many, and what they cost -------------------------------------------------------------------

    def heads(self, i: int) -> int:
        return int(self.layers[i].rel_attn.q.shape[1])

    def neurons(self, i: int) -> int:
        return int(self.layers[i].ff.layer_1.out_features)

    def unit_counts(self, kind: str) -> list:
        """Heads or neurons per layer, or ``()`` (one scalar gate) per layer."""
        if kind == "layer":
            return [() for _ in self.layers]
        count = {"head": self.heads, "neuron": self.neurons}[_slice_kind(kind)]
        return [count(i) for i in range(len(self.layers))]

    def total_units(self, kind: str) -> int:
        """Heads, neurons or layers of the whole model."""
        per_layer = self.unit_counts(kind)
        return len(per_layer) if kind == "layer" else sum(per_layer)

    def unit_cost(self, i: int, kind: str, within: str = "encoder") -> int:
        """Parameters one head or neuron of layer ``i`` owns, ``within`` the encoder or the prunable set (module
        docstring); 0 for a layer with no heads left."""
        if within not in COSTS:
            raise ValueError(f"costs are counted within {' or '.join(COSTS)}, not {within!r}")
        layer = self.layers[i]
        if _slice_kind(kind) == "neuron":
            return layer.ff.layer_1.in_features + layer.ff.layer_2.out_features + (within == "encoder")
        heads = self.heads(i)
        names = list(self.HEAD_TENSORS) if within == "encoder" else list(self.PROJECTIONS)
        return sum(getattr(layer.rel_attn, n).numel() for n in names) // heads if heads else 0

    def encoder_params(self) -> int:
        """Parameters inside the XLNet layers (embeddings and task head excluded)."""
        return sum(p.numel() for layer in self.layers for p in layer.parameters())


def _slice_kind(kind: str) -> str:
    if kind not in ("head", "neuron"):
        raise ValueError(f"this applies to heads and neurons, not {kind!r}")
    return kind
