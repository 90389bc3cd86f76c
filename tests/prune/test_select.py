"""Threshold rules (prune/select.py): encoder budgets reach their fraction with the right units; rankings."""
import copy

import pytest
import torch

from conftest import tiny_config
from xlprune_lib.config import UserError
from xlprune_lib.prune.importance import score
from xlprune_lib.prune.plan import PruningPlan
from xlprune_lib.prune.select import EncoderBudget, lowest_units
from xlprune_lib.xlnet.gates import unit_gates

from xlprune_lib.xlnet.structure import XLNetStructure


def _scores(model):
    return score(model, "magnitude", "head"), score(model, "magnitude", "neuron")


def test_unit_sizes_match_what_surgery_removes(tiny_classifier):
    model = tiny_classifier
    s = XLNetStructure(model)
    d, dh = model.config.d_model, model.config.d_head
    head, neuron = s.unit_cost(0, "head"), s.unit_cost(0, "neuron")
    assert head == 5 * d * dh + 3 * dh + 2 * dh and neuron == 2 * d + 1
    assert s.unit_cost(0, "head", "prunable") == 5 * d * dh and s.unit_cost(0, "neuron", "prunable") == 2 * d
    before = s.encoder_params()
    PruningPlan.of(model).without("head", {0: [1]}).without("neuron", {1: [0, 5]}).apply_surgery(model)
    assert before - XLNetStructure(model).encoder_params() == head + 2 * neuron


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.8])
def test_reaches_the_requested_encoder_fraction_measured_from_tensors(fraction):
    torch.manual_seed(0)
    from transformers import XLNetForSequenceClassification

    model = XLNetForSequenceClassification(tiny_config(num_labels=2, d_inner=256, n_head=8, d_model=64)).eval()
    s = XLNetStructure(model)
    before, neuron = s.encoder_params(), s.unit_cost(0, "neuron")
    plan, info = EncoderBudget(fraction).plan_with_share(model, _scores(model))
    plan.apply_surgery(model)
    after = XLNetStructure(model).encoder_params()
    # whole units: within one neuron's worth of the request (heads are 20x larger, neurons close the gap)
    assert abs((before - after) / before - fraction) <= neuron / before
    assert before - after == info["params"]
    # attention gives up its share of head parameters, to within half a head
    heads = sum(len(v) for v in plan.removed()["heads"].values())
    assert abs(heads - info["share"] * 16) <= 0.5


def test_removes_the_lowest_scoring_units(tiny_classifier):
    model = tiny_classifier
    heads = [torch.tensor([4.0, 1.0, 3.0, 2.0]), torch.tensor([4.0, 3.0, 2.0, 5.0])]
    neurons = [torch.arange(64, dtype=torch.float) + 1, torch.arange(64, 0, -1, dtype=torch.float)]
    removal = EncoderBudget(0.3)(model, (heads, neurons)).removed()
    # each layer's scores are normalised, so the lowest normalised heads go first: 1/sqrt(30) is the lowest
    assert removal["heads"] and 1 in removal["heads"].get("0", [])
    for li, units in removal["neurons"].items():
        order = torch.argsort(neurons[int(li)]).tolist()
        assert set(units) == set(order[:len(units)])      # within a layer: lowest first, no gaps


def test_pruned_model_equals_the_gated_model(tiny_classifier):
    """Surgery after the plan computes exactly what zeroing those heads' and neurons' outputs computes."""
    model = tiny_classifier
    plan = EncoderBudget(0.5)(model, _scores(model))
    removal = {"head": plan.removed()["heads"], "neuron": plan.removed()["neurons"]}
    ids = torch.tensor([[5, 5, 10, 11, 12, 13, 4, 3], [20, 21, 22, 23, 24, 25, 4, 3]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [1] * 8])
    with torch.no_grad(), unit_gates(model, "head") as hg, unit_gates(model, "neuron") as ng:
        for kind, gates in (("head", hg), ("neuron", ng)):
            for li, units in removal[kind].items():
                gates[int(li)].data[units] = 0
        gated = model(ids, attention_mask=mask).logits
    slim = copy.deepcopy(model)
    plan.apply_surgery(slim)
    with torch.no_grad():
        torch.testing.assert_close(slim(ids, attention_mask=mask).logits, gated, rtol=1e-5, atol=1e-6)
    assert XLNetStructure(slim).total_units("head") < 8


def test_fraction_errors(tiny_classifier):
    with pytest.raises(UserError, match="cannot be removed"):
        EncoderBudget(0.9999)(tiny_classifier, _scores(tiny_classifier))
    with pytest.raises(UserError):
        EncoderBudget(1.5)


def test_oneshot_head_plus_neuron_spec(tiny_classifier):
    """``xlprune prune --granularity head+neuron``: the sparsity is the fraction of encoder parameters removed."""
    from xlprune_lib.loops.oneshot import PruneSpec, apply, score

    spec = PruneSpec("magnitude", "head+neuron", 0.4).check()
    done = apply(tiny_classifier, spec, score(tiny_classifier, spec))
    assert abs(done["encoder_removed"] - 0.4) < 0.01 and done["prunable_sparsity"] > 0.35
    assert done["mask_sparsity"] == 0.0                       # nothing is masked: the units are gone
    with pytest.raises(UserError, match="granularity"):
        PruneSpec("magnitude", "head+layer", 0.4).check()


def test_lowest_units_rank_across_layers():
    heads = [torch.tensor([4.0, 1.0, 3.0, 2.0]), torch.tensor([1.0, 5.0, 6.0, 7.0])]
    assert lowest_units(heads, 0.25, normalize=False) == {0: [1], 1: [0]}
    assert lowest_units(torch.tensor([3.0, 1.0, 2.0]), 0.6) == [1, 2]
    with pytest.raises(UserError):
        lowest_units(heads, 1.0)


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (3, 8)])
def test_n_of_m_counts_from_the_tensors(tiny_classifier, n, m):
    """Any score (here random), any N:M: every group of m consecutive inputs keeps exactly n weights (the
    weights are dense before), so the delivered sparsity is 1 - n/m; ``groups`` counts it independently."""
    from xlprune_lib.prune.importance import score as importance_score
    from xlprune_lib.prune.select import NM
    from xlprune_lib.xlnet.masks import weight_sparsity

    rule = NM.parse(f"{n}:{m}")
    assert (rule.n, rule.m, rule.sparsity) == (n, m, 1 - n / m)
    assert rule.groups(tiny_classifier)["over_n"] > 0             # dense: every group is over n
    rule(tiny_classifier, importance_score(tiny_classifier, "random", "weight")).apply_masks(tiny_classifier)
    counted = rule.groups(tiny_classifier)
    assert counted["over_n"] == 0 and counted["groups"] > 0
    assert weight_sparsity(XLNetStructure(tiny_classifier).prunable()) == pytest.approx(1 - n / m)
    assert NM.parse("head") is None and NM.parse("head+neuron") is None
    with pytest.raises(UserError, match="multiple of m=5"):
        NM(2, 5).groups(tiny_classifier)                  # d_model 32: groups of 5 do not fit
