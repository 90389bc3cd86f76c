"""A model with live masks, as any producer of the library hands it out, is copyable by ``copy.deepcopy`` and
picklable after forward passes with and without autograd, in train and eval mode (pytorch#37322).

``torch.nn.utils.prune`` stores ``w_orig * w_mask`` as the plain attribute ``w``; with autograd on it is not a
graph leaf and ``deepcopy`` refuses it. Every producer attaches its masks through ``masks.attach`` (directly or
by ``PruningPlan.apply_masks``), which keeps that attribute detached outside a forward pass.
"""
import copy
import io
import re
from pathlib import Path

import pytest
import torch
from conftest import padded_batch, tiny_config
from safetensors.torch import load_file, save_file
from torch.nn.utils import prune
from transformers import XLNetForSequenceClassification

import xlprune_lib
from xlprune_lib.loops import gradual, oneshot, rounds
from xlprune_lib.prune import importance, l0, select
from xlprune_lib.prune.plan import PruningPlan
from xlprune_lib.xlnet import masks

BATCH = padded_batch([6, 4, 5], [0, 1, 1])
INPUTS = {k: v for k, v in BATCH.items() if k != "labels"}


def _model():
    torch.manual_seed(0)
    return XLNetForSequenceClassification(tiny_config(num_labels=2, summary_last_dropout=0.0))


def _attach_one(m):
    w = m.transformer.layer[1].ff.layer_1.weight.detach().abs()
    masks.attach(m.transformer.layer[1].ff.layer_1, "weight", w > w.median())


def _magnitude_masks(m, target, scope="global"):
    select.WeightSparsity(target, scope)(m, importance.magnitude(m)).apply_masks(m)


def _rounds(m):
    source = _model()
    _magnitude_masks(source, 0.5)
    rounds.reattach_masks(m, rounds.live_weight_masks(source))


def _gradual(m):
    gradual.install_identity_masks(m)
    select.WeightSparsity(0.3)(m, importance.magnitude(m)).apply_masks(m)


def _heads_on_masked(m):   # surgery on a masked model: the masks stay live on the cut tensors
    _magnitude_masks(m, 0.4)
    oneshot.apply(m, oneshot.PruneSpec(method="magnitude", granularity="head", sparsity=0.25),
                  importance.score(m, "magnitude", "head"))


def _l0_on_masked(m):
    _magnitude_masks(m, 0.4)
    l0.attach(m, "head")


# every way the library hands out a model with live masks
PRODUCERS = {
    "WeightSparsity (local, twice)": lambda m: (_magnitude_masks(m, 0.3, "local"),
                                                _magnitude_masks(m, 0.6, "local")),
    "masks.attach": _attach_one,
    "PruningPlan.apply_masks (heads)": lambda m: PruningPlan.of(m).without("head", {0: [1, 2]}).apply_masks(m),
    "WeightSparsity": lambda m: select.WeightSparsity(0.5)(m, importance.magnitude(m)).apply_masks(m),
    "NM 2:4": lambda m: select.NM(2, 4)(m, importance.magnitude(m)).apply_masks(m),
    "oneshot.apply (weights)": lambda m: oneshot.apply(
        m, oneshot.PruneSpec(method="magnitude", granularity="weight", sparsity=0.5), importance.magnitude(m)),
    "oneshot.apply (heads, on masks)": _heads_on_masked,
    "rounds.reattach_masks": _rounds,
    "gradual masks": _gradual,
    "l0 gates on masks": _l0_on_masked,
}


def _step(m):   # a training step: forward and backward with autograd, then an in-place update
    m.train()
    m(**BATCH).loss.backward()
    with torch.no_grad():
        for p in m.parameters():
            if p.grad is not None:
                p.sub_(0.1 * p.grad)
    m.zero_grad()


STATES = {
    "as attached": lambda m: None,
    "forward with grad, train": lambda m: m.train()(**BATCH).loss,
    "forward with grad, eval": lambda m: m.eval()(**BATCH).loss,
    "forward without grad": lambda m: torch.no_grad()(lambda: m.eval()(**BATCH))(),
    "after a training step": _step,
}


def _logits(m):
    m.eval()
    with torch.no_grad():
        return m(**INPUTS).logits


def _masks_of(m):
    return [masks.current_mask(mod, name).clone() for mod, name in masks.live_masks(m)]


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("producer", PRODUCERS)
def test_deepcopy_of_a_masked_model(producer, state):
    model = _model()
    PRODUCERS[producer](model)
    assert masks.live_masks(model)
    kept = STATES[state](model)   # the loss (and its graph) stays alive while copying
    was_training = model.training
    clone = copy.deepcopy(model)
    assert clone.training == was_training
    before, mask_before = _logits(model), _masks_of(model)
    torch.testing.assert_close(_logits(clone), before, rtol=0, atol=0)
    assert len(masks.live_masks(clone)) == len(masks.live_masks(model))

    # independent: the copy's masks and weights are its own
    with torch.no_grad():
        for module, name in masks.live_masks(clone):
            getattr(module, f"{name}_mask").fill_(1)
            getattr(module, f"{name}_orig").mul_(2)
    assert not torch.equal(_logits(clone), before)
    torch.testing.assert_close(_logits(model), before, rtol=0, atol=0)
    assert all(torch.equal(a, b) for a, b in zip(_masks_of(model), mask_before))
    del kept


@pytest.mark.parametrize("state", ["forward with grad, train", "after a training step"])
@pytest.mark.parametrize("producer", ["WeightSparsity", "PruningPlan.apply_masks (heads)",
                                      "oneshot.apply (heads, on masks)"])
def test_pickle_and_safetensors_of_a_masked_model(producer, state, tmp_path):
    """``torch.save`` (pickle) round-trips; the masked tensors save to safetensors without pickle."""
    model = _model()
    PRODUCERS[producer](model)
    STATES[state](model)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    torch.testing.assert_close(_logits(loaded), _logits(model), rtol=0, atol=0)
    save_file(masks.effective_state_dict(model), tmp_path / "w.safetensors")
    permanent = copy.deepcopy(model)
    masks.make_permanent(permanent)
    saved = load_file(tmp_path / "w.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in permanent.state_dict().items())


def test_gradients_still_reach_the_weights():
    """The attribute is detached after a forward pass, yet backward reaches ``w_orig`` (zero where masked) and
    ``forward_weight`` is the tensor that pass used (gradients of the masked entries too)."""
    model = _model()
    _magnitude_masks(model, 0.5)
    permanent = copy.deepcopy(model)
    masks.make_permanent(permanent)
    for m in (model, permanent):
        m.eval()(**BATCH).loss.backward()
    module, name = masks.live_masks(model)[0]
    assert getattr(module, name).is_leaf and not getattr(module, name).requires_grad
    twin = dict(permanent.named_modules())[next(k for k, v in model.named_modules() if v is module)]
    mask = getattr(module, f"{name}_mask")
    torch.testing.assert_close(getattr(module, f"{name}_orig").grad, getattr(twin, name).grad * mask)
    assert (getattr(module, f"{name}_orig").grad[mask == 0] == 0).all()

    loss = model(**BATCH).loss
    used = masks.forward_weight(module, name)
    assert not used.is_leaf
    (g,) = torch.autograd.grad(loss, used)
    torch.testing.assert_close(g, getattr(twin, name).grad)
    assert (g[mask == 0] != 0).any()    # the effective weight's gradient, masked entries included


def test_a_copy_has_its_own_last_forward():
    """The copy's hook starts empty: its ``forward_weight`` after its own forward belongs to its own graph."""
    model = _model()
    _magnitude_masks(model, 0.5)
    model.eval()(**BATCH)
    clone = copy.deepcopy(model)
    module, name = masks.live_masks(clone)[0]
    assert masks.forward_weight(module, name).is_leaf           # no forward yet: the detached attribute
    loss = clone(**BATCH).loss
    (g,) = torch.autograd.grad(loss, masks.forward_weight(module, name))
    assert g.shape == masks.forward_weight(module, name).shape
    original = dict(model.named_modules())[next(k for k, v in clone.named_modules() if v is module)]
    assert masks.forward_weight(original, name) is not masks.forward_weight(module, name)


def test_copy_model_handles_masks_attached_by_hand():
    """A mask attached with ``torch.nn.utils.prune`` directly still copies through ``masks.copy_model``."""
    model = _model()
    prune.l1_unstructured(model.transformer.layer[0].ff.layer_2, "weight", amount=0.5)
    model.train()(**BATCH).loss.backward()
    with pytest.raises(RuntimeError, match="graph leaves"):
        copy.deepcopy(model)     # what torch does on its own (so this test can tell)
    clone = masks.copy_model(model)
    torch.testing.assert_close(_logits(clone), _logits(model), rtol=0, atol=0)


# a call that attaches a mask without ``masks.attach``: the module would not stay copyable
DIRECT_ATTACH = re.compile(r"\bprune\.(custom_from_mask|identity|\w+_unstructured|\w+_structured)\("
                           r"|\b(CustomFromMask|Identity|L1Unstructured|RandomUnstructured|LnStructured|"
                           r"RandomStructured|PruningContainer)\.apply\(")


def test_masks_are_attached_only_through_masks_py():
    """Every mask of the library goes through ``masks.attach``: no other module attaches one
    with ``torch.nn.utils.prune`` itself (a new producer could not be forgotten)."""
    root = Path(xlprune_lib.__file__).parent
    offenders = [str(p.relative_to(root)) for p in sorted(root.rglob("*.py"))
                 if p.name != "masks.py" and DIRECT_ATTACH.search(p.read_text())]
    assert not offenders
    assert DIRECT_ATTACH.search((root / "xlnet" / "masks.py").read_text())   # the pattern does see them
