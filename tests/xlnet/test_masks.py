"""Masks through torch.nn.utils.prune: counted sparsity, local / global, cumulative, survive training.

The masks are chosen by ``select.WeightSparsity`` and attached by ``PruningPlan.apply_masks`` (the one way a
weight sparsity is reached); this file checks what the masks then do on the model."""
import pytest
import torch
from torch.nn.utils import prune

from xlprune_lib.config import UserError
from xlprune_lib.prune import importance
from xlprune_lib.prune.select import WeightSparsity
from xlprune_lib.xlnet import masks
from xlprune_lib.xlnet.structure import XLNetStructure


def _zeros_in_forward(pairs):
    return sum(int((masks.current_weight(m, n) == 0).sum()) for m, n in pairs)


def _prune(model, target, scope="global", scores=None):
    """Mask ``model`` to ``target`` by ``scores`` (default magnitude); the measured zero fraction of the prunable set."""
    scores = scores if scores is not None else importance.magnitude(model)
    WeightSparsity(target, scope)(model, scores).apply_masks(model)
    return masks.weight_sparsity(XLNetStructure(model).prunable())


def test_default_set_is_attention_and_ffn(tiny_classifier):
    pairs = XLNetStructure(tiny_classifier).prunable()
    assert len(pairs) == 2 * 7
    shapes = {tuple(getattr(m, n).shape) for m, n in pairs}
    assert shapes == {(32, 4, 8), (64, 32), (32, 64)}  # 3-D attention tensors included
    assert all(n in ("q", "k", "v", "o", "r", "weight") for _, n in pairs)


@pytest.mark.parametrize("scope", ["local", "global"])
def test_target_is_reached_and_measured(tiny_classifier, scope):
    pairs = XLNetStructure(tiny_classifier).prunable()
    total = sum(getattr(m, n).numel() for m, n in pairs)
    got = _prune(tiny_classifier, 0.5, scope)
    assert got == pytest.approx(0.5, abs=0.01)
    assert _zeros_in_forward(pairs) == round(got * total)
    per_tensor = [masks.mask_sparsity([p]) for p in pairs]
    if scope == "local":
        assert all(s == pytest.approx(0.5, abs=0.02) for s in per_tensor)
    else:
        assert max(per_tensor) - min(per_tensor) > 0.02  # one threshold, uneven per tensor


def test_magnitude_keeps_the_largest(tiny_classifier):
    ff = tiny_classifier.transformer.layer[0].ff.layer_1
    w = ff.weight.detach().abs().clone()
    _prune(tiny_classifier, 0.3, "local")
    kept = w[ff.weight_mask.bool()]
    dropped = w[~ff.weight_mask.bool()]
    assert kept.min() >= dropped.max()


def test_cumulative_pruning_keeps_earlier_zeros(tiny_classifier):
    pairs = XLNetStructure(tiny_classifier).prunable()
    _prune(tiny_classifier, 0.3)
    first = [masks.current_mask(m, n).clone() for m, n in pairs]
    # scores that would prefer the already pruned weights: earlier zeros must stay zero anyway
    inverse = importance.magnitude(tiny_classifier).map(lambda s: -s)
    assert _prune(tiny_classifier, 0.6, scores=inverse) == pytest.approx(0.6, abs=0.01)
    for old, (m, n) in zip(first, pairs):
        assert not (masks.current_mask(m, n)[old == 0]).any()


def test_masks_survive_adamw_with_weight_decay(tiny_classifier):
    _prune(tiny_classifier, 0.7)
    pairs = XLNetStructure(tiny_classifier).prunable()
    zero_before = [masks.current_mask(m, n) == 0 for m, n in pairs]
    tiny_classifier.train()
    opt = torch.optim.AdamW(tiny_classifier.parameters(), lr=1e-2, weight_decay=0.1)
    ids = torch.randint(10, 120, (4, 9))
    for _ in range(5):
        loss = tiny_classifier(input_ids=ids, labels=torch.tensor([0, 1, 0, 1])).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    for zb, (m, n) in zip(zero_before, pairs):
        assert (masks.current_weight(m, n)[zb] == 0).all()
    masks.make_permanent(tiny_classifier)
    assert not any(prune.is_pruned(m) for m, _ in pairs)
    assert masks.mask_sparsity(pairs) == 0.0                            # no masks left ...
    assert masks.weight_sparsity(pairs) == pytest.approx(0.7, abs=0.01)  # ... the zeros are in the weights


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_out_of_range_sparsity(tiny_classifier, bad):
    with pytest.raises(UserError, match=r"\[0, 1\)"):
        _prune(tiny_classifier, bad)


def test_unknown_scope(tiny_classifier):
    with pytest.raises(UserError, match="local, global"):
        _prune(tiny_classifier, 0.2, "layerwise")
