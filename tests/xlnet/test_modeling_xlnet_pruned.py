"""The model classes of a pruned folder (``xlnet/modeling_xlnet_pruned.py``, the file copied beside every pruned
model's weights): cutting a layer to the units it keeps, the zero-width sublayers, rebuilding a pruned model from
its config, and computing in whatever dtype it is loaded in.

Dtypes (transformers#23145, #34743): XLNet makes ``q, k, v, o, r``, the relative biases, ``seg_embed`` and
``mask_emb`` with ``torch.FloatTensor`` (fp32 whatever dtype is asked for), and builds the relative position
encodings in fp32, so a bf16 load failed in the first ``einsum``. ``match_default_dtype`` and
``compute_in_model_dtype`` fix both: a pruned folder loads and runs in any dtype ``from_pretrained`` gives, and
after ``model.to(dtype)``.
"""
import pytest
import torch
from conftest import padded_batch, tiny_config, zero_width_classifier
from torch import nn
from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, XLNetConfig,
                          XLNetForSequenceClassification, XLNetLMHeadModel, XLNetModel)
from transformers.models.xlnet.modeling_xlnet import XLNetFeedForward, XLNetRelativeAttention

from xlprune_lib.prune.plan import PruningPlan
from xlprune_lib.xlnet import modeling
from xlprune_lib.xlnet import modeling_xlnet_pruned as mp
from xlprune_lib.xlnet.modeling_xlnet_pruned import (AUTO_MAP, HEAD_TENSORS, NEURON_TENSORS, PrunedXLNetConfig,
                                                     PrunedXLNetForSequenceClassification, PrunedXLNetLMHeadModel,
                                                     PrunedXLNetModel, ZeroHeadAttention, ZeroNeuronFeedForward,
                                                     cut_units, fit_zero_width, keep_index, slice_tensor)

D_MODEL, N_HEAD, D_HEAD, D_INNER = 32, 4, 8, 64       # conftest.tiny_config


# --- indices and slicing -------------------------------------------------------------------------------------

def test_keep_index_is_every_index_but_the_removed():
    keep = keep_index(5, [3, 1, 1])
    assert keep.tolist() == [0, 2, 4] and keep.dtype == torch.long and keep.device.type == "cpu"
    assert keep_index(3, []).tolist() == [0, 1, 2] and keep_index(2, [1, 0]).tolist() == []
    for bad in ([5], [-1], [0, 7]):
        with pytest.raises(ValueError, match="out of range for size 5"):
            keep_index(5, bad)


def test_slice_tensor_keeps_the_indices_along_one_axis():
    module = nn.Module()
    old = torch.randn(3, 4, 5)
    module.p = nn.Parameter(old.clone())
    module.frozen = nn.Parameter(torch.randn(4, 2), requires_grad=False)
    slice_tensor(module, "p", 1, torch.tensor([0, 2]))
    assert isinstance(module.p, nn.Parameter) and module.p.requires_grad
    assert torch.equal(module.p, old[:, [0, 2]])
    assert [n for n, _ in module.named_parameters()] == ["p", "frozen"]       # replaced, not added
    slice_tensor(module, "frozen", 0, torch.tensor([3]))
    assert module.frozen.shape == (1, 2) and not module.frozen.requires_grad
    # on the meta device (where from_pretrained builds a model) only the shape changes
    meta = nn.Module()
    meta.p = nn.Parameter(torch.empty(6, 4, device="meta", dtype=torch.float16))
    slice_tensor(meta, "p", 0, torch.tensor([1, 2, 5]))
    assert meta.p.is_meta and meta.p.shape == (3, 4) and meta.p.dtype == torch.float16


# --- cutting a layer ---------------------------------------------------------------------------------------

def _layer(seed=0):
    torch.manual_seed(seed)
    return XLNetModel(tiny_config(n_layer=1)).layer[0].eval()


def test_cut_units_slices_every_head_and_neuron_tensor():
    layer = _layer()
    before = {n: p.detach().clone() for n, p in layer.named_parameters()}
    heads, neurons = torch.tensor([1, 3]), torch.tensor([0, 5, 7])
    cut_units(layer, heads, neurons)
    attn, ff = layer.rel_attn, layer.ff
    for name, axis in HEAD_TENSORS.items():
        assert torch.equal(getattr(attn, name), before[f"rel_attn.{name}"].index_select(axis, heads)), name
    assert attn.n_head == 2 and attn.q.shape == (D_MODEL, 2, D_HEAD) and attn.seg_embed.shape == (2, 2, D_HEAD)
    for sub, name, axis in NEURON_TENSORS:
        got = getattr(getattr(ff, sub), name)
        assert torch.equal(got, before[f"ff.{sub}.{name}"].index_select(axis, neurons)), (sub, name)
    assert ff.layer_1.out_features == ff.layer_2.in_features == 3
    # what has no head or neuron axis is untouched
    for name in ("rel_attn.layer_norm.weight", "ff.layer_2.bias", "ff.layer_norm.bias"):
        assert torch.equal(dict(layer.named_parameters())[name], before[name])
    assert type(attn) is XLNetRelativeAttention and type(ff) is XLNetFeedForward


def test_cut_units_with_none_keeps_all_and_slices_through_the_function_given():
    layer = _layer()
    before = {n: p.detach().clone() for n, p in layer.named_parameters()}
    cut_units(layer)
    assert all(torch.equal(p, before[n]) for n, p in layer.named_parameters())
    sliced = []

    def record(module, name, dim, keep):
        sliced.append((type(module).__name__, name, dim, keep.tolist()))
        slice_tensor(module, name, dim, keep)

    cut_units(layer, heads=torch.tensor([0]), slice_fn=record)
    assert sliced == [("XLNetRelativeAttention", n, a, [0]) for n, a in HEAD_TENSORS.items()]
    sliced.clear()
    cut_units(layer, neurons=torch.tensor([2, 3]), slice_fn=record)
    assert sliced == [("Linear", n, a, [2, 3]) for _, n, a in NEURON_TENSORS]


def test_a_layer_without_heads_or_neurons_computes_its_layer_norms():
    """XLNet is post-LayerNorm: with no head the attention sublayer is LN(h) (and LN(g)), with no neuron the FFN
    is LN(x + b_2)."""
    layer = _layer()
    cut_units(layer, torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long))
    attn, ff = layer.rel_attn, layer.ff
    assert type(attn) is ZeroHeadAttention and type(ff) is ZeroNeuronFeedForward and attn.n_head == 0
    h, g = torch.randn(5, 2, D_MODEL), torch.randn(1, 2, D_MODEL)
    out_h, out_g = attn(h, None, None, None, h, None)
    assert torch.equal(out_h, attn.layer_norm(h)) and out_g is None
    out_h, out_g = attn(h, g, None, None, h, None)
    assert torch.equal(out_h, attn.layer_norm(h)) and torch.equal(out_g, attn.layer_norm(g))
    # attention probabilities, when asked for: zero heads, over the memory and the sequence
    *_, probs = attn(h, None, None, None, h, None, mems=torch.randn(3, 2, D_MODEL), output_attentions=True)
    assert probs.shape == (2, 0, 5, 8)
    *_, (probs_h, probs_g) = attn(h, g, None, None, h, None, output_attentions=True)
    assert probs_h.shape == probs_g.shape == (2, 0, 5, 5)
    torch.testing.assert_close(ff(h), ff.layer_norm(h + ff.layer_2.bias), rtol=1e-6, atol=1e-6)
    # the same as the stock classes with zero-sized tensors
    attn.__class__, ff.__class__ = XLNetRelativeAttention, XLNetFeedForward
    torch.testing.assert_close(ff(h), ff.layer_norm(h + ff.layer_2.bias), rtol=1e-6, atol=1e-6)


def test_fit_zero_width_changes_only_plain_zero_width_sublayers():
    from torch.nn.utils import parametrize

    class Identity(nn.Module):
        def forward(self, x):
            return x

    wide = _layer()
    fit_zero_width(wide)
    assert type(wide.rel_attn) is XLNetRelativeAttention and type(wide.ff) is XLNetFeedForward
    gated = _layer()
    cut_units(gated, heads=torch.tensor([], dtype=torch.long))
    gated.rel_attn.__class__ = XLNetRelativeAttention
    parametrize.register_parametrization(gated.rel_attn, "q", Identity())   # a gate's parametrization
    fit_zero_width(gated)
    assert type(gated.rel_attn) is not ZeroHeadAttention and parametrize.is_parametrized(gated.rel_attn)


# --- the pruned config and classes ---------------------------------------------------------------------------

def _config(**kw):
    base = {k: v for k, v in tiny_config(n_layer=2).to_dict().items() if k != "model_type"}
    return PrunedXLNetConfig(**base, **kw)


PLAN = {"n_layer": 3, "n_head": 4, "d_inner": 64, "layers": [0, 2], "heads": [[1, 3], [0, 1, 2]],
        "neurons": [[0, 2, 4], list(range(10, 64))]}


def test_the_config_records_the_plan_and_names_this_file_for_every_auto_class(tmp_path):
    config = _config(pruning_plan=PLAN, heads_per_layer=[2, 3], inner_per_layer=[3, 54])
    assert config.model_type == mp.PRUNED_MODEL_TYPE == "xlnet-pruned" and isinstance(config, XLNetConfig)
    out = config.to_dict()
    assert out["auto_map"] == AUTO_MAP and AUTO_MAP["AutoConfig"] == "modeling_xlnet_pruned.PrunedXLNetConfig"
    assert set(AUTO_MAP) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoModelForSequenceClassification"}
    config.save_pretrained(tmp_path)
    loaded = PrunedXLNetConfig.from_pretrained(tmp_path)
    assert loaded.pruning_plan == PLAN and loaded.heads_per_layer == [2, 3] and loaded.inner_per_layer == [3, 54]
    assert _config().pruning_plan is None and _config().heads_per_layer is None


@pytest.mark.parametrize("cls, full_cls", [(PrunedXLNetModel, XLNetModel),
                                           (PrunedXLNetLMHeadModel, XLNetLMHeadModel),
                                           (PrunedXLNetForSequenceClassification, XLNetForSequenceClassification)])
def test_a_pruned_class_keeps_the_original_units_of_its_plan(cls, full_cls):
    """Built from the same seed, the pruned class is the full model cut to the plan's original units."""
    torch.manual_seed(0)
    full = full_cls(tiny_config(n_layer=2))
    torch.manual_seed(0)
    pruned = cls(_config(pruning_plan={**PLAN, "n_layer": 2, "layers": [0, 1]}))
    f_layers, p_layers = getattr(full, "transformer", full).layer, getattr(pruned, "transformer", pruned).layer
    for f, p, heads, neurons in zip(f_layers, p_layers, PLAN["heads"], PLAN["neurons"]):
        assert p.rel_attn.n_head == len(heads) and p.ff.layer_1.out_features == len(neurons)
        assert torch.equal(p.rel_attn.q, f.rel_attn.q[:, heads])
        assert torch.equal(p.rel_attn.r_w_bias, f.rel_attn.r_w_bias[heads])
        assert torch.equal(p.ff.layer_1.weight, f.ff.layer_1.weight[neurons])
        assert torch.equal(p.ff.layer_2.weight, f.ff.layer_2.weight[:, neurons])


def test_widths_only_keep_the_first_units_and_mismatched_lengths_are_refused():
    torch.manual_seed(0)
    model = PrunedXLNetModel(_config(heads_per_layer=[0, 3], inner_per_layer=[64, 0]))
    assert [(layer.rel_attn.n_head, layer.ff.layer_1.out_features) for layer in model.layer] == [(0, 64), (3, 0)]
    assert type(model.layer[0].rel_attn) is ZeroHeadAttention and type(model.layer[1].ff) is ZeroNeuronFeedForward
    assert type(model.layer[1].rel_attn) is XLNetRelativeAttention
    out = model(**{k: v for k, v in padded_batch([4, 6], [0, 1]).items() if k != "labels"}).last_hidden_state
    assert out.shape == (2, 6, D_MODEL) and torch.isfinite(out).all()
    unpruned = PrunedXLNetModel(_config())
    assert [layer.rel_attn.n_head for layer in unpruned.layer] == [N_HEAD, N_HEAD]
    with pytest.raises(ValueError, match="different number of layers"):
        PrunedXLNetModel(_config(heads_per_layer=[2]))
    with pytest.raises(ValueError, match="different number of layers"):
        PrunedXLNetModel(_config(pruning_plan={**PLAN, "heads": [[0]], "neurons": [[0]]}))


# --- dtypes ------------------------------------------------------------------------------------------------

def test_match_default_dtype_casts_every_floating_tensor():
    torch.manual_seed(0)
    model = XLNetModel(tiny_config())
    ints = {n: b.clone() for n, b in model.named_buffers() if not b.is_floating_point()}
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        mp.match_default_dtype(model)
    finally:
        torch.set_default_dtype(old)
    assert {t.dtype for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()} == {torch.float64}
    assert all(torch.equal(b, ints[n]) for n, b in model.named_buffers() if n in ints)
    with torch.device("meta"):                          # as from_pretrained builds it: shapes only
        meta = XLNetModel(tiny_config())
    torch.set_default_dtype(torch.float16)
    try:
        mp.match_default_dtype(meta)
    finally:
        torch.set_default_dtype(old)
    assert {t.dtype for t in (*meta.parameters(), *meta.buffers()) if t.is_floating_point()} == {torch.float16}
    assert meta.layer[0].ff.layer_1.weight.is_meta                       # still no data


def test_compute_in_model_dtype_leaves_fp32_as_it_was():
    torch.manual_seed(0)
    model = XLNetModel(tiny_config()).eval()
    inputs = {k: v for k, v in padded_batch([5, 3], [0, 1]).items() if k != "labels"}
    with torch.no_grad():
        before = model(**inputs).last_hidden_state
        mp.compute_in_model_dtype(model)
        after = model(**inputs).last_hidden_state
    assert torch.equal(before, after)
    assert len(model._forward_pre_hooks) == 1 and all(len(layer.rel_attn._forward_pre_hooks) == 1
                                                       for layer in model.layer)
    with torch.no_grad():
        half = model.to(torch.bfloat16)(**inputs, perm_mask=torch.zeros(2, 5, 5)).last_hidden_state
    assert half.dtype == torch.bfloat16           # a float32 perm_mask is cast on entry
    torch.testing.assert_close(half.float(), after, atol=0.1, rtol=0.05)


BATCH = padded_batch([6, 4, 5], [0, 1, 1])
INPUTS = {k: v for k, v in BATCH.items() if k != "labels"}
# tolerances against the same folder in fp32 (a tiny random model's logits are of order 1)
TOLERANCE = {torch.bfloat16: 0.05, torch.float16: 5e-3, torch.float64: 1e-5}


def _classifier():
    torch.manual_seed(0)
    model = XLNetForSequenceClassification(tiny_config(n_layer=3, num_labels=2)).eval()
    for p in model.parameters():   # away from the init, so a tensor left behind shows in the logits
        p.data.add_(0.1 * torch.randn_like(p))
    return model


CUTS = {
    "heads": lambda m: PruningPlan.of(m).without("head", {0: [1, 2], 2: [0]}).apply_surgery(m),
    "layer dropped": lambda m: PruningPlan.of(m).without("layer", [1]).apply_surgery(m),
    "heads and neurons": lambda m: (PruningPlan.of(m).without("head", {1: [3]})
                                    .without("neuron", {0: list(range(0, 64, 2))}).apply_surgery(m)),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("dtypes")
    out = {}
    for name, cut in CUTS.items():
        model = _classifier()
        cut(model)
        out[name] = modeling.save_model(model, None, root / name.replace(" ", "_"))
    out["zero width"] = modeling.save_model(zero_width_classifier(), None, root / "zero_width")
    return out


def _load(folder, dtype=None, auto=AutoModelForSequenceClassification):
    kw = {} if dtype is None else {"dtype": dtype}
    return auto.from_pretrained(str(folder), trust_remote_code=True, **kw).eval()


def _logits(model, inputs=INPUTS):
    with torch.no_grad():
        return model(**inputs).logits


def _dtypes(model):
    return {t.dtype for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64], ids=str)
@pytest.mark.parametrize("cut", [*CUTS, "zero width"])
def test_from_pretrained_in_a_dtype(folders, cut, dtype):
    model = _load(folders[cut], dtype)
    assert type(model).__name__ == "PrunedXLNetForSequenceClassification"
    assert _dtypes(model) == {dtype}
    logits = _logits(model)
    assert logits.dtype == dtype
    torch.testing.assert_close(logits.float(), _logits(_load(folders[cut])), atol=TOLERANCE[dtype],
                               rtol=TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("cut", ["heads", "zero width"])
def test_to_a_dtype_after_loading(folders, cut, dtype):
    fp32 = _load(folders[cut])
    reference = _logits(fp32)
    model = fp32.to(dtype)
    assert _dtypes(model) == {dtype}
    torch.testing.assert_close(_logits(model).float(), reference, atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype])
    back = model.to(torch.float32)   # and back: fp32 again, close to where it started
    assert _dtypes(back) == {torch.float32}


def test_the_bare_encoder_in_bf16(folders):
    model = _load(folders["heads and neurons"], torch.bfloat16, AutoModel)
    assert type(model).__name__ == "PrunedXLNetModel" and _dtypes(model) == {torch.bfloat16}
    with torch.no_grad():
        hidden = model(**INPUTS).last_hidden_state
    reference = _load(folders["heads and neurons"], None, AutoModel)(**INPUTS).last_hidden_state
    torch.testing.assert_close(hidden.float(), reference.detach(), atol=0.1, rtol=0.05)


def test_lm_head_two_streams_in_bf16(tmp_path):
    """Permutation LM with ``target_mapping`` (the query stream): XLNet casts the position encodings only on
    the one-stream path, and makes ``target_mapping`` fp32 itself when generating."""
    torch.manual_seed(0)
    lm = XLNetLMHeadModel(tiny_config()).eval()
    PruningPlan.of(lm).without("head", {0: [0, 1]}).without("neuron", {1: [3, 4]}).apply_surgery(lm)
    folder = modeling.save_model(lm, None, tmp_path / "lm")
    ids = INPUTS["input_ids"]
    perm = torch.zeros(len(ids), ids.shape[1], ids.shape[1])
    perm[:, :, -1] = 1
    target = torch.zeros(len(ids), 1, ids.shape[1])
    target[:, 0, -1] = 1
    inputs = {"input_ids": ids, "perm_mask": perm, "target_mapping": target}
    model = _load(folder, torch.bfloat16, AutoModelForCausalLM)
    assert type(model).__name__ == "PrunedXLNetLMHeadModel" and _dtypes(model) == {torch.bfloat16}
    logits = _logits(model, inputs)
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), _logits(_load(folder, None, AutoModelForCausalLM), inputs),
                               atol=0.1, rtol=0.05)


def test_plain_xlnet_in_bf16_fails_upstream(tmp_path):
    """What README.md says of plain ``XLNetForSequenceClassification`` under transformers 5: loaded with
    ``dtype=torch.bfloat16`` its ``q`` stays fp32 and the forward pass raises. (When this test fails, upstream
    has fixed it: update the README sentence.)"""
    torch.manual_seed(0)
    XLNetForSequenceClassification(tiny_config(num_labels=2)).save_pretrained(tmp_path / "plain")
    model = XLNetForSequenceClassification.from_pretrained(tmp_path / "plain", dtype=torch.bfloat16).eval()
    assert model.transformer.layer[0].rel_attn.q.dtype == torch.float32
    assert model.transformer.layer[0].ff.layer_1.weight.dtype == torch.bfloat16
    with pytest.raises(RuntimeError, match="expected scalar type Float but found BFloat16"):
        _logits(model)
    model.to(torch.bfloat16)    # what works instead: cast the whole model after loading
    assert _logits(model).dtype == torch.bfloat16
