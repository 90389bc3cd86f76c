"""Gates are modules owned by the model: a deep copy is independent, finalizing it leaves the original alone, and
``state_dict`` / ``.to()`` see them (issue 13, kind 4). For the L0 gates and the score gates of chapter 2."""
import copy

import pytest
import torch
from conftest import tiny_config

from xlprune_lib.xlnet import gates
from xlprune_lib.prune import l0

INPUTS = {"input_ids": torch.tensor([[11, 25, 37, 48, 52, 4, 3], [15, 16, 29, 33, 71, 4, 3]])}


@pytest.fixture
def model():
    from transformers import XLNetForSequenceClassification

    torch.manual_seed(0)
    return XLNetForSequenceClassification(tiny_config(num_labels=2, summary_last_dropout=0.0)).eval()


def logits(model):
    model.eval()
    with torch.no_grad():
        return model(**INPUTS).logits.clone()


@pytest.mark.parametrize("granularity", ["weight", "head", "neuron", "head+neuron"])
def test_l0_copy_is_independent_and_finalizes_alone(model, granularity):
    torch.manual_seed(1)
    gs = l0.attach(model, granularity)
    with torch.no_grad():
        for la in gs.all_log_alpha():
            la.copy_(torch.randn_like(la) * 3)
    clone = copy.deepcopy(model)
    before = logits(clone)
    with torch.no_grad():                                   # change the original's gates and weights
        for la in gs.all_log_alpha():
            la.fill_(-10.0)
        model.transformer.layer[0].ff.layer_1.bias.add_(1.0)
    torch.testing.assert_close(logits(clone), before)       # the clone is gated by its own gates
    assert not torch.equal(logits(model), before)
    original = logits(model)
    clone_params = {id(p) for p in clone.parameters()}
    assert not clone_params & {id(p) for p in model.parameters()}
    l0.prune_with_gates(clone)
    torch.testing.assert_close(logits(clone), before, rtol=1e-5, atol=1e-6)
    assert hasattr(model, "l0_gates") and gates.is_gated(model) or granularity == "weight"
    torch.testing.assert_close(logits(model), original)      # finalizing the copy left the original gated
    assert any("log_alpha" in k for k in model.state_dict())
    model.double()
    assert all(la.dtype == torch.float64 for la in model.l0_gates.all_log_alpha())


@pytest.mark.parametrize("granularity", ["head", "neuron", "layer"])
def test_score_gates_copy_with_the_model(model, granularity):
    with gates.unit_gates(model, granularity) as values:
        clone = copy.deepcopy(model)
        before = logits(clone)
        with torch.no_grad():
            for v in values:
                v.zero_()
        torch.testing.assert_close(logits(clone), before)    # the clone's gates are still ones
        assert not torch.equal(logits(model), before)
        assert any(k.endswith(("gate", "original")) or ".gate" in k for k in model.state_dict())
        gates.remove(clone, granularity)
        assert not gates.is_gated(clone) and gates.is_gated(model)
    assert not gates.is_gated(model)
    torch.testing.assert_close(logits(model), before)        # the block left the model as it was


def test_head_gate_equals_masking_the_attention_vector(model):
    """Scaling head n's slice of ``o`` is gating its attention vector: a zero gate equals removing the head."""
    from xlprune_lib.xlnet import surgery

    with gates.unit_gates(model, "head") as values:
        with torch.no_grad():
            values[0][2] = 0.0
        gated = logits(model)
    surgery.prune_heads(model, {0: [2]})
    torch.testing.assert_close(logits(model), gated, rtol=1e-5, atol=1e-6)


def test_tensor_gates_are_buffers_of_the_model(model):
    """Plain-tensor gates (not parameters) still move with the model and are in its state."""
    gates.install(model, "neuron", [torch.full((64,), 0.5), torch.full((64,), 0.5)])
    gates.install(model, "layer", [torch.tensor(1.0), torch.tensor(0.5)])
    keys = [k for k in model.state_dict() if k.endswith(".gate")]
    assert len(keys) == 4, keys
    model.double()
    assert all(model.state_dict()[k].dtype == torch.float64 for k in keys)
