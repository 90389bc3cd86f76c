"""XLNet with per-layer head and FFN-neuron counts: the model classes of a pruned folder (``xlnet-pruned``).

This file stands alone: it imports only ``torch``, ``transformers`` and ``huggingface_hub`` (a dependency of
``transformers``), because ``save_pretrained`` copies it beside the weights of every pruned model and writes
``auto_map`` into ``config.json`` (the ``transformers`` convention for custom architectures). So a pruned
folder loads where xlprune is not installed::

    from transformers import AutoModelForSequenceClassification, pipeline
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    classify = pipeline("text-classification", model=folder, trust_remote_code=True)

xlprune imports its pruned classes from here, so the library and a shipped folder run the same code.

What pruning leaves that ``XLNetConfig`` cannot describe: layers of different widths. ``PrunedXLNetConfig``
records the ``pruning_plan`` (which original layers, heads and neurons survive) and, for reading,
``heads_per_layer`` / ``inner_per_layer``. The model classes build the full ``transformers`` XLNet of
``n_layer`` layers and cut every layer down to the recorded units (as distiller replays a thinning recipe before
loading weights), so ``from_pretrained`` finds tensors of the saved shapes; nothing of XLNet is re-implemented.

The layout cut here (Yang et al. 2019; Dai et al. 2019): head ``n`` of a layer is index ``n`` of the head axis
of ``q, k, v, o, r`` (``(d_model, n_head, d_head)``, axis 1), of ``r_w_bias, r_r_bias, r_s_bias``
(``(n_head, d_head)``, axis 0) and of ``seg_embed`` (``(2, n_head, d_head)``, axis 1); FFN neuron ``j`` is row
``j`` of ``ff.layer_1`` (weight and bias) and column ``j`` of ``ff.layer_2.weight``.

A layer may keep no head or no neuron. XLNet is post-LayerNorm, ``LN(x + sublayer(x))``, so such a sublayer
computes ``LN(x)`` (attention) or ``LN(x + b_2)`` (FFN, ``b_2`` being ``layer_2``'s bias, dropout applied as
in training). :func:`fit_zero_width` gives such sublayers a forward that computes exactly that without the
zero-sized products, which exporters (ONNX) cannot handle.

The classes compute in whatever dtype they are loaded in (``from_pretrained(..., dtype=torch.bfloat16)``,
fp16, ``model.to(dtype)``): :func:`compute_in_model_dtype` casts the tensors XLNet makes in fp32 and the
floating inputs of every ``einsum``. The stock XLNet classes of transformers 5 fail in bf16 there.
"""
from __future__ import annotations

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import XLNetConfig, XLNetForSequenceClassification, XLNetLMHeadModel, XLNetModel
from transformers.models.xlnet.modeling_xlnet import XLNetFeedForward, XLNetRelativeAttention

PRUNED_MODEL_TYPE = "xlnet-pruned"

PROJECTIONS = ("q", "k", "v", "o", "r")            # rel_attn, (d_model, n_head, d_head)
HEAD_BIASES = ("r_r_bias", "r_s_bias", "r_w_bias")   # rel_attn, (n_head, d_head)
# every tensor of ``rel_attn`` with a head axis, and that axis
HEAD_TENSORS = {**{n: 1 for n in PROJECTIONS}, **{n: 0 for n in HEAD_BIASES}, "seg_embed": 1}
# every tensor of ``ff`` with a neuron axis: (submodule, parameter, axis)
NEURON_TENSORS = (("layer_1", "weight", 0), ("layer_1", "bias", 0), ("layer_2", "weight", 1))


@strict
class PrunedXLNetConfig(XLNetConfig):
    """``XLNetConfig`` plus what pruning left. ``pruning_plan``: the original ``layers`` kept and, per layer
    kept, the original ``heads`` and ``neurons`` kept (lists of indices); ``heads_per_layer`` /
    ``inner_per_layer``: the widths of the layers kept (``None``: as wide as ``n_head`` / ``d_inner``).
    ``n_layer`` counts the layers kept. A folder saved before plans were recorded has widths only, and loads
    keeping the first units."""
    model_type = PRUNED_MODEL_TYPE
    heads_per_layer: list[int] | None = None
    inner_per_layer: list[int] | None = None
    pruning_plan: dict | None = None

    def to_dict(self):
        """The config's fields, with ``auto_map`` naming this file's classes for every ``Auto*`` loader."""
        out = super().to_dict()
        out["auto_map"] = {**(out.get("auto_map") or {}), **AUTO_MAP}
        return out


def keep_index(n: int, remove) -> torch.Tensor:
    """Indices ``0 .. n-1`` without ``remove`` (``ValueError`` for an index out of range), a CPU long tensor."""
    remove = sorted(set(int(i) for i in remove))
    if any(i < 0 or i >= n for i in remove):
        raise ValueError(f"indices {remove} out of range for size {n}")
    return torch.tensor([i for i in range(n) if i not in remove], dtype=torch.long, device="cpu")


def slice_tensor(module: nn.Module, name: str, dim: int, keep: torch.Tensor) -> None:
    """Replace parameter ``module.name`` by its indices ``keep`` along ``dim`` (a new ``nn.Parameter``; on the
    meta device, where ``from_pretrained`` builds models before loading, only the shape changes)."""
    old = getattr(module, name)
    if old.is_meta:
        shape = list(old.shape)
        shape[dim] = len(keep)
        data = torch.empty(shape, dtype=old.dtype, device="meta")
    else:
        data = old.detach().index_select(dim, keep.to(old.device)).clone()
    setattr(module, name, nn.Parameter(data, requires_grad=old.requires_grad))


class ZeroHeadAttention(XLNetRelativeAttention):
    """Relative attention of a layer that kept no head: ``LN(h)`` (and ``LN(g)`` for the query stream), what the
    zero-width projections compute, without them. Attention probabilities, when asked for, have 0 heads."""

    def forward(self, h, g, attn_mask_h, attn_mask_g, r, seg_mat, mems=None, target_mapping=None,
                output_attentions=False):
        outputs = (self.layer_norm(h), None if g is None else self.layer_norm(g))
        if output_attentions:
            klen = h.shape[0] + (mems.shape[0] if mems is not None and mems.dim() > 1 else 0)
            empty = h.new_zeros(h.shape[1], 0, h.shape[0], klen)
            outputs = outputs + ((empty, empty) if g is not None else empty,)
        return outputs


class ZeroNeuronFeedForward(XLNetFeedForward):
    """FFN of a layer that kept no neuron: ``LN(x + dropout(b_2))``, what the zero-width FFN computes."""

    def forward(self, inp):
        return self.layer_norm(self.dropout(self.layer_2.bias.expand_as(inp)) + inp)


def fit_zero_width(layer: nn.Module) -> None:
    """Give an ``XLNetLayer``'s sublayer that has no head (no neuron) left the zero-width forward above
    (parameters untouched). Only plain ``transformers`` sublayers change class; a sublayer with a
    ``torch.nn.utils.parametrize`` parametrization (a gate) keeps its own and still computes the same."""
    attn, ff = layer.rel_attn, layer.ff
    if type(attn) is XLNetRelativeAttention and attn.q.shape[1] == 0:
        attn.__class__ = ZeroHeadAttention
    if type(ff) is XLNetFeedForward and ff.layer_1.out_features == 0:
        ff.__class__ = ZeroNeuronFeedForward


def cut_units(layer: nn.Module, heads: torch.Tensor | None = None, neurons: torch.Tensor | None = None,
              slice_fn=slice_tensor) -> None:
    """Keep only the heads ``heads`` and neurons ``neurons`` (positions in the layer as it is now) of an
    ``XLNetLayer``; ``None`` keeps them all. ``slice_fn(module, name, dim, keep)`` slices one parameter."""
    attn, ff = layer.rel_attn, layer.ff
    if heads is not None:
        for name, axis in HEAD_TENSORS.items():
            slice_fn(attn, name, axis, heads)
        attn.n_head = len(heads)
    if neurons is not None:
        for sub, name, axis in NEURON_TENSORS:
            slice_fn(getattr(ff, sub), name, axis, neurons)
        ff.layer_1.out_features = ff.layer_2.in_features = len(neurons)
    fit_zero_width(layer)


def shrink_to_config(model) -> None:
    """Cut a freshly built XLNet (``n_layer`` layers, full width) down to the units its ``PrunedXLNetConfig``
    records: layer ``i`` keeps the original heads ``pruning_plan["heads"][i]`` and neurons
    ``pruning_plan["neurons"][i]``; without a plan, the first ``heads_per_layer[i]`` / ``inner_per_layer[i]``.
    ``ValueError`` when the config lists units for another number of layers than ``n_layer``."""
    cfg = model.config
    layers = getattr(model, "transformer", model).layer
    plan = getattr(cfg, "pruning_plan", None)
    if plan:
        kept_heads, kept_neurons = plan["heads"], plan["neurons"]
    else:
        kept_heads = [range(h) for h in (cfg.heads_per_layer or [cfg.n_head] * len(layers))]
        kept_neurons = [range(k) for k in (cfg.inner_per_layer or [cfg.d_inner] * len(layers))]
    if len(kept_heads) != len(layers) or len(kept_neurons) != len(layers):
        raise ValueError(f"{PRUNED_MODEL_TYPE} config lists units for a different number of layers than n_layer")
    def index(units):  # on the CPU: ``from_pretrained`` builds the model under a meta-device context
        return torch.tensor(sorted(units), dtype=torch.long, device="cpu")

    for layer, heads, neurons in zip(layers, kept_heads, kept_neurons):
        cut_units(layer, index(heads), index(neurons))


def match_default_dtype(model: nn.Module) -> None:
    """Give every floating parameter and buffer of ``model`` the default dtype (``torch.get_default_dtype()``).

    ``from_pretrained(..., dtype=torch.bfloat16)`` builds a model with that dtype as the default, so ``nn.Linear``,
    ``nn.Embedding`` and ``nn.LayerNorm`` come out in it. XLNet makes ``q, k, v, o, r``, the relative biases,
    ``seg_embed`` and ``mask_emb`` with ``torch.FloatTensor``, which is fp32 whatever the default (transformers
    ``modeling_xlnet.py``); the weights then load into fp32 and the first ``einsum`` with a bf16 input fails
    (transformers#23145, #34743). Casting here, before the weights load, puts every tensor in the requested
    dtype (the loader casts the saved values to the tensors' dtype). Works on the meta device. In place.
    """
    dtype = torch.get_default_dtype()
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point() and tensor.dtype != dtype:
            tensor.data = tensor.data.to(dtype)


def _cast(value, dtype):
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != dtype:
        return value.to(dtype)
    if isinstance(value, (list, tuple)):
        return type(value)(_cast(v, dtype) for v in value)
    return value


def _inputs_in_encoder_dtype(module, args, kwargs):
    """Forward pre-hook of the encoder: its floating inputs (``perm_mask``, ``target_mapping``, ``inputs_embeds``,
    ``mems``, a float ``attention_mask``) in the dtype of its weights. XLNet's own
    ``prepare_inputs_for_generation`` makes ``target_mapping`` fp32."""
    dtype = module.word_embedding.weight.dtype
    return _cast(args, dtype), {k: _cast(v, dtype) for k, v in kwargs.items()}


def _inputs_in_attention_dtype(module, args, kwargs):
    """Forward pre-hook of a relative attention: every floating input of its ``einsum``s (``h``, ``g``, the
    attention masks, the position encodings ``r``, ``seg_mat``, ``mems``, ``target_mapping``) in the dtype of
    its weights. XLNet builds ``r`` in fp32 and casts it only on the one-stream path."""
    dtype = module.layer_norm.weight.dtype
    return _cast(args, dtype), {k: _cast(v, dtype) for k, v in kwargs.items()}


def compute_in_model_dtype(model: nn.Module) -> None:
    """Make ``model`` (an XLNet of this file) compute in the dtype it is built or loaded in, whatever dtype
    ``from_pretrained`` or ``model.to`` gives: every weight in the default dtype (:func:`match_default_dtype`),
    and the floating inputs of the encoder and of every relative attention cast to the weights' dtype on entry
    (a cast happens only where the dtypes differ, so an fp32 model computes as before). In place."""
    match_default_dtype(model)
    encoder = getattr(model, "transformer", model)
    encoder.register_forward_pre_hook(_inputs_in_encoder_dtype, with_kwargs=True)
    for layer in encoder.layer:
        layer.rel_attn.register_forward_pre_hook(_inputs_in_attention_dtype, with_kwargs=True)


class PrunedXLNetModel(XLNetModel):
    config_class = PrunedXLNetConfig

    def __init__(self, config):
        super().__init__(config)
        shrink_to_config(self)
        compute_in_model_dtype(self)


class PrunedXLNetLMHeadModel(XLNetLMHeadModel):
    config_class = PrunedXLNetConfig

    def __init__(self, config):
        super().__init__(config)
        shrink_to_config(self)
        compute_in_model_dtype(self)


class PrunedXLNetForSequenceClassification(XLNetForSequenceClassification):
    config_class = PrunedXLNetConfig

    def __init__(self, config):
        super().__init__(config)
        shrink_to_config(self)
        compute_in_model_dtype(self)


# the Auto class that loads each model class from a saved folder
AUTO_CLASSES = {"AutoModel": PrunedXLNetModel, "AutoModelForCausalLM": PrunedXLNetLMHeadModel,
                "AutoModelForSequenceClassification": PrunedXLNetForSequenceClassification}
_MODULE = __name__.rsplit(".", 1)[-1]  # the file's name, also when loaded as remote code
AUTO_MAP = {"AutoConfig": f"{_MODULE}.PrunedXLNetConfig",
            **{auto: f"{_MODULE}.{cls.__name__}" for auto, cls in AUTO_CLASSES.items()}}

# ``save_pretrained`` copies this file beside the weights (``transformers.dynamic_module_utils.custom_object_save``)
PrunedXLNetConfig.register_for_auto_class()
for _auto, _cls in AUTO_CLASSES.items():
    _cls.register_for_auto_class(_auto)
