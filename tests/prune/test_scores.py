"""Scores (prune/scores.py): every method at every granularity gives one mapping keyed by the plan's names, with
the ORIGINAL layer index; rules take nothing else.

A narrower design would pass some other shape (a tuple of head and neuron lists, tensors keyed by
``(module, name)``, positions instead of original layer indices, a list per layer): each test here fails it.
"""
import pytest
import torch
from conftest import padded_batch

from xlprune_lib.prune import importance
from xlprune_lib.prune.plan import PruningPlan, named_weights
from xlprune_lib.prune.scores import Scores, unit_name
from xlprune_lib.prune.select import NM, EncoderBudget, UnitFraction, WeightSparsity
from xlprune_lib.xlnet.masks import current_weight
from xlprune_lib.xlnet.structure import ENCODER, XLNetStructure

KINDS = ("weight", "head", "neuron", "layer", ENCODER)
PARTS = ("rel_attn.q", "rel_attn.k", "rel_attn.v", "rel_attn.o", "rel_attn.r", "ff.layer_1.weight",
         "ff.layer_2.weight")


@pytest.fixture
def batches():
    return [padded_batch([7, 4, 9], [0, 1, 1], seed=1), padded_batch([5, 8], [1, 0], seed=2)]


def _cut(model):
    """Layer 0 removed, then head 1 and neurons 0..9 of what is left (original layer 1): nothing is where it was."""
    PruningPlan.of(model).without("layer", [0]).apply_surgery(model)
    PruningPlan.of(model).without("head", {0: [1]}).without("neuron", {0: list(range(10))}).apply_surgery(model)
    return model


def _inputs(model, method, batches) -> dict:
    if method == "movement":      # zero-step movement stands in for a fine-tuning run's
        return {"movement": importance.frozen_movement(model, batches)}
    return {"batches": batches} if method in importance.GRADIENT_METHODS else {"seed": 3}


def _expected(model, kind) -> dict:
    """``{key: shape}`` the scores of ``kind`` must have, written out from the model's tensors."""
    plan = PruningPlan.of(model, weights=False)
    s = XLNetStructure(model)
    if kind == "weight":
        names = [f"layer.{L}.{p}" for L in plan.layers for p in PARTS]
        return {n: tuple(current_weight(m, a).shape) for n, (m, a) in zip(names, s.prunable(), strict=True)}
    out = {}
    for part in (("head", "neuron") if kind == ENCODER else (kind,)):
        for L, n in zip(plan.layers, s.unit_counts(part) if part != "layer" else [None] * len(plan.layers)):
            out[f"layer.{L}" if part == "layer" else f"layer.{L}.{part}s"] = () if part == "layer" else (n,)
    return out


@pytest.mark.parametrize("cut", [False, True], ids=["dense", "layer 0 removed"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", importance.METHODS)
def test_keys_kinds_and_shapes_for_every_method_and_granularity(tiny_classifier, batches, method, kind, cut):
    model = _cut(tiny_classifier) if cut else tiny_classifier
    scores = importance.score(model, method, kind, **_inputs(model, method, batches))
    assert isinstance(scores, Scores) and scores.kind == kind
    want = _expected(model, kind)
    assert list(scores) == list(want) == PruningPlan.of(model).unit_names(kind)
    assert {k: tuple(v.shape) for k, v in scores.items()} == want
    assert all(bool(torch.isfinite(v).all()) for v in scores.values())
    if cut:        # original indices: what is left is layer 1, never "layer 0" (its position now)
        assert all(k.startswith("layer.1") for k in scores)
        if kind in ("head", ENCODER):
            assert scores["layer.1.heads"].shape == (3,)
        if kind in ("neuron", ENCODER):
            assert scores["layer.1.neurons"].shape == (54,)
    if kind == ENCODER:
        kept = [1] if cut else [0, 1]
        for part in ("head", "neuron"):
            assert scores.part(part).kind == part
            assert list(scores.part(part)) == [f"layer.{L}.{part}s" for L in kept]
    # the registry is the same thing as the front door
    again = importance.IMPORTANCES[method](kind)(model, importance.ScoreInputs(**_inputs(model, method, batches)))
    assert list(again) == list(scores) and all(torch.equal(again[k], scores[k]) for k in scores)


def test_weight_scores_of_every_weight_function_are_named(tiny_classifier, batches):
    """The module-level weight scorers (no ``pairs=`` any more) give weight Scores keyed like the plan."""
    model = _cut(tiny_classifier)
    names = PruningPlan.of(model).names()
    assert names[0] == "layer.1.rel_attn.q"
    made = [importance.magnitude(model), importance.random_scores(model, 1), importance.zero_movement(model)] + \
        [f(model, batches) for f in (importance.gradient, importance.taylor, importance.frozen_movement,
                                     importance.fisher)]
    for scores in made:
        assert scores.kind == "weight" and list(scores) == names
    skip = importance.layer_skip_loss(model, batches)
    assert skip.kind == "layer" and list(skip) == ["layer.1"] and skip["layer.1"].shape == ()


def test_scores_reject_a_key_of_another_kind():
    t = torch.ones(4)
    for kind, key in [("head", "layer.0.neurons"), ("neuron", "layer.0.heads"), ("weight", "layer.0.heads"),
                      ("weight", "layer.0"), ("layer", "layer.0.rel_attn.q"), ("head", "layer.0"),
                      (ENCODER, "layer.0"), (ENCODER, "layer.0.rel_attn.q"), ("head", "0.heads"),
                      ("head", "layer.x.heads"), ("weight", "transformer.layer.0.rel_attn.q")]:
        with pytest.raises(ValueError, match="not the name"):
            Scores(kind, {key: t})
    with pytest.raises(ValueError, match="not 'channel'"):
        Scores("channel", {})
    both = Scores(ENCODER, {"layer.0.heads": t, "layer.0.neurons": torch.ones(8)})    # both parts: fine
    assert list(both.part("neuron")) == ["layer.0.neurons"]
    with pytest.raises(ValueError):
        both.part("layer")
    with pytest.raises(TypeError):
        both["layer.0.heads"] = t                                                  # read-only


def test_views_keep_kind_names_and_order(tiny_classifier):
    model = tiny_classifier
    w = importance.magnitude(model)
    only = w.only(["layer.1.rel_attn.o", "layer.0.ff.layer_2.weight"])
    assert only.kind == "weight" and list(only) == ["layer.0.ff.layer_2.weight", "layer.1.rel_attn.o"]  # model order
    with pytest.raises(KeyError):
        w.only(["layer.7.rel_attn.q"])
    neg = w.map(lambda t: -t)
    assert list(neg) == list(w) and torch.equal(neg["layer.0.rel_attn.q"], -w["layer.0.rel_attn.q"])
    assert torch.equal(w.flat(), torch.cat([current_weight(m, a).detach().abs().reshape(-1)
                                            for _, m, a in named_weights(model)]))
    heads = Scores("head", {unit_name("head", 0): torch.tensor([3.0, 1.0]), unit_name("head", 2): torch.tensor([2.0])})
    assert [t.tolist() for t in heads.per_layer()] == [[3.0, 1.0], [2.0]]
    assert heads.flat().tolist() == [3.0, 1.0, 2.0]
    layers = Scores("layer", {"layer.0": torch.tensor(2.0), "layer.3": torch.tensor(-1.0)})
    assert layers.vector().tolist() == [2.0, -1.0]
    with pytest.raises(ValueError):
        w.per_layer()
    with pytest.raises(ValueError):
        heads.vector()
    with pytest.raises(ValueError):
        unit_name("weight", 0)


def test_rules_take_scores_of_their_kind_only(tiny_classifier):
    """A dict, a list, a tuple of lists or Scores of another kind: ValueError, never a silent guess."""
    model = tiny_classifier
    heads = importance.score(model, "magnitude", "head")
    neurons = importance.score(model, "magnitude", "neuron")
    layers = importance.score(model, "magnitude", "layer")
    both = importance.score(model, "magnitude", ENCODER)
    weights = importance.magnitude(model)
    wrong = [
        (UnitFraction("head", 0.5), heads.per_layer()),                    # a list per layer
        (UnitFraction("head", 0.5), dict(heads)),                          # a plain dict, right keys
        (UnitFraction("head", 0.5), neurons),
        (UnitFraction("head", 0.5), both),
        (UnitFraction("neuron", 0.5, "local"), heads),
        (UnitFraction("layer", 0.5), layers.vector()),                     # a bare tensor
        (UnitFraction("layer", 0.5), heads),
        (EncoderBudget(0.3), (heads.per_layer(), neurons.per_layer())),    # the old tuple of lists
        (EncoderBudget(0.3), heads),
        (WeightSparsity(0.5), dict(weights)),
        (WeightSparsity(0.5), {(m, a): t for (_, m, a), t in zip(named_weights(model), weights.values())}),
        (WeightSparsity(0.5), heads),
        (WeightSparsity(0.5), list(weights.values())),
        (NM(2, 4), dict(weights)),
        (NM(2, 4), neurons),
    ]
    for rule, scores in wrong:
        with pytest.raises(ValueError, match="needs"):
            rule(model, scores)
    with pytest.raises(ValueError, match="needs"):
        EncoderBudget(0.3).plan_with_share(model, (heads, neurons))
    # and the right kinds go through
    for rule, scores in [(UnitFraction("head", 0.5), heads), (UnitFraction("layer", 0.5), layers),
                         (EncoderBudget(0.3), both), (WeightSparsity(0.5), weights), (NM(2, 4), weights)]:
        assert isinstance(rule(model, scores), PruningPlan)


def test_scores_of_the_same_unit_keep_their_name_across_rounds(tiny_classifier):
    """A unit's key never changes: after layer 0 and a head of layer 1 are cut, layer 1's remaining heads are
    still ``layer.1.heads`` (3 entries now), and a rule reading them removes original units."""
    model = tiny_classifier
    PruningPlan.of(model).without("layer", [0]).apply_surgery(model)
    PruningPlan.of(model).without("head", {0: [0]}).apply_surgery(model)      # original head 0 of layer 1
    scores = Scores("head", {"layer.1.heads": torch.tensor([5.0, 0.0, 7.0])})   # now: heads 1, 2, 3
    plan = UnitFraction("head", 0.5, start=4)(model, scores)                   # one more of the original 4
    assert plan.removed()["heads"] == {"1": [0, 2]}                            # original head 2 went
    assert plan.heads[1] == (1, 3)


def test_rules_read_unit_scores_by_name_not_by_position(tiny_classifier):
    """Scores of a layer the model no longer has, or with another count than the layer has units (scores of the
    model before a round cut it), are refused: read by position they would rank the wrong units. Scores in
    another order are read by name."""
    model = tiny_classifier
    dense_heads = importance.score(model, "magnitude", "head")
    PruningPlan.of(model).without("layer", [0]).apply_surgery(model)
    stale = Scores("head", {"layer.0.heads": dense_heads["layer.0.heads"]})      # the layer that went
    with pytest.raises(ValueError, match="layer.1.heads"):
        UnitFraction("head", 0.25)(model, stale)
    with pytest.raises(ValueError, match="layer.1"):
        UnitFraction("layer", 0.0)(model, Scores("layer", {"layer.0": torch.tensor(1.0)}))
    # the dense model's scores still name layer 1 rightly: the extra key is not read
    by_name = UnitFraction("head", 0.25)(model, dense_heads)
    assert by_name == UnitFraction("head", 0.25)(model, dense_heads.only(["layer.1.heads"]))
    PruningPlan.of(model).without("head", {0: [0]}).apply_surgery(model)
    with pytest.raises(ValueError, match="4 scores for 3 heads"):
        UnitFraction("head", 0.5)(model, dense_heads)
    both = importance.score(model, "magnitude", ENCODER)
    with pytest.raises(ValueError, match="scores for"):
        EncoderBudget(0.2)(model, Scores(ENCODER, {**both, "layer.1.heads": torch.ones(4)}))
    reordered = Scores(ENCODER, {"layer.1.neurons": both["layer.1.neurons"], "layer.1.heads": both["layer.1.heads"]})
    assert EncoderBudget(0.2)(model, reordered) == EncoderBudget(0.2)(model, both)
