"""Gradual pruning: the cubic-schedule callback masks on schedule during a real Trainer run."""

import pytest
import torch

from xlprune_lib.xlnet.masks import weight_sparsity
from xlprune_lib.xlnet.structure import XLNetStructure


def _toy_trainer(model, callbacks, steps):
    """A real ``transformers`` Trainer on random token ids (fixed length, so no tokenizer is needed)."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments, default_data_collator

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 100, (64, 12), generator=g)
    ds = Dataset.from_dict({"input_ids": ids.tolist(), "labels": (ids[:, 0] % 2).tolist()})
    args = TrainingArguments(output_dir="unused", max_steps=steps, per_device_train_batch_size=8, learning_rate=1e-2,
                             report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0)
    return Trainer(model=model, args=args, train_dataset=ds, data_collator=default_data_collator,
                   callbacks=callbacks)


@pytest.mark.parametrize("method", ["magnitude", "movement"])
def test_gradual_callback_follows_the_cubic_schedule(tiny_classifier, method, tmp_path, monkeypatch):
    from xlprune_lib.loops.gradual import GradualPruning, install_identity_masks

    monkeypatch.chdir(tmp_path)
    model = tiny_classifier.train()
    install_identity_masks(model)
    pruner = GradualPruning(0.6, n=3, dt=4, method=method, model=model)
    seen = {}
    from transformers import TrainerCallback

    class Snapshot(TrainerCallback):  # the masks after every step, to check that pruning is cumulative
        def on_step_end(self, args, state, control, model=None, **kw):
            seen[state.global_step] = [getattr(m, f"{n}_mask").clone() for m, n in XLNetStructure(model).prunable()]

    _toy_trainer(model, [pruner, Snapshot()], steps=16).train()
    assert [t for t, _ in pruner.history] == [4, 8, 12]
    for t, reached in pruner.history:
        expected = 0.6 + (0.0 - 0.6) * (1 - t / 12) ** 3
        assert reached == pytest.approx(expected, abs=1e-3)
    assert weight_sparsity(XLNetStructure(model).prunable()) == pytest.approx(0.6, abs=1e-3)
    for a, b in ((4, 8), (8, 12), (12, 16)):
        assert all(bool((nb <= na).all()) for na, nb in zip(seen[a], seen[b]))   # a pruned weight stays pruned
    if method == "movement":
        assert pruner.movement.steps == 16
        assert any(float(s.abs().sum()) > 0 for s in pruner.movement.scores.values())


def test_mask_update_ranks_the_weights_after_the_optimizer_step(tiny_classifier):
    """At ``on_step_end`` the optimizer has just changed ``w_orig``, and ``module.w`` still holds the weights of the
    last forward pass. The update must rank the weights as they are now (the code before the plan ranked the stale
    ones: the kind the live-mask twins check for every reader)."""
    from types import SimpleNamespace

    from xlprune_lib.loops.gradual import GradualPruning, install_identity_masks

    model = tiny_classifier
    install_identity_masks(model)
    pairs = XLNetStructure(model).prunable()
    with torch.no_grad():
        model(input_ids=torch.tensor([[5, 6, 7]]))          # the pre-hooks set every ``w`` from ``w_orig``
        g = torch.Generator().manual_seed(3)
        for m, n in pairs:                                   # an "optimizer step" that reorders the magnitudes
            orig = getattr(m, f"{n}_orig")
            orig.copy_(torch.randn(orig.shape, generator=g))
    now = torch.cat([getattr(m, f"{n}_orig").detach().abs().flatten() for m, n in pairs])
    pruner = GradualPruning(0.5, n=1, dt=1)
    pruner.on_step_end(None, SimpleNamespace(global_step=1), None, model=model)
    kept = torch.cat([getattr(m, f"{n}_mask").flatten() for m, n in pairs]).bool()
    assert kept.sum() == now.numel() - round(0.5 * now.numel())
    assert now[kept].min() >= now[~kept].max()             # exactly the largest current |w| survive
