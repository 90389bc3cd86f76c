"""Structured pruning to a fraction of the encoder's parameters: exact counts, the right units, equivalence."""
import copy

import pytest
import torch

from conftest import tiny_config
from xlprune_lib.config import UserError
from xlprune_lib.prune.importance import structure_scores
from xlprune_lib.prune.structured import (apply_plan, encoder_params, head_params, neuron_params, plan, prune_encoder)
from xlprune_lib.xlnet.surgery import layer_shapes, xlnet_layers


def _scores(model):
    return structure_scores(model, "magnitude", "head"), structure_scores(model, "magnitude", "neuron")


def test_unit_sizes_match_what_surgery_removes(tiny_classifier):
    model = tiny_classifier
    layer = xlnet_layers(model)[0]
    d, dh = model.config.d_model, model.config.d_head
    assert head_params(layer) == 5 * d * dh + 3 * dh + 2 * dh
    assert neuron_params(layer) == 2 * d + 1
    before = encoder_params(model)
    apply_plan(model, {"head": {0: [1]}, "neuron": {1: [0, 5]}})
    assert before - encoder_params(model) == head_params(layer) + 2 * neuron_params(layer)


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.8])
def test_reaches_the_requested_encoder_fraction_measured_from_tensors(fraction):
    torch.manual_seed(0)
    from transformers import XLNetForSequenceClassification

    model = XLNetForSequenceClassification(tiny_config(num_labels=2, d_inner=256, n_head=8, d_model=64)).eval()
    done = prune_encoder(model, *_scores(model), fraction)
    # whole units: within one neuron's worth of the request (heads are 20x larger, neurons close the gap)
    slack = neuron_params(xlnet_layers(model)[0]) / done["encoder_params_before"]
    assert abs(done["encoder_removed"] - fraction) <= slack
    assert done["encoder_params_after"] == encoder_params(model)
    # attention gives up its share of head parameters, to within half a head
    heads = sum(len(v) for v in done["removed"]["head"].values())
    assert abs(heads - done["share"] * 16) <= 0.5


def test_removes_the_lowest_scoring_units(tiny_classifier):
    model = tiny_classifier
    heads = [torch.tensor([4.0, 1.0, 3.0, 2.0]), torch.tensor([4.0, 3.0, 2.0, 5.0])]
    neurons = [torch.arange(64, dtype=torch.float) + 1, torch.arange(64, 0, -1, dtype=torch.float)]
    removal = plan(model, heads, neurons, 0.3)
    # each layer's scores are normalised, so the lowest normalised heads go first: 1/sqrt(30) is the lowest
    assert removal["head"] and 1 in removal["head"].get(0, [])
    for li, units in removal["neuron"].items():
        order = torch.argsort(neurons[li]).tolist()
        assert set(units) == set(order[:len(units)])      # within a layer: lowest first, no gaps


def test_pruned_model_equals_the_gated_model(tiny_classifier):
    """Surgery after the plan computes exactly what zeroing those heads' and neurons' outputs computes."""
    from xlprune_lib.prune.importance import unit_gates

    model = tiny_classifier
    removal = plan(model, *_scores(model), 0.5)
    ids = torch.tensor([[5, 5, 10, 11, 12, 13, 4, 3], [20, 21, 22, 23, 24, 25, 4, 3]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [1] * 8])
    with torch.no_grad(), unit_gates(model, "head") as hg, unit_gates(model, "neuron") as ng:
        for kind, gates in (("head", hg), ("neuron", ng)):
            for li, units in removal[kind].items():
                gates[li].data[units] = 0
        gated = model(ids, attention_mask=mask).logits
    slim = copy.deepcopy(model)
    apply_plan(slim, removal)
    with torch.no_grad():
        torch.testing.assert_close(slim(ids, attention_mask=mask).logits, gated, rtol=1e-5, atol=1e-6)
    assert sum(s["heads"] for s in layer_shapes(slim)) < 8


def test_fraction_errors(tiny_classifier):
    with pytest.raises(UserError, match="cannot be removed"):
        plan(tiny_classifier, *_scores(tiny_classifier), 0.9999)
    with pytest.raises(UserError):
        plan(tiny_classifier, *_scores(tiny_classifier), 1.5)


def test_oneshot_head_plus_neuron_spec(tiny_classifier):
    """``xlprune prune --granularity head+neuron``: the sparsity is the fraction of encoder parameters removed."""
    from xlprune_lib.loops.oneshot import PruneSpec, apply, score

    spec = PruneSpec("magnitude", "head+neuron", 0.4).check()
    done = apply(tiny_classifier, spec, score(tiny_classifier, spec))
    assert abs(done["encoder_removed"] - 0.4) < 0.01 and done["prunable_sparsity"] > 0.35
    assert done["mask_sparsity"] == 0.0                       # nothing is masked: the units are gone
    with pytest.raises(UserError, match="granularity"):
        PruneSpec("magnitude", "head+layer", 0.4).check()
