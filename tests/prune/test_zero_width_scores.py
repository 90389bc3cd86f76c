"""Every scorer at every granularity on a model that already lost whole units (transformers#3528).

``zero_width_classifier`` has a layer with no head, a layer with no neuron and a dropped layer. Scores must
cover exactly the units that exist (an empty tensor for a layer with nothing left), and the rule after them
must prune further and cut (``apply_surgery``) into a model that still runs. Keys name the ORIGINAL layers:
0, 1 and 3 (layer 2 is gone).
"""
import pytest
import torch
from conftest import padded_batch, zero_width_classifier

from xlprune_lib.prune import importance, l0
from xlprune_lib.prune.plan import named_weights
from xlprune_lib.prune.select import NM, EncoderBudget, UnitFraction, WeightSparsity
from xlprune_lib.xlnet.masks import current_weight, weight_sparsity
from xlprune_lib.xlnet.structure import ENCODER, XLNetStructure

# N:M as 1:2: layer 3 keeps 42 neurons, which 2:4 refuses (its input size must be a multiple of m)
GRANULARITIES = ("weight", "1:2", "neuron", "head", "layer", ENCODER)


@pytest.fixture
def batches():
    return [padded_batch([6, 3, 8], [0, 1, 1], seed=1), padded_batch([5, 7], [1, 0], seed=2)]


def _inputs(model, method, batches):
    if method == "movement":   # the zero-step movement scores stand in for a fine-tuning run's
        return {"movement": importance.frozen_movement(model, batches)}
    return {"batches": batches} if method in importance.GRADIENT_METHODS else {"seed": 3}


KEPT = (0, 1, 3)      # the original indices of the layers zero_width_classifier keeps


def _check_units(model, scores, kind):
    counts = XLNetStructure(model).unit_counts(kind)
    assert scores.kind == kind and list(scores) == [f"layer.{L}.{kind}s" for L in KEPT]
    assert [tuple(s.shape) for s in scores.per_layer()] == [(n,) for n in counts]
    assert all(bool(torch.isfinite(s).all()) for s in scores.values())


def _score(model, method, granularity, batches):
    inputs = _inputs(model, method, batches)
    return importance.score(model, method, "weight" if NM.parse(granularity) else granularity, **inputs)


def _forward(model, batches):
    with torch.no_grad():
        logits = model(**{k: v for k, v in batches[0].items() if k != "labels"}).logits
    assert logits.shape == (3, 2) and bool(torch.isfinite(logits).all())


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("method", importance.METHODS)
def test_scores_cover_the_units_that_exist(method, granularity, batches):
    model = zero_width_classifier()
    s = XLNetStructure(model)
    assert s.unit_counts("head")[0] == 0 and s.unit_counts("neuron")[1] == 0 and len(s.layers) == 3
    scores = _score(model, method, granularity, batches)

    if granularity in ("weight", "1:2"):
        pairs = XLNetStructure(model).prunable()
        named = named_weights(model)
        assert scores.kind == "weight" and list(scores) == [n for n, _, _ in named]
        assert {int(n.split(".")[1]) for n in scores} == set(KEPT)
        assert all(scores[n].shape == current_weight(m, a).shape for n, m, a in named)
        if granularity == "weight":
            WeightSparsity(0.5)(model, scores).apply_masks(model)
            assert weight_sparsity(pairs) >= 0.5
        else:
            NM(1, 2)(model, scores).apply_masks(model)
            assert NM(1, 2).groups(model)["over_n"] == 0 and weight_sparsity(pairs) >= 0.5
    elif granularity == "layer":
        assert list(scores) == [f"layer.{L}" for L in KEPT]
        assert scores.vector().shape == (3,) and bool(torch.isfinite(scores.vector()).all())
        UnitFraction("layer", 0.34)(model, scores).apply_surgery(model)
        assert len(XLNetStructure(model).layers) == 2
    elif granularity == ENCODER:
        assert scores.kind == ENCODER
        _check_units(model, scores.part("head"), "head")
        _check_units(model, scores.part("neuron"), "neuron")
        before = s.encoder_params()
        EncoderBudget(0.3)(model, scores).apply_surgery(model)
        assert XLNetStructure(model).encoder_params() < before
    else:
        _check_units(model, scores, granularity)
        before = s.unit_counts(granularity)
        UnitFraction(granularity, 0.5)(model, scores).apply_surgery(model)
        after = XLNetStructure(model).unit_counts(granularity)
        assert sum(before) - sum(after) == round(0.5 * sum(before))
        assert all(a <= b for a, b in zip(after, before))   # an empty layer stays empty, nothing is taken twice
    _forward(model, batches)


@pytest.mark.parametrize("kind", ("head", "neuron"))
@pytest.mark.parametrize("method", importance.METHODS)
def test_local_rule_skips_empty_layers(method, kind, batches):
    """``scope="local"`` takes the fraction from every layer; a layer with none left gives none."""
    model = zero_width_classifier()
    before = XLNetStructure(model).unit_counts(kind)
    scores = _score(model, method, kind, batches)
    UnitFraction(kind, 0.5, scope="local")(model, scores).apply_surgery(model)
    after = XLNetStructure(model).unit_counts(kind)
    assert after == [n - round(0.5 * n) for n in before]
    _forward(model, batches)


def test_a_used_tensor_that_is_not_in_the_graph_still_fails(batches):
    """Only tensors without entries are exempt from autograd's "not used in the graph" check."""
    model = zero_width_classifier()
    outside = torch.ones(3, requires_grad=True)
    loss = model(**batches[0]).loss
    with pytest.raises(RuntimeError, match="not have been used"):
        importance._grads(loss, [outside])
    empty = torch.ones(0, requires_grad=True)
    assert importance._grads(model(**batches[0]).loss, [empty])[0].shape == (0,)


def test_reloaded_zero_width_folder_scores(tmp_path, batches):
    """A pruned folder (what ``prune`` of a pruned folder loads) scores its heads by gradient."""
    from xlprune_lib.xlnet.modeling import load_saved, save_model

    save_model(zero_width_classifier(), None, tmp_path / "m")
    model = load_saved(tmp_path / "m")
    scores = importance.score(model, "fisher", "head", batches=batches)
    _check_units(model, scores, "head")
    assert scores["layer.0.heads"].shape == (0,) and float(scores["layer.3.heads"].sum()) > 0


@pytest.mark.parametrize("granularity", l0.GRANULARITIES)
def test_l0_gates_on_zero_width_layers(granularity, batches):
    """L0 gates train (forward, backward) and prune (``prune_with_gates``) a model with empty layers."""
    model = zero_width_classifier()
    gates = l0.attach(model, granularity)
    model.train()
    model(**batches[0]).loss.backward()
    model.eval()
    if granularity != "weight":
        for kind in ("head", "neuron"):
            if kind in granularity:
                assert [g.log_alpha.numel() for g in getattr(gates, f"{kind}s")] == \
                    XLNetStructure(model).unit_counts(kind)
    l0.prune_with_gates(model, target=0.3)
    _forward(model, batches)
