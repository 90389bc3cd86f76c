"""Lower score = pruned first, for signed scores too (movement, Sanh et al. 2020): every ranking routine ranks
the scores as given, never their absolute value (issue 13, kind 1)."""
import pytest
import torch
from conftest import tiny_config

from xlprune_lib.prune import importance, select
from xlprune_lib.prune.plan import PruningPlan, named_weights
from xlprune_lib.prune.scores import Scores
from xlprune_lib.xlnet import masks
from xlprune_lib.xlnet.structure import XLNetStructure
from xlprune_lib.loops.gradual import GradualPruning, install_identity_masks
from xlprune_lib.loops.oneshot import PruneSpec, apply


def _model():
    from transformers import XLNetForSequenceClassification

    torch.manual_seed(0)
    return XLNetForSequenceClassification(tiny_config(num_labels=2)).eval()


@pytest.fixture
def model():
    return _model()


def signed_scores(model, seed=0) -> Scores:
    g = torch.Generator().manual_seed(seed)
    return Scores("weight", {n: torch.randn(masks.current_weight(m, a).shape, generator=g)
                             for n, m, a in named_weights(model)})


def unit_scores(model, kind, tensors) -> Scores:
    """``tensors`` (one per layer) as ``kind`` Scores of ``model``."""
    return Scores(kind, dict(zip(PruningPlan.of(model, weights=False).unit_names(kind), tensors)))


def weight_prune(model, target, scores, scope="global") -> float:
    select.WeightSparsity(target, scope)(model, scores).apply_masks(model)
    return masks.weight_sparsity(XLNetStructure(model).prunable())


def pruned_set(model) -> torch.Tensor:
    return torch.cat([(masks.current_mask(*p) == 0).reshape(-1) for p in XLNetStructure(model).prunable()])


def lowest(values: torch.Tensor, k: int) -> torch.Tensor:
    out = torch.zeros(len(values), dtype=torch.bool)
    out[torch.argsort(values)[:k]] = True
    return out


def test_global_pruning_removes_exactly_the_lowest_signed_scores(model):
    scores = signed_scores(model)
    flat = scores.flat()
    reached = weight_prune(model, 0.3, scores, "global")
    k = round(0.3 * len(flat))
    assert reached == pytest.approx(k / len(flat))
    got = pruned_set(model)
    assert torch.equal(got, lowest(flat, k))                               # the most negative scores went
    assert (got & lowest(flat.abs(), k)).sum() < 0.5 * k                  # not the smallest |score|


def test_local_pruning_removes_the_lowest_signed_scores_of_each_tensor(model):
    scores = signed_scores(model, seed=1)
    weight_prune(model, 0.3, scores, "local")
    for name, module, attr in named_weights(model):
        s = scores[name]
        k = round(0.3 * s.numel())
        assert torch.equal((masks.current_mask(module, attr) == 0).reshape(-1), lowest(s.reshape(-1), k)), name


def test_cumulative_pruning_ranks_only_what_is_left_by_the_raw_score(model):
    weight_prune(model, 0.2, signed_scores(model, seed=2))
    first = pruned_set(model)
    second_scores = signed_scores(model, seed=3)
    weight_prune(model, 0.5, second_scores)
    flat = second_scores.flat()
    flat[first] = float("inf")                          # already gone: not ranked again
    k = round(0.5 * len(flat)) - int(first.sum())
    assert torch.equal(pruned_set(model), first | lowest(flat, k))


def test_movement_weight_pruning_through_oneshot_prunes_the_most_negative(model):
    scores = signed_scores(model, seed=4)
    apply(model, PruneSpec("movement", "weight", 0.4), scores)
    flat = scores.flat()
    assert torch.equal(pruned_set(model), lowest(flat, round(0.4 * len(flat))))


def test_gradual_movement_pruning_prunes_the_most_negative(model):
    """The cubic schedule's mask update (``iterate --schedule cubic --method movement``)."""
    install_identity_masks(model)
    pruner = GradualPruning(0.5, n=1, dt=1, method="movement", model=model)
    scores = signed_scores(model, seed=5)
    assert list(pruner.movement.scores) == list(scores)
    for name, s in scores.items():
        pruner.movement.scores[name].copy_(s)

    class State:
        global_step = 1
    pruner.on_step_end(None, State(), None, model=model)
    flat = scores.flat()
    assert torch.equal(pruned_set(model), lowest(flat, round(0.5 * len(flat))))


def test_structures_ranked_by_signed_summed_scores(model):
    """Head, neuron and layer movement scores are sums of signed weight scores: the most negative go first."""
    scores = signed_scores(model, seed=6)
    heads = importance.unit_sums(model, scores, "head")
    head_scores = importance.score(model, "movement", "head", movement=scores)
    assert all(torch.equal(a, b) for a, b in zip(head_scores.per_layer(), heads))
    removed = select.UnitFraction("head", 0.25)(model, head_scores).removed()["heads"]
    flat = torch.cat(heads)
    want = lowest(flat, 2).nonzero().flatten().tolist()
    assert sorted(int(li) * 4 + h for li, hs in removed.items() for h in hs) == sorted(want)
    layers = torch.stack([s.reshape(()) for s in importance.unit_sums(model, scores, "layer")])
    layer_scores = importance.score(model, "movement", "layer", movement=scores)
    assert torch.equal(layer_scores.vector(), layers)
    assert select.UnitFraction("layer", 0.5)(model, layer_scores).removed()["layers"] == [int(torch.argmin(layers))]
    neurons = importance.unit_sums(model, scores, "neuron")
    plan = select.EncoderBudget(0.3)(model, importance.score(model, "movement", "head+neuron", movement=scores))
    for li, units in plan.removed()["neurons"].items():    # within a layer, the lowest signed scores first
        kept = [u for u in range(len(neurons[int(li)])) if u not in units]
        assert max(neurons[int(li)][units]) <= min(neurons[int(li)][kept])


def test_signed_structure_scores_are_not_renormalized_per_layer(model):
    """A layer norm would rescale -1 in a quiet layer below -100 in a loud one; signed scores rank as given."""
    heads = [torch.tensor([-1.0, -1.0, -1.0, -1.0]), torch.tensor([-100.0, 300.0, 300.0, 300.0])]
    done = apply(model, PruneSpec("movement", "head", 0.125), unit_scores(model, "head", heads))   # one of eight
    assert done["removed"] == {"layers": [], "heads": {"1": [0]}, "neurons": {}}
    assert XLNetStructure(model).unit_counts("head") == [4, 3]
    dense = _model()
    positive = [torch.tensor([1.0, 1.0, 1.0, 1.0]), torch.tensor([100.0, 300.0, 300.0, 300.0])]
    one_head = select.UnitFraction("head", 0.125)
    assert one_head(dense, unit_scores(dense, "head", positive)).removed()["heads"] == {"1": [0]}   # Michel et
    assert one_head(dense, unit_scores(dense, "head", [positive[0], positive[1] * 1e3])).removed()["heads"] == \
        {"1": [0]}                                          # al.'s normalisation: scale-free per layer
    neurons = [torch.linspace(-1, 1, 64), torch.linspace(-50, 50, 64)]
    fresh = XLNetStructure(model)
    both = Scores("head+neuron", {**unit_scores(model, "head", [torch.ones(n) for n in fresh.unit_counts("head")]),
                                  **unit_scores(model, "neuron", neurons)})
    removed = select.EncoderBudget(0.05)(model, both).removed()["neurons"]
    flat = torch.cat(neurons)
    n = sum(map(len, removed.values()))
    assert sorted(int(li) * 64 + u for li, us in removed.items() for u in us) == \
        sorted(lowest(flat, n).nonzero().flatten().tolist())
