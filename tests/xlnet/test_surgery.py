"""Surgery removes heads / neurons / layers; the slim model computes what the masked model computes."""
import pytest
import torch
from conftest import tiny_config

from xlprune_lib.prune.plan import PruningPlan
from xlprune_lib.xlnet import surgery
from xlprune_lib.xlnet.structure import XLNetStructure


def _shapes(model):
    s = XLNetStructure(model)
    return [{"heads": h, "neurons": n} for h, n in zip(s.unit_counts("head"), s.unit_counts("neuron"))]


def _inputs(seed=0, batch=3, seq=10, vocab=120):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, vocab, (batch, seq), generator=g)
    mask = torch.ones(batch, seq)
    mask[0, :4] = 0                                 # left padding, as XLNet pads
    ids[0, :4] = 5
    tt = torch.zeros(batch, seq, dtype=torch.long)
    tt[:, seq // 2:] = 1                            # two segments: exercises seg_embed / r_s_bias
    perm = (torch.rand(batch, seq, seq, generator=g) < 0.3).float()
    target = torch.zeros(batch, 2, seq)
    target[:, 0, 2] = target[:, 1, 7] = 1
    return ids, mask, tt, perm, target


def _mask_heads(model, heads):
    """The masked reference: a head whose output projection is zero contributes nothing."""
    with torch.no_grad():
        for li, hs in heads.items():
            model.transformer.layer[li].rel_attn.o[:, hs, :] = 0


def _mask_neurons(model, neurons):
    with torch.no_grad():
        for li, ns in neurons.items():
            ff = model.transformer.layer[li].ff
            ff.layer_1.weight[ns] = 0
            ff.layer_1.bias[ns] = 0


def _outputs(classifier):
    ids, mask, tt, _, _ = _inputs()
    with torch.no_grad():
        return classifier(input_ids=ids, attention_mask=mask, token_type_ids=tt).logits


@pytest.fixture
def lm():
    from transformers import XLNetLMHeadModel

    torch.manual_seed(0)
    return XLNetLMHeadModel(tiny_config(mem_len=6)).eval()


def _lm_outputs(model):
    ids, mask, tt, perm, target = _inputs()
    with torch.no_grad():
        first = model(input_ids=ids, attention_mask=mask, token_type_ids=tt, use_mems=True)
        plm = model(input_ids=ids, attention_mask=mask, token_type_ids=tt, perm_mask=perm,
                    target_mapping=target, mems=first.mems, use_mems=True)
    return first.logits, plm.logits


@pytest.mark.parametrize("heads", [{0: [1], 1: [0, 3]}, {0: [0, 1, 2, 3]}])
def test_head_surgery_equals_masking(lm, heads):
    _mask_heads(lm, heads)
    ref = _lm_outputs(lm)
    surgery.prune_heads(lm, heads)
    got = _lm_outputs(lm)
    for a, b in zip(ref, got):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert [s["heads"] for s in _shapes(lm)] == [4 - len(heads.get(0, [])), 4 - len(heads.get(1, []))]


def test_neuron_surgery_equals_masking(lm, tiny_classifier):
    neurons = {0: list(range(0, 64, 3)), 1: list(range(64))}   # layer 1 loses every neuron
    for model in (lm, tiny_classifier):
        _mask_neurons(model, neurons)
    ref_lm, ref_cls = _lm_outputs(lm), _outputs(tiny_classifier)
    for model in (lm, tiny_classifier):
        surgery.prune_neurons(model, neurons)
    for a, b in zip(ref_lm, _lm_outputs(lm)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ref_cls, _outputs(tiny_classifier), rtol=1e-5, atol=1e-5)
    assert XLNetStructure(tiny_classifier).unit_counts("neuron") == [64 - 22, 0]
    removed = 22 * (32 + 1 + 32) + 64 * (32 + 1 + 32)      # per neuron: a row + bias of layer_1, a column of layer_2
    from transformers import XLNetLMHeadModel

    dense = sum(p.numel() for p in XLNetLMHeadModel(tiny_config(mem_len=6)).parameters())
    assert sum(p.numel() for p in lm.parameters()) == dense - removed


def test_drop_layers(tiny_classifier):
    surgery.drop_layers(tiny_classifier, [1])
    assert len(tiny_classifier.transformer.layer) == 1 and tiny_classifier.transformer.n_layer == 1
    assert _outputs(tiny_classifier).shape == (3, 2)
    with pytest.raises(ValueError):
        surgery.drop_layers(tiny_classifier, [0])


def test_bad_indices_are_refused(tiny_classifier):
    with pytest.raises(ValueError, match="out of range"):
        surgery.prune_heads(tiny_classifier, {0: [4]})
    with pytest.raises(ValueError, match="out of range"):
        surgery.prune_neurons(tiny_classifier, {1: [-1]})


def _slim(model):
    plan = PruningPlan.of(model).without("head", {0: [1, 2], 1: [0]})
    plan.without("neuron", {0: list(range(40)), 1: list(range(64))}).apply_surgery(model)
    return model


def test_pruned_model_saves_and_reloads(tiny_classifier, tmp_path):
    """A slimmed classifier reloads with its shapes via xlprune_lib and via the Auto classes."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from xlprune_lib.xlnet.modeling import PrunedXLNetForSequenceClassification, load_saved

    _slim(tiny_classifier)
    assert type(tiny_classifier) is PrunedXLNetForSequenceClassification
    ref = _outputs(tiny_classifier)
    tiny_classifier.save_pretrained(tmp_path, safe_serialization=True)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "xlnet-pruned"
    assert not list(tmp_path.glob("*.bin")) and list(tmp_path.glob("*.safetensors"))
    for loaded in (load_saved(tmp_path), AutoModelForSequenceClassification.from_pretrained(tmp_path)):
        assert type(loaded) is PrunedXLNetForSequenceClassification
        assert _shapes(loaded) == [{"heads": 2, "neurons": 24}, {"heads": 3, "neurons": 0}]
        torch.testing.assert_close(_outputs(loaded.eval()), ref, rtol=1e-5, atol=1e-5)


def test_dropped_layers_reload(tiny_classifier, tmp_path):
    from xlprune_lib.xlnet.modeling import load_saved

    PruningPlan.of(tiny_classifier).without("head", {1: [3]}).without("layer", [0]).apply_surgery(tiny_classifier)
    ref = _outputs(tiny_classifier)
    tiny_classifier.save_pretrained(tmp_path)
    loaded = load_saved(tmp_path).eval()
    assert loaded.config.n_layer == 1 and _shapes(loaded) == [{"heads": 3, "neurons": 64}]
    assert PruningPlan.of(loaded).layers == (1,) and PruningPlan.of(loaded).heads[1] == (0, 1, 2)
    torch.testing.assert_close(_outputs(loaded), ref, rtol=1e-5, atol=1e-5)


def test_pruned_model_runs_in_a_pipeline(small_tokenizer, tmp_path):
    """The saved folder (model + tokenizer) works in transformers' text-classification pipeline."""
    from transformers import AutoModelForSequenceClassification, pipeline

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(tiny_config(vocab_size=len(small_tokenizer),
                                                                       num_labels=2))
    _slim(model)
    model.save_pretrained(tmp_path)
    small_tokenizer.save_pretrained(tmp_path)
    clf = pipeline("text-classification", model=str(tmp_path), device="cpu")
    out = clf(["A gripping, beautifully acted film.", "Dull and far too long."])
    assert len(out) == 2 and all(o["label"] in ("LABEL_0", "LABEL_1") and 0 <= o["score"] <= 1 for o in out)
    assert _shapes(clf.model) == [{"heads": 2, "neurons": 24}, {"heads": 3, "neurons": 0}]
