"""Hard-concrete gates, their expected L0 norm and a gated model cut into a pruned one, on tiny random XLNets."""
import copy
import math

import pytest
import torch
from conftest import trainable_classifier

from xlprune_lib.prune import l0
from xlprune_lib.prune.plan import PruningPlan
from xlprune_lib.xlnet import surgery
from xlprune_lib.xlnet.structure import XLNetStructure
from xlprune_lib.config import UserError


@pytest.fixture
def model():
    return trainable_classifier()


def _inputs():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(10, 120, (4, 9), generator=g)
    mask = torch.ones(4, 9, dtype=torch.long)
    mask[0, :3] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_expected_l0_matches_monte_carlo():
    torch.manual_seed(0)
    gate = l0.HardConcrete(400)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.linspace(-4, 4, 400))
    gate.train()
    draws = torch.stack([gate() for _ in range(4000)])
    draws = draws.detach()
    assert float(draws.min()) >= 0 and float(draws.max()) <= 1
    mc = (draws != 0).float().mean(0)
    assert torch.allclose(mc, gate.prob_nonzero().detach(), atol=0.035)
    assert float(gate.expected_l0().detach()) == pytest.approx(float(mc.sum()), rel=0.01)
    # the closed form of eq. 12, written out
    want = 1 / (1 + torch.exp(-(gate.log_alpha - l0.BETA * math.log(-l0.GAMMA / l0.ZETA))))
    torch.testing.assert_close(gate.prob_nonzero(), want)


def test_test_time_gates_are_deterministic_and_in_range():
    gate = l0.HardConcrete(50)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.linspace(-6, 6, 50))
    gate.eval()
    a, b = gate().detach(), gate().detach()
    assert torch.equal(a, b) and float(a.min()) == 0.0 and float(a.max()) == 1.0
    want = (torch.sigmoid(gate.log_alpha) * (l0.ZETA - l0.GAMMA) + l0.GAMMA).clamp(0, 1)
    torch.testing.assert_close(a, want)


def _close_some(gates, fraction=0.4):
    """Push a fraction of every gate group shut (log_alpha very negative) and leave the rest partly open."""
    torch.manual_seed(1)
    with torch.no_grad():
        for la in gates.all_log_alpha():
            la.copy_(torch.randn_like(la))
            la[torch.rand_like(la) < fraction] = -10.0


@pytest.mark.parametrize("granularity", ["weight", "head", "neuron", "head+neuron"])
def test_prune_with_gates_equals_the_gated_model_and_reloads(model, granularity, tmp_path):
    from xlprune_lib.xlnet.structure import XLNetStructure
    from xlprune_lib.xlnet.modeling import load_saved

    gates = l0.attach(model, granularity)
    _close_some(gates)
    model.eval()
    with torch.no_grad():
        gated = model(**_inputs()).logits
    plan = l0.prune_with_gates(model)
    removed = plan.removed()
    assert not hasattr(model, "l0_gates")
    with torch.no_grad():
        torch.testing.assert_close(model(**_inputs()).logits, gated, rtol=1e-5, atol=1e-6)
    if "head" in granularity:
        assert sum(map(len, removed["heads"].values())) > 0
        assert XLNetStructure(model).total_units("head") == 8 - sum(map(len, removed["heads"].values()))
        assert PruningPlan.of(model) == plan
    if granularity == "weight":
        zeros = sum(int((getattr(m, n) == 0).sum()) for m, n in XLNetStructure(model).prunable())
        assert zeros > 0.3 * sum(getattr(m, n).numel() for m, n in XLNetStructure(model).prunable())
    model.save_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(load_saved(tmp_path).eval()(**_inputs()).logits, gated, rtol=1e-5, atol=1e-6)


def test_expected_sparsity_counts_parameters(model):
    gates = l0.attach(copy.deepcopy(model), "head")
    with torch.no_grad():
        for la in gates.all_log_alpha():
            la.fill_(-50.0)                           # every head surely closed
    attn = 2 * 5 * 32 * 32                            # 2 layers, q,k,v,o,r of d_model x n_head x d_head
    assert float(gates.expected_sparsity().detach()) == pytest.approx(attn / gates.total, rel=1e-6)


def test_bad_l0_settings_are_refused(model):
    with pytest.raises(UserError, match="unknown L0 granularity"):
        l0.attach(copy.deepcopy(model), "layer")
    slim = copy.deepcopy(model)
    surgery.prune_heads(slim, {0: [0, 1, 2, 3], 1: [0, 1, 2, 3]})
    with pytest.raises(UserError, match="no attention heads"):
        l0.attach(slim, "head")
