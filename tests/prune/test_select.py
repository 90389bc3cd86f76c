"""Threshold rules (prune/select.py): encoder budgets reach their fraction with the right units; rankings; the
one cut (``lowest``) and its ties; cumulative unit fractions."""
import copy

import pytest
import torch

from conftest import tiny_config
from xlprune_lib.config import UserError
from xlprune_lib.prune.importance import score
from xlprune_lib.prune.plan import PruningPlan
from xlprune_lib.prune.scores import Scores, unit_name
from xlprune_lib.prune.select import EncoderBudget, UnitFraction, lowest, ranked_units
from xlprune_lib.xlnet.gates import unit_gates

from xlprune_lib.xlnet.structure import XLNetStructure


def _scores(model):
    return score(model, "magnitude", "head+neuron")


def _units(model, kind, tensors) -> Scores:
    """One tensor per kept layer as ``kind`` Scores of ``model``."""
    return Scores(kind, dict(zip(PruningPlan.of(model, weights=False).unit_names(kind), tensors)))


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
    removal = EncoderBudget(0.3)(model, Scores("head+neuron", {**_units(model, "head", heads),
                                                               **_units(model, "neuron", neurons)})).removed()
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
    from xlprune_lib.loops.oneshot import PruneSpec, apply, spec_scores

    spec = PruneSpec("magnitude", "head+neuron", 0.4).check()
    scores = spec_scores(tiny_classifier, spec)
    assert scores.kind == "head+neuron"
    done = apply(tiny_classifier, spec, scores)
    assert abs(done["encoder_removed"] - 0.4) < 0.01 and done["prunable_sparsity"] > 0.35
    assert done["mask_sparsity"] == 0.0                       # nothing is masked: the units are gone
    with pytest.raises(UserError, match="granularity"):
        PruneSpec("magnitude", "head+layer", 0.4).check()


def test_unit_fraction_ranks_across_layers(tiny_classifier):
    heads = [torch.tensor([4.0, 1.0, 3.0, 2.0]), torch.tensor([1.0, 5.0, 6.0, 7.0])]
    assert ranked_units(heads, normalize=False)[:2] == [(0, 1), (1, 0)]
    # normalised per layer (1/sqrt(30) and 1/sqrt(111) the lowest of their layers) the same two go
    plan = UnitFraction("head", 0.25)(tiny_classifier, _units(tiny_classifier, "head", heads))
    assert plan.removed()["heads"] == {"0": [1], "1": [0]}
    torch.manual_seed(0)
    from transformers import XLNetForSequenceClassification

    three = XLNetForSequenceClassification(tiny_config(num_labels=2, n_layer=3)).eval()
    layers = Scores("layer", {f"layer.{L}": torch.tensor(v) for L, v in enumerate([3.0, 1.0, 2.0])})
    assert UnitFraction("layer", 0.6)(three, layers).removed()["layers"] == [1, 2]
    with pytest.raises(UserError):
        UnitFraction("head", 1.0)
    with pytest.raises(UserError, match="every layer"):
        UnitFraction("layer", 0.9)(three, layers)


def test_lowest_is_stable_ties_go_to_the_lower_index():
    """The one top-k of the library: the k lowest, lowest first, equal scores in index order."""
    assert lowest(torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0]), 3).tolist() == [1, 3, 0]
    assert lowest(torch.tensor([2.0, 2.0, 2.0, 2.0]), 2).tolist() == [0, 1]
    assert lowest(torch.tensor([[5.0, 5.0, 1.0, 5.0], [0.0, 0.0, 0.0, 0.0]]), 2).tolist() == [[2, 0], [0, 1]]
    assert lowest(torch.tensor([-1.0, 3.0, -2.0]), 1).tolist() == [2]          # signed: the most negative
    assert lowest(torch.tensor([1.0, 2.0]), 0).shape == (0,)
    big = torch.zeros(10_000)                                  # long enough for a non-stable sort to reorder
    assert torch.equal(lowest(big, 5000), torch.arange(5000))
    with pytest.raises(ValueError):
        lowest(torch.tensor([1.0, 2.0]), 3)


def test_rules_break_ties_by_the_lower_index(tiny_classifier):
    """Equal scores: the lower layer, then the lower unit, then the earlier weight goes (the same cut on every CPU)."""
    from xlprune_lib.prune.importance import zero_movement
    from xlprune_lib.prune.select import WeightSparsity

    model = tiny_classifier
    ones = _units(model, "head", [torch.ones(4), torch.ones(4)])
    assert UnitFraction("head", 0.25)(model, ones).removed()["heads"] == {"0": [0, 1]}
    assert UnitFraction("head", 0.5, "local")(model, ones).removed()["heads"] == {"0": [0, 1], "1": [0, 1]}
    flat = zero_movement(model)                                  # every weight scored 0
    plan = WeightSparsity(0.1)(model, flat)
    removed = torch.cat([~plan.weights[n].reshape(-1) if n in plan.weights else torch.zeros(t.numel(), dtype=bool)
                         for n, t in flat.items()])
    k = round(0.1 * len(removed))
    assert removed[:k].all() and not removed[k:].any()


def _original_scores(kind, table, model) -> Scores:
    """Scores of the units ``model`` still has, read from ``table`` (one tensor per ORIGINAL layer, one entry per
    original unit): the same unit always gets the same score, however many rounds cut before."""
    plan = PruningPlan.of(model, weights=False)
    if kind == "layer":
        return Scores("layer", {unit_name("layer", L): table[L] for L in plan.layers})
    kept = plan.heads if kind == "head" else plan.neurons
    return Scores(kind, {unit_name(kind, L): table[L][list(kept[L])] for L in plan.layers})


@pytest.mark.parametrize("kind, scope, first, final", [
    ("neuron", "global", 0.3, 0.6),       # 38 of 128, then 77: 39 more
    ("head", "global", 0.25, 0.5),
    ("neuron", "local", 0.25, 0.5),       # 16 of 64 per layer, then 32
    ("head", "local", 0.25, 0.5),
    ("layer", "global", 0.25, 0.5),       # 1 of 4 layers, then 2
])
def test_unit_fraction_start_makes_a_second_round_cumulative(kind, scope, first, final):
    """With ``start`` (the original count), a second round removes only what is still missing of ``final``;
    with scores that agree (each unit keeps its score) the two rounds remove exactly what one round at ``final``
    removes. Without ``start`` the fraction would be of what is left (more would go)."""
    from transformers import XLNetForSequenceClassification

    torch.manual_seed(0)
    dense = XLNetForSequenceClassification(tiny_config(num_labels=2, n_layer=4)).eval()
    g = torch.Generator().manual_seed(1)
    # signed scores: ranked as given, so removing units cannot re-weigh a layer (a layer norm would change)
    table = torch.randn(4, generator=g) if kind == "layer" else \
        [torch.randn(4 if kind == "head" else 64, generator=g) for _ in range(4)]
    s = XLNetStructure(dense)
    counts = tuple(s.unit_counts(kind)) if kind != "layer" else (4,)
    start = counts if scope == "local" else sum(counts)

    once = copy.deepcopy(dense)
    one_round = UnitFraction(kind, final, scope)(once, _original_scores(kind, table, once))

    model = copy.deepcopy(dense)
    UnitFraction(kind, first, scope)(model, _original_scores(kind, table, model)).apply_surgery(model)
    after_first = PruningPlan.of(model, weights=False)
    second = UnitFraction(kind, final, scope, start=start)(model, _original_scores(kind, table, model))
    assert second.to_config() == one_round.to_config()

    def gone(plan):
        removed = plan.removed()
        return len(removed["layers"]) if kind == "layer" else sum(map(len, removed[f"{kind}s"].values()))
    if scope == "global":
        assert gone(second) == round(final * start)
        assert gone(second) - gone(after_first) == round(final * start) - round(first * start)
    else:
        assert all(len(v) == round(final * n) for v, n in zip(second.removed()[f"{kind}s"].values(), counts))
    # without start the fraction is of the units left: more than the missing part goes
    fresh = UnitFraction(kind, final, scope)(model, _original_scores(kind, table, model))
    assert gone(fresh) > gone(second)
    # a second round that asks for no more than is gone removes nothing (never a negative count)
    again = UnitFraction(kind, first, scope, start=start)(model, _original_scores(kind, table, model))
    assert again.to_config() == after_first.to_config()


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (3, 8)])
def test_n_of_m_counts_from_the_tensors(tiny_classifier, n, m):
    """Any score (here random), any N:M: every group of m consecutive inputs keeps exactly n weights (the
    weights are dense before), so the delivered sparsity is 1 - n/m; ``groups`` counts it independently."""
    from xlprune_lib.prune.importance import score as importance_score
    from xlprune_lib.prune.select import NM
    from xlprune_lib.xlnet.masks import weight_sparsity

    rule = NM.parse(f"{n}:{m}")
    assert (rule.n, rule.m, rule.pattern_sparsity) == (n, m, 1 - n / m)
    assert rule.groups(tiny_classifier)["over_n"] > 0             # dense: every group is over n
    rule(tiny_classifier, importance_score(tiny_classifier, "random", "weight")).apply_masks(tiny_classifier)
    counted = rule.groups(tiny_classifier)
    assert counted["over_n"] == 0 and counted["groups"] > 0
    assert weight_sparsity(XLNetStructure(tiny_classifier).prunable()) == pytest.approx(1 - n / m)
    assert NM.parse("head") is None and NM.parse("head+neuron") is None
    with pytest.raises(UserError, match="multiple of m=5"):
        NM(2, 5).groups(tiny_classifier)                  # d_model 32: groups of 5 do not fit
