"""Importance scores on tiny random XLNets, checked against independent computations."""
import pytest
import torch
from conftest import close_to_scale as _close
from conftest import padded_batch as _batch
from conftest import tiny_config

from xlprune_lib.prune import importance
from xlprune_lib.prune.plan import PruningPlan, named_weights
from xlprune_lib.prune.select import WeightSparsity
from xlprune_lib.xlnet import surgery
from xlprune_lib.xlnet.gates import unit_gates
from xlprune_lib.xlnet.structure import XLNetStructure
from xlprune_lib.config import UserError


@pytest.fixture
def batches():
    return [_batch([7, 4, 9], [0, 1, 1], seed=1), _batch([5, 8], [1, 0], seed=2)]


@pytest.fixture
def model():
    from transformers import XLNetForSequenceClassification

    torch.manual_seed(0)
    return XLNetForSequenceClassification(tiny_config(num_labels=2))


def _examples(batches):
    """Every example alone, keeping the padding it has in its batch (the library strips it)."""
    for b in batches:
        for i in range(len(b["labels"])):
            yield {k: v[i:i + 1] for k, v in b.items()}


def test_fisher_matches_brute_force_per_example(model, batches):
    """Per-example Fisher == each padded row's own forward/backward, squared and averaged."""
    named = named_weights(model)
    got = importance.fisher(model, batches)
    assert got.kind == "weight" and list(got) == [n for n, _, _ in named]
    params = [getattr(m, a) for _, m, a in named]
    want = [torch.zeros_like(p) for p in params]
    examples = list(_examples(batches))
    model.eval()
    for ex in examples:
        logp = torch.log_softmax(model(input_ids=ex["input_ids"], attention_mask=ex["attention_mask"]).logits, -1)
        for w, g in zip(want, torch.autograd.grad(logp[0, ex["labels"][0]], params)):
            w += g ** 2 / len(examples)
    for (name, _, _), w in zip(named, want):
        _close(got[name], w)
    assert all(float(v.sum()) > 0 for v in got.values())


def test_fisher_is_not_the_squared_batch_gradient(model, batches):
    """The per-example estimator differs from squaring the mean gradient of each batch (the cheap shortcut)."""
    name, module, attr = named_weights(model)[0]
    per_example = importance.fisher(model, batches)[name]
    squared_mean = importance._batch_means(model, batches, [getattr(module, attr)], lambda i, g: g ** 2)[0]
    assert not torch.allclose(per_example, squared_mean, rtol=1e-2, atol=0)


def test_gradient_and_taylor_match_autograd(model, batches):
    named = named_weights(model)
    grad, tay, mov = (f(model, batches) for f in (importance.gradient, importance.taylor,
                                                   importance.frozen_movement))
    params = [getattr(m, a) for _, m, a in named]
    model.eval()
    gs = [torch.autograd.grad(model(**b).loss, params) for b in batches]
    for k, ((name, _, _), p) in enumerate(zip(named, params)):
        g = [x[k] for x in gs]
        _close(grad[name], (g[0].abs() + g[1].abs()) / 2)
        _close(tay[name], ((p * g[0]).abs() + (p * g[1]).abs()) / 2)
        _close(mov[name], -p.detach() * (g[0] + g[1]) / 2)


def test_scores_of_a_masked_model_use_the_masked_weights(model, batches):
    WeightSparsity(0.5)(model, importance.magnitude(model)).apply_masks(model)
    modules = {name: (m, a) for name, m, a in named_weights(model)}
    for scores in (importance.magnitude(model), importance.taylor(model, batches)):
        assert list(scores) == list(modules)
        for name, s in scores.items():
            m, a = modules[name]
            assert torch.all(s[getattr(m, f"{a}_mask") == 0] == 0)


def test_head_gate_gradient_is_the_taylor_sum_of_the_output_projection(model, batches):
    """d L / d xi_h at xi = 1 equals sum over head h's slice of W_o of w * dL/dw (chain rule)."""
    got = importance.gate_gradient(model, batches, "head")
    model.eval()
    want = []
    for layer in model.transformer.layer:
        o = layer.rel_attn.o
        per_batch = [(o * torch.autograd.grad(model(**b).loss, o)[0]).sum(dim=(0, 2)).abs() for b in batches]
        want.append(sum(per_batch) / len(per_batch))
    for g, w in zip(got, want):
        _close(g, w)
    assert [g.shape[0] for g in got] == [4, 4]


def test_neuron_gate_is_the_activation_taylor_score(model, batches):
    """d L / d xi_j = sum over tokens of a_j * dL/da_j (Molchanov et al. 2017): check via layer_2's columns."""
    got = importance.gate_gradient(model, batches, "neuron")
    model.eval()
    for li, layer in enumerate(model.transformer.layer):
        w2 = layer.ff.layer_2.weight
        per_batch = [(w2 * torch.autograd.grad(model(**b).loss, w2)[0]).sum(0).abs() for b in batches]
        _close(got[li], sum(per_batch) / 2)


def test_zero_gates_equal_surgery(model, batches):
    """A head / neuron / layer whose gate is 0 computes what the model without it computes."""
    import copy

    b = {k: v for k, v in batches[0].items() if k != "labels"}
    model.eval()
    cases = [("head", {0: [1, 3]}, surgery.prune_heads), ("neuron", {1: list(range(0, 64, 2))}, surgery.prune_neurons),
             ("layer", [0], surgery.drop_layers)]
    for granularity, remove, cut in cases:
        with unit_gates(model, granularity) as gates, torch.no_grad():
            for li, idx in (remove.items() if isinstance(remove, dict) else [(i, None) for i in remove]):
                gates[li][idx if idx is not None else ()] = 0.0
            gated = model(**b).logits
        slim = copy.deepcopy(model)
        cut(slim, remove)
        with torch.no_grad():
            torch.testing.assert_close(gated, slim(**b).logits, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the gates are gone on exit
        torch.testing.assert_close(model(**b).logits, copy.deepcopy(model)(**b).logits)
    assert "post_attention" not in vars(model.transformer.layer[0].rel_attn)


def test_layer_skip_loss_and_its_first_order_estimate(model, batches):
    import copy

    skip = importance.layer_skip_loss(model, batches)
    assert skip.kind == "layer" and list(skip) == ["layer.0", "layer.1"]
    base = importance.mean_loss(model, batches)
    for li in range(2):
        slim = copy.deepcopy(model)
        surgery.drop_layers(slim, [li])
        assert float(skip[f"layer.{li}"]) == pytest.approx(importance.mean_loss(slim, batches) - base, abs=1e-6)
    first_order = importance.score(model, "taylor", "layer", batches).vector()
    assert first_order.shape == (2,) and torch.all(first_order >= 0)


def test_structure_scores_and_selection(model, batches):
    mov = importance.frozen_movement(model, batches)
    for method in importance.METHODS:
        heads = importance.score(model, method, "head", batches, movement=mov)
        neurons = importance.score(model, method, "neuron", batches, movement=mov)
        assert [h.shape for h in heads.per_layer()] == [torch.Size([4])] * 2
        assert [n.shape for n in neurons.per_layer()] == [torch.Size([64])] * 2
    with pytest.raises(UserError, match="unknown method"):
        importance.score(model, "entropy", "weight", batches)
    with pytest.raises(UserError, match="need batches"):
        importance.score(model, "fisher", "weight", None)


def test_random_scores_are_seeded_and_cover_every_granularity(tiny_classifier):
    """The random control (Blalock et al. 2020): same seed, same scores; another seed, other scores; every
    granularity has one score per unit, and one-shot pruning by it removes what was asked."""
    from xlprune_lib.prune import importance
    from xlprune_lib.xlnet import masks

    model = tiny_classifier
    a = importance.score(model, "random", "weight", seed=3)
    b = importance.score(model, "random", "weight", seed=3)
    c = importance.score(model, "random", "weight", seed=4)
    assert list(a) == PruningPlan.of(model).names()
    assert all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(a[k], c[k]) for k in a)
    for name, module, attr in named_weights(model):
        assert a[name].shape == masks.current_weight(module, attr).shape
    for granularity in ("head", "neuron"):
        s = importance.score(model, "random", granularity, seed=1)
        assert [len(x) for x in s.per_layer()] == [int(n) for n in XLNetStructure(model).unit_counts(granularity)]
    layers = importance.score(model, "random", "layer", seed=1)
    assert layers.vector().shape == (len(XLNetStructure(model).layers),)
