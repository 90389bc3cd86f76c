"""XLNetStructure: the one place that knows which tensors form a head, a neuron, a layer and the prunable set."""
import pytest
import torch
from conftest import tiny_config

from xlprune_lib.prune.plan import PruningPlan
from xlprune_lib.xlnet import surgery
from xlprune_lib.xlnet.structure import XLNetStructure


def test_prunable_set_order_names_and_parts(tiny_classifier):
    s = XLNetStructure(tiny_classifier)
    pairs = s.prunable()
    names = PruningPlan.of(tiny_classifier).names()
    assert len(pairs) == 14 == len(names)
    layer0 = tiny_classifier.transformer.layer[0]
    assert pairs[:7] == [(layer0.rel_attn, n) for n in "qkvor"] + [(layer0.ff.layer_1, "weight"),
                                                                  (layer0.ff.layer_2, "weight")]
    assert names[5:7] == ["layer.0.ff.layer_1.weight", "layer.0.ff.layer_2.weight"]
    assert s.prunable(part="ffn", layer=1) == pairs[12:]
    assert s.prunable(include_embeddings=True)[-1] == (tiny_classifier.transformer.word_embedding, "weight")
    with pytest.raises(ValueError):
        s.prunable(part="embeddings")


def test_head_and_neuron_axes_select_exactly_one_unit(tiny_classifier):
    """Zeroing head 2's slice of every head tensor equals cutting head 2; likewise neuron 7."""
    s = XLNetStructure(tiny_classifier)
    for module, name, axis in s.head_tensors(0):
        assert getattr(module, name).shape[axis] == 4
    for module, name, axis in s.neuron_tensors(1):
        assert getattr(module, name).shape[axis] == 64
    assert s.gated_tensor(0, "head") == (tiny_classifier.transformer.layer[0].rel_attn, "o", 1)
    assert s.gated_tensor(1, "neuron") == (tiny_classifier.transformer.layer[1].ff.layer_2, "weight", 1)
    with pytest.raises(ValueError):
        s.unit_tensors(0, "layer")


def test_costs_are_counted_from_the_tensors_and_follow_surgery(tiny_classifier):
    s = XLNetStructure(tiny_classifier)
    d, dh = 32, 8
    assert s.unit_cost(0, "head") == 5 * d * dh + 5 * dh and s.unit_cost(0, "head", "prunable") == 5 * d * dh
    assert s.unit_cost(0, "neuron") == 2 * d + 1 and s.unit_cost(0, "neuron", "prunable") == 2 * d
    before = s.encoder_params()
    surgery.prune_heads(tiny_classifier, {0: [0, 1, 2, 3]})
    assert s.unit_cost(0, "head") == 0 and s.heads(0) == 0
    assert s.unit_counts("head") == [0, 4] and s.total_units("head") == 4 and s.total_units("layer") == 2
    assert before - s.encoder_params() == 4 * (5 * d * dh + 5 * dh)
    with pytest.raises(ValueError, match="within"):
        s.unit_cost(1, "head", "model")


@pytest.mark.parametrize("cls", ["XLNetModel", "XLNetLMHeadModel", "XLNetForSequenceClassification"])
def test_every_xlnet_class_has_the_same_structure(cls):
    import transformers

    torch.manual_seed(0)
    model = getattr(transformers, cls)(tiny_config())
    s = XLNetStructure(model)
    assert type(s.base).__name__ == "XLNetModel" and len(s.layers) == 2 and s.total_units("neuron") == 128
