"""PruningPlan: one record of what survives, in original indices; it masks, cuts, saves and reloads."""
import json

import pytest
import torch

from xlprune_lib.prune import importance, select
from xlprune_lib.prune.scores import Scores
from xlprune_lib.xlnet.masks import current_mask, current_weight, make_permanent
from xlprune_lib.prune.plan import PruningPlan, named_weights
from xlprune_lib.xlnet.modeling import load_saved, save_model
from xlprune_lib.xlnet.structure import XLNetStructure


def _logits(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 120, (3, 9), generator=g)
    tt = torch.zeros_like(ids)
    tt[:, 5:] = 1
    with torch.no_grad():
        return model.eval()(input_ids=ids, token_type_ids=tt).logits


def _clone(model):
    from xlprune_lib.xlnet.masks import copy_model

    return copy_model(model)


def _magnitude_masks(model, target, scope="global"):
    select.WeightSparsity(target, scope)(model, importance.magnitude(model)).apply_masks(model)


def _heads(model, tensors) -> Scores:
    return Scores("head", dict(zip(PruningPlan.of(model, weights=False).unit_names("head"), tensors)))


def test_dense_plan_of_an_unpruned_model(tiny_classifier):
    plan = PruningPlan.of(tiny_classifier)
    assert plan == PruningPlan.dense(2, 4, 64) and plan.is_dense() and not plan.weights
    assert plan.removed() == {"layers": [], "heads": {}, "neurons": {}, "weights": {}}
    assert plan.names()[:2] == ["layer.0.rel_attn.q", "layer.0.rel_attn.k"] and len(plan.names()) == 14


def test_two_rounds_of_head_pruning_keep_original_indices_through_save_and_reload(tiny_classifier, tmp_path):
    """Round 1 removes original head 1 of layer 0; round 2 removes position 1 of layer 0 *as it is now*, which
    is original head 2. The saved config records [0, 3]; reloading cuts exactly those heads and computes the
    same logits. A plan that kept widths only would reload heads [0, 1]."""
    model = tiny_classifier
    PruningPlan.of(model).without("head", {0: [1]}).apply_surgery(model)
    assert PruningPlan.of(model).heads[0] == (0, 2, 3)
    PruningPlan.of(model).without("head", {0: [1], 1: [0, 3]}).apply_surgery(model)
    plan = PruningPlan.of(model)
    assert plan.heads == ((0, 3), (1, 2)) and plan.removed()["heads"] == {"0": [1, 2], "1": [0, 3]}
    save_model(model, None, tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["pruning_plan"]["heads"] == [[0, 3], [1, 2]] and saved["heads_per_layer"] == [2, 2]
    loaded = load_saved(tmp_path / "m")
    assert PruningPlan.of(loaded) == plan
    assert torch.allclose(_logits(loaded), _logits(model), atol=1e-6)


def test_reload_cuts_the_recorded_units_not_the_first_ones(tiny_classifier, tmp_path):
    """Build the reference by hand: the original model with heads 1, 2 of layer 0 zeroed at ``o`` computes what
    the reloaded pruned model computes."""
    reference = _clone(tiny_classifier)
    with torch.no_grad():
        reference.transformer.layer[0].rel_attn.o[:, [1, 2], :] = 0
        reference.transformer.layer[1].ff.layer_2.weight[:, [5, 60]] = 0
    plan = PruningPlan.of(tiny_classifier).without("head", {0: [1, 2]}).without("neuron", {1: [5, 60]})
    plan.apply_surgery(tiny_classifier)
    save_model(tiny_classifier, None, tmp_path / "m")
    loaded = load_saved(tmp_path / "m")
    assert torch.allclose(_logits(loaded), _logits(reference), atol=1e-5)
    assert loaded.config.pruning_plan["neurons"][1] == [j for j in range(64) if j not in (5, 60)]


def test_layers_keep_original_indices_and_weight_masks_follow_the_units(tiny_classifier):
    model = _clone(tiny_classifier)
    _magnitude_masks(model, 0.5)                            # live masks on every prunable weight
    plan = PruningPlan.of(model)
    assert set(plan.weights) == set(plan.names())
    smaller = plan.without("head", {1: [0]}).without("layer", [0])
    assert smaller.layers == (1,) and smaller.heads[1] == (1, 2, 3)
    assert smaller.weights["layer.1.rel_attn.q"].shape == (32, 3, 8)
    assert torch.equal(smaller.weights["layer.1.rel_attn.q"], plan.weights["layer.1.rel_attn.q"][:, 1:, :])
    smaller.apply_surgery(model)
    assert PruningPlan.of(model) == smaller
    assert model.config.n_layer == 1 and model.config.pruning_plan["layers"] == [1]


def test_apply_masks_computes_what_apply_surgery_computes(tiny_classifier):
    plan = PruningPlan.of(tiny_classifier).without("head", {0: [0, 3]}).without("neuron", {1: list(range(10))})
    masked, cut = _clone(tiny_classifier), _clone(tiny_classifier)
    plan.apply_masks(masked)
    plan.apply_surgery(cut)
    assert torch.allclose(_logits(masked), _logits(cut), atol=1e-5)
    with pytest.raises(ValueError, match="apply_surgery"):
        plan.without("layer", [1]).apply_masks(_clone(tiny_classifier))


def _expected_keep(model, scores, target, scope):
    """The masks the weight rule must give, written out: every entry the forward pass already zeroes stays
    pruned, then the lowest ``scores`` of the others go until ``round(target * n)`` of each group are pruned."""
    named = named_weights(model)
    gone = {n: current_weight(m, a).detach() == 0 for n, m, a in named}
    groups = [[n for n, _, _ in named]] if scope == "global" else [[n] for n, _, _ in named]
    out = {}
    for group in groups:
        flat_gone = torch.cat([gone[n].reshape(-1) for n in group])
        flat_score = torch.cat([scores[n].reshape(-1) for n in group]).clone()
        flat_score[flat_gone] = float("-inf")
        keep = torch.ones(len(flat_score), dtype=torch.bool)
        keep[torch.argsort(flat_score)[:round(target * len(flat_score))]] = False
        start = 0
        for n in group:
            out[n] = keep[start:start + gone[n].numel()].view_as(gone[n])
            start += gone[n].numel()
    return out


def test_weight_rule_is_cumulative_exact_zeros_first_and_leaves_the_model_alone(tiny_classifier):
    """WeightSparsity on top of earlier live masks and of zeros made permanent: earlier pruning stays pruned,
    exact zeros go first whatever their score (random scores here, which would keep many of them), the rest by
    score; the same masks whether the earlier pruning is live or written in. The model is not changed until
    the plan is applied."""
    for scope in ("global", "local"):
        written, live = _clone(tiny_classifier), _clone(tiny_classifier)
        _magnitude_masks(written, 0.3)
        make_permanent(written)                                     # the first round's zeros in the weights
        _magnitude_masks(live, 0.3)                                 # the same round, its masks live
        second = importance.random_scores(written, seed=2)
        zeros = {n: current_weight(m, a).detach() == 0 for n, m, a in named_weights(written)}
        plan = select.WeightSparsity(0.5, scope)(written, second)
        assert plan == select.WeightSparsity(0.5, scope)(live, second)
        assert all(not bool(plan.weights[n][z].any()) for n, z in zeros.items())   # every exact zero went
        for name, keep in _expected_keep(written, second, 0.5, scope).items():
            assert torch.equal(plan.weights[name], keep), name
        plan.apply_masks(written)
        select.WeightSparsity(0.5, scope)(live, second).apply_masks(live)
        random = importance.random_scores(written, seed=3)
        before = PruningPlan.of(written)
        plan = select.WeightSparsity(0.8, scope)(written, random)
        assert PruningPlan.of(written) == before                    # not changed
        assert plan == select.WeightSparsity(0.8, scope)(live, random)
        want = _expected_keep(written, random, 0.8, scope)
        assert set(plan.weights) == set(want)
        for name, keep in want.items():
            assert torch.equal(plan.weights[name], keep), name
            assert not bool((plan.weights[name] & ~before.weights[name]).any())   # earlier pruning stays
        plan.apply_masks(written)
        assert PruningPlan.of(written) == plan


def test_weight_rule_prunes_only_the_tensors_it_is_given_scores_for(tiny_classifier):
    """Scores restricted with ``.only`` (chapter 2's per-layer scan): the target is of those tensors alone, the
    others are left whole; earlier masks on them stay as they are."""
    model = tiny_classifier
    _magnitude_masks(model, 0.2)
    before = {n: current_mask(m, a).clone() for n, m, a in named_weights(model)}
    chosen = ["layer.1.rel_attn.q", "layer.1.ff.layer_1.weight"]
    plan = select.WeightSparsity(0.6)(model, importance.magnitude(model).only(chosen))
    plan.apply_masks(model)
    after = {n: current_mask(m, a) for n, m, a in named_weights(model)}
    total = sum(after[n].numel() for n in chosen)
    assert sum(int((after[n] == 0).sum()) for n in chosen) == round(0.6 * total)
    for n in set(before) - set(chosen):
        assert torch.equal(after[n], before[n]), n


def test_plan_digest_and_equality_see_every_difference(tiny_classifier):
    plan = PruningPlan.of(tiny_classifier)
    a = plan.without("neuron", {0: [3]})
    assert a.digest() == plan.without("neuron", {0: [3]}).digest() != plan.digest()
    w = select.WeightSparsity(0.5)(tiny_classifier, importance.magnitude(tiny_classifier))
    flipped = dict(w.weights)
    name = next(iter(flipped))
    m = flipped[name].clone()
    m.view(-1)[0] = ~m.view(-1)[0]
    flipped[name] = m
    assert w.digest() != w.with_weights(flipped).digest() and w != w.with_weights(flipped)


def test_plan_records_and_validation():
    plan = PruningPlan.dense(3, 4, 8).without("layer", [1]).without("head", {1: [2]})
    assert PruningPlan.from_config(json.loads(json.dumps(plan.to_config()))) == plan
    assert plan.to_config()["layers"] == [0, 2] and plan.heads[2] == (0, 1, 3)
    with pytest.raises(ValueError, match="out of range"):
        PruningPlan(2, 4, 8, (0, 1), ((0, 4), (0,)), ((0,), (0,)))
    with pytest.raises(ValueError, match="out of range"):
        plan.without("head", {2: [0]})                  # only two layers are kept
    with pytest.raises(ValueError, match="at least one layer"):
        plan.without("layer", [0, 1])
    with pytest.raises(ValueError, match="malformed"):
        PruningPlan.from_config({"layers": [0]})


def test_unit_rules_and_encoder_budget_produce_plans(tiny_classifier):
    s = XLNetStructure(tiny_classifier)
    heads = [torch.tensor([4.0, 1.0, 3.0, 2.0]), torch.tensor([1.0, 5.0, 6.0, 7.0])]
    plan = select.UnitFraction("head", 0.25)(tiny_classifier, _heads(tiny_classifier, heads))
    assert plan.removed()["heads"] == {"0": [1], "1": [0]}       # the two lowest once normalised per layer
    assert sum(plan.widths()[0]) == 6
    local = select.UnitFraction("head", 0.25, "local")(tiny_classifier, _heads(tiny_classifier, heads))
    assert local.removed()["heads"] == {"0": [1], "1": [0]}
    neurons = [torch.arange(64.0), torch.arange(64.0).flip(0)]
    before = s.encoder_params()
    both = Scores("head+neuron", {**_heads(tiny_classifier, heads), "layer.0.neurons": neurons[0],
                                  "layer.1.neurons": neurons[1]})
    budget, info = select.EncoderBudget(0.3).plan_with_share(tiny_classifier, both)
    budget.apply_surgery(tiny_classifier)
    after = XLNetStructure(tiny_classifier).encoder_params()
    assert before - after == info["params"] and abs((before - after) / before - 0.3) < 0.02


def test_n_of_m_keeps_n_in_every_group_of_each_products_inputs(tiny_classifier):
    """Every prunable matrix, written as the ``(out, in)`` weight of ``F.linear`` (checked against the einsum or
    the module XLNet computes with), keeps exactly 2 of every 4 consecutive inputs in every row: the layout
    ``torch.sparse.to_sparse_semi_structured`` needs. (Grouping ``layer_1`` along d_inner or ``o`` along d_model,
    its outputs, gives 2:4 masks that no sparse kernel can use.)"""
    from torch.nn import functional as F

    from xlprune_lib.xlnet.structure import XLNetStructure

    model = tiny_classifier
    plan = select.NM(2, 4)(model, importance.magnitude(model))
    assert set(plan.weights) == set(plan.names())
    layer = XLNetStructure(model).layers[0]
    x, heads = torch.randn(5, 3, 32), torch.randn(5, 3, 4, 8)
    products = {"rel_attn.q": lambda w: (torch.einsum("ibh,hnd->ibnd", x, w), x),
                "rel_attn.o": lambda w: (torch.einsum("ibnd,hnd->ibh", heads, w), heads.flatten(-2))}
    for suffix, product in products.items():
        weight = getattr(layer.rel_attn, suffix.split(".")[1])
        want, inputs = product(weight)
        got = F.linear(inputs, XLNetStructure.linear_weight(suffix, weight))
        torch.testing.assert_close(got.reshape(want.shape), want)
    ff = layer.ff.layer_1
    torch.testing.assert_close(F.linear(x, XLNetStructure.linear_weight("ff.layer_1.weight", ff.weight), ff.bias),
                               ff(x))
    for name, (module, attr) in zip(plan.names(), XLNetStructure(model).prunable()):
        keep = XLNetStructure.linear_weight(name, plan.weights[name])
        assert keep.shape[0] * keep.shape[1] == getattr(module, attr).numel()
        assert bool((keep.reshape(keep.shape[0], -1, 4).sum(-1) == 2).all()), name
    with pytest.raises(Exception, match="0 < n < m"):
        select.NM(4, 4)
    with pytest.raises(ValueError, match="not a prunable XLNet matrix"):
        XLNetStructure.input_axis("layer.0.rel_attn.r_w_bias")


def test_a_weights_only_plan_keeps_the_plain_class(tiny_classifier):
    """Masking weights removes no unit: the model stays an XLNetForSequenceClassification with no plan in its
    config, as before plans existed; removing one head makes it an xlnet-pruned model."""
    from transformers import XLNetForSequenceClassification

    plan = select.WeightSparsity(0.5)(tiny_classifier, importance.magnitude(tiny_classifier))
    assert plan.keeps_every_unit() and not plan.is_dense()
    plan.apply_surgery(tiny_classifier)
    assert type(tiny_classifier) is XLNetForSequenceClassification
    assert getattr(tiny_classifier.config, "pruning_plan", None) is None
    PruningPlan.of(tiny_classifier).without("head", {0: [0]}).apply_surgery(tiny_classifier)
    assert tiny_classifier.config.model_type == "xlnet-pruned"
