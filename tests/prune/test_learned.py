"""Room for the next methods (issue 33): a trained score whose mask the rule recomputes in every forward pass,
and a rule that gives new values for the weights it keeps."""
import pytest
import torch
from conftest import padded_batch, tiny_config
from transformers import XLNetForSequenceClassification
from torch.nn.utils import parametrize

from xlprune_lib.prune.learned import attach_learned_mask, learned_plan
from xlprune_lib.prune.plan import PruningPlan
from xlprune_lib.prune.scores import Scores
from xlprune_lib.prune.select import UnitFraction
from xlprune_lib.prune import importance
from xlprune_lib.xlnet.modeling import load_saved, save_model

NAME = "layer.0.ff.layer_1.weight"


def BATCH():
    batch = padded_batch([7, 4, 9], [0, 1, 1])
    batch.pop("labels")
    return batch


@pytest.fixture
def model():
    torch.manual_seed(0)
    return XLNetForSequenceClassification(tiny_config(num_labels=2)).eval()


def test_a_masked_weight_comes_back_when_its_score_climbs(model):
    """Straight-through: the masked entry's score still gets a gradient (dL/dS = dL/d(WM) * W), so a few SGD
    steps that reward it lift it over the cut, and the next forward pass uses the weight again."""
    module = model.transformer.layer[0].ff.layer_1
    original = module.weight.detach().clone()
    learned = attach_learned_mask(model, NAME, target=0.5)
    masked = (module.weight == 0) & (original != 0)
    entry = tuple(torch.nonzero(masked)[0].tolist())
    assert module.weight[entry] == 0                                 # pruned at the start (its |w| is low)
    kept_before = int((module.weight != 0).sum())
    # each step lifts the entry's score by lr * |w| (its straight-through gradient): about five steps to the cut
    gap = float((learned.scores[learned.mask()].min() - learned.scores[entry]).detach())
    opt = torch.optim.SGD([learned.scores], lr=gap / (4.5 * abs(float(original[entry]))))
    batch = BATCH()
    came_back_at = None
    for step in range(1, 30):
        opt.zero_grad()
        loss = -(module.weight[entry] * original[entry].sign())     # reward the entry being used
        loss.backward()
        assert learned.scores.grad[entry] == -abs(original[entry])  # dL/dS = dL/d(WM) * W, though masked
        opt.step()
        with torch.no_grad():
            model(**batch)                                          # a forward pass recomputes the mask
        if module.weight[entry] != 0:
            came_back_at = step
            break
    assert came_back_at == 5
    assert torch.equal(module.weight[entry], original[entry])      # the weight kept its value while masked
    assert int((module.weight != 0).sum()) == kept_before            # the rule still keeps the same count
    plan = learned_plan(model, [learned])
    assert bool(plan.weights[NAME][entry])                           # the plan reads the mask as it is now


def test_learned_mask_cuts_as_the_rule_does(model):
    """The learned mask is the weight rule's cut of the scores: the same keep-mask as WeightSparsity local on
    a model whose scores are those values."""
    scores = torch.randn_like(model.transformer.layer[0].ff.layer_1.weight)
    learned = attach_learned_mask(model, NAME, target=0.3, init=scores)
    keep = learned.mask()
    assert abs(1 - keep.float().mean().item() - 0.3) < 1e-2
    threshold = scores[keep].min()
    assert bool((scores[~keep] <= threshold).all())


def test_a_rule_that_rescales_a_kept_neuron_saves_and_reloads(model, tmp_path):
    """Reconstruction: a rule returns a plan with new values for a weight it keeps (one neuron's layer_2 column
    scaled). The plan carries the values, surgery writes them, the folder saves them, reload gives the same
    logits; and they differ from the plan without the values."""
    def rescaling_rule(m, scores):
        plan = UnitFraction("neuron", 0.25)(m, scores)
        L = plan.layers[0]
        column = m.transformer.layer[0].ff.layer_2.weight.detach()
        kept = [j for j, u in enumerate(PruningPlan.of(m).neurons[L]) if u in plan.neurons[L]]
        value = column[:, kept].clone()
        value[:, 0] *= 3.0
        return plan.with_values({f"layer.{L}.ff.layer_2.weight": value})

    scores = importance.score(model, "magnitude", "neuron")
    plain = UnitFraction("neuron", 0.25)(model, scores)
    plan = rescaling_rule(model, scores)
    assert set(plan.values) == {"layer.0.ff.layer_2.weight"} and plan != plain and plan.digest() != plain.digest()
    other = load_saved_copy(model, tmp_path / "plain", plain)
    plan.apply_surgery(model)
    assert torch.allclose(model.transformer.layer[0].ff.layer_2.weight, plan.values["layer.0.ff.layer_2.weight"])
    batch = BATCH()
    with torch.no_grad():
        logits = model(**batch).logits
    save_model(model, None, tmp_path / "rescaled")
    reloaded = load_saved(tmp_path / "rescaled").eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, logits, atol=1e-6)
        assert not torch.equal(other(**batch).logits, logits)
    column = reloaded.transformer.layer[0].ff.layer_2.weight[:, 0]
    assert torch.allclose(column, 3.0 * other.transformer.layer[0].ff.layer_2.weight[:, 0])


def load_saved_copy(model, folder, plan):
    import copy
    twin = copy.deepcopy(model)
    plan.apply_surgery(twin)
    return twin.eval()


def test_values_on_a_masked_model_land_in_the_kept_entries(model):
    """apply_masks writes the plan's values into the weights it keeps (w_orig when a mask is live)."""
    scores = importance.score(model, "magnitude", "neuron")
    plan = UnitFraction("neuron", 0.5)(model, scores)
    L = plan.layers[1]
    name = f"layer.{L}.ff.layer_1.weight"
    value = torch.full((len(plan.neurons[L]), model.config.d_model), 0.5)
    plan.with_values({name: value}).apply_masks(model)
    w = model.transformer.layer[1].ff.layer_1.weight
    kept = torch.tensor(plan.neurons[L])
    assert torch.all(w[kept] == 0.5)
    gone = torch.tensor(sorted(set(range(model.config.d_inner)) - set(plan.neurons[L])))
    assert torch.all(w[gone] == 0)


def test_a_value_of_the_wrong_shape_is_refused_before_anything_changes(model):
    """Checked first: a plan that removes neurons and carries a value of the wrong shape leaves the model whole
    (surgery would otherwise have run before the value was written)."""
    import copy
    before = copy.deepcopy(model.state_dict())
    plan = UnitFraction("neuron", 0.5)(model, importance.score(model, "magnitude", "neuron"))
    bad = plan.with_values({NAME: torch.zeros(2, 2)})
    for apply in (bad.apply_surgery, bad.apply_masks):
        with pytest.raises(ValueError, match="shape"):
            apply(model)
        assert model.state_dict().keys() == before.keys()
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert isinstance(importance.score(model, "magnitude"), Scores)
    assert not parametrize.is_parametrized(model.transformer.layer[0].ff.layer_1)
