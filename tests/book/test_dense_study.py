"""A chapter's cached measurements on the dense classifier (``book/dense_study.py``), on a tiny random XLNet.

The dense run is a saved tiny classifier (``finetune.dense_run`` is replaced so nothing trains), the evaluator a
stand-in whose "accuracy" is counted from the model it is given, and the cache a temporary folder: the tests
check what each measurement computes on which model, and that a second request reads the cache.
"""
import dataclasses

import pytest
import torch
from conftest import tiny_config
from transformers import XLNetForSequenceClassification

from xlprune_lib.book import dense_study
from xlprune_lib.prune.plan import PruningPlan
from xlprune_lib.train import finetune
from xlprune_lib.xlnet.masks import weight_sparsity
from xlprune_lib.xlnet.modeling import save_model
from xlprune_lib.xlnet.structure import XLNetStructure

N_LAYER = 3


def forbidden(*args, **kwargs):
    raise AssertionError("a cached measurement was computed again")


def zero_share(model) -> float:
    return weight_sparsity(XLNetStructure(model).prunable())


class FakeEvaluator:
    """``finetune.Evaluator``'s interface: ``accuracy(model)`` on every split asked for, and ``logits``."""

    def __init__(self, accuracy=lambda m: 1.0 - zero_share(m)):
        self.accuracy, self.calls = accuracy, []

    def __call__(self, model, splits=None):
        splits = list(splits or ("validation", "test"))
        self.calls.append(splits)
        return {f"{s}_accuracy": self.accuracy(model) for s in splits}

    def logits(self, model, split):
        """One row per example: the model's layer count and its first classifier weight."""
        row = [float(len(model.transformer.layer)), float(model.logits_proj.weight[0, 0].detach())]
        return [row, row], [0, 1]


def _classifier(n_layer=N_LAYER, seed=0):
    torch.manual_seed(seed)
    return XLNetForSequenceClassification(tiny_config(n_layer=n_layer, num_labels=2)).eval()


@pytest.fixture
def asked():
    """The ``(profile name, seed, data)`` of every dense run asked for."""
    return []


@pytest.fixture
def run_dir(tmp_path, monkeypatch, asked):
    """A saved tiny classifier as the dense run of every profile and seed, and a private cache."""
    monkeypatch.setenv("XLPRUNE_CACHE", str(tmp_path / "cache"))
    folder = save_model(_classifier(), None, tmp_path / "dense")

    def dense_run(profile, seed=0, progress=False, data=None):
        asked.append((profile.name, seed, data))
        return folder

    monkeypatch.setattr(finetune, "dense_run", dense_run)
    return folder


def _study(cls=dense_study.DenseStudy, evaluator=None, profile="smoke", seed=0, **kw):
    study = cls(profile, seed, **kw)
    study.evaluator = evaluator or FakeEvaluator()
    return study


def test_the_study_is_the_dense_run_keyed_by_every_profile_setting(run_dir, asked):
    study = _study(seed=2)
    assert study.run_dir == run_dir and asked == [("smoke", 2, None)]
    assert study.profile.name == "smoke" and study.user is None
    assert study.grid["profile"] == "smoke" and study.grid["seed"] == 2
    assert len(study.model.transformer.layer) == N_LAYER and not study.model.training   # loaded from the run
    # a profile changed under the same name is another key, and so another measurement
    changed = dataclasses.replace(study.profile, recovery_lr=study.profile.recovery_lr * 2)
    other = _study(profile=changed, seed=2)
    assert other.grid["profile"] == "smoke" and other.grid["profile_settings"] != study.grid["profile_settings"]
    counts = []
    for s in (study, other, study):
        s._measured("demo", lambda: counts.append(1) or len(counts))
    assert len(counts) == 2


def test_sizes_and_validation_read_the_splits(run_dir):
    from datasets import Dataset

    study = _study()
    study.data = {split: Dataset.from_dict({"text": ["a"] * n, "label": [0] * n})
                  for split, n in (("train", 7), ("validation", 3), ("test", 5))}
    assert study.sizes == {"validation": 3, "test": 5}
    assert study.validation(study.model) == {"validation_accuracy": 1.0}
    assert study.evaluator.calls == [["validation"]]


def test_oneshot_curve_prunes_copies_at_each_sparsity_and_is_cached(run_dir, monkeypatch):
    study = _study()
    before = {k: v.clone() for k, v in study.model.state_dict().items()}
    rows = study.oneshot_curve([0.25, 0.5, 0.9], "magnitude")
    assert [r["requested"] for r in rows] == [0.25, 0.5, 0.9]
    for r in rows:
        assert r["method"] == "magnitude" and r["granularity"] == "weight"
        assert r["sparsity"] == pytest.approx(r["requested"], abs=1e-3)
        # the evaluator saw the pruned copy: its "accuracy" is the copy's nonzero share
        assert r["validation_accuracy"] == pytest.approx(1 - r["sparsity"], abs=1e-6) == r["test_accuracy"]
    assert study.evaluator.calls == [["validation", "test"]] * 3
    assert all(torch.equal(before[k], v) for k, v in study.model.state_dict().items())   # dense untouched
    monkeypatch.setattr(dense_study.experiments, "curve", forbidden)
    again = _study()
    assert again.oneshot_curve([0.25, 0.5, 0.9], "magnitude") == rows and again.evaluator.calls == []
    with pytest.raises(AssertionError, match="computed again"):
        again.oneshot_curve([0.25, 0.5, 0.9], "random")


def test_oneshot_curve_of_heads_on_the_test_split(run_dir):
    heads = lambda m: sum(layer.rel_attn.n_head for layer in m.transformer.layer) / (4 * N_LAYER)  # noqa: E731
    study = _study(evaluator=FakeEvaluator(heads))
    rows = study.oneshot_curve([0.25, 0.5], "magnitude", "head", splits=["test"])
    assert [(r["granularity"], r["requested"]) for r in rows] == [("head", 0.25), ("head", 0.5)]
    # 12 heads: int(0.25 * 12) = 3 and 6 removed
    assert [r["test_accuracy"] for r in rows] == [pytest.approx(9 / 12), pytest.approx(6 / 12)]
    assert all("validation_accuracy" not in r for r in rows) and study.evaluator.calls == [["test"]] * 2


def test_layer_drops_drop_the_top_layers_then_fine_tune(run_dir, monkeypatch):
    trained = []

    def train_classifier(model, tokenizer, splits, profile, seed, epochs, progress=True, steps=None, lr=None):
        trained.append({"layers": PruningPlan.of(model).layers, "steps": steps, "lr": lr, "splits": splits,
                        "epochs": epochs})
        return None, 1.5

    monkeypatch.setattr(finetune, "train_classifier", train_classifier)
    monkeypatch.setattr(finetune, "tokenize_split", lambda split, tokenizer, max_len: ("tokenized", len(split)))
    study = _study(evaluator=FakeEvaluator(lambda m: len(m.transformer.layer) / 10))
    study.data = {"train": [{"text": "a", "label": 0}] * 4}
    study.tokenizer = None
    dense = study.model
    total = sum(p.numel() for p in dense.parameters())
    per_layer = sum(p.numel() for p in dense.transformer.layer[0].parameters())
    rows = study.layer_drops([0, 1, 2, 3, 7], steps=5)
    assert [(r["layers dropped"], r["layers left"]) for r in rows] == [(1, 2), (2, 1)]   # 0 < k < n_layer only
    for r in rows:
        k = r["layers dropped"]
        assert r["parameters"] == pytest.approx((total - k * per_layer) / total, abs=1e-12)
        assert r["validation before fine-tuning"] == r["validation after"] == r["test after"] == (N_LAYER - k) / 10
        assert r["seconds"] == 1.5
    # the top layers went, and each model was fine-tuned for the steps asked at the profile's recovery rate
    assert [t["layers"] for t in trained] == [(0, 1), (0,)]
    assert all(t["steps"] == 5 and t["lr"] == study.profile.recovery_lr and t["epochs"] == 1.0 for t in trained)
    assert trained[0]["splits"] == {"train": ("tokenized", 4)}
    assert len(dense.transformer.layer) == N_LAYER                # each drop starts from the saved run
    monkeypatch.setattr(finetune, "train_classifier", forbidden)
    assert _study().layer_drops([0, 1, 2, 3, 7], steps=5) == rows
    fresh = _study()
    fresh.data, fresh.tokenizer = study.data, None
    with pytest.raises(AssertionError, match="computed again"):     # other steps: another measurement
        fresh.layer_drops([1], steps=6)


def test_forgetting_pairs_dense_and_pruned_logits_by_the_pruned_folder(run_dir, tmp_path):
    study = _study()
    pruned = _classifier()
    PruningPlan.of(pruned).without("layer", [0]).apply_surgery(pruned)
    folder = save_model(pruned, None, tmp_path / "pruned")
    out = study.forgetting(folder)
    assert out["labels"] == [0, 1]
    assert [row[0] for row in out["dense"]] == [N_LAYER] * 2 and [row[0] for row in out["pruned"]] == [N_LAYER - 1] * 2
    other = _classifier(seed=1)            # another pruned model: another key, whatever its folder is called
    save_model(other, None, tmp_path / "other")
    again = _study()
    again.evaluator.logits = forbidden
    assert again.forgetting(folder) == out
    with pytest.raises(AssertionError, match="computed again"):
        again.forgetting(tmp_path / "other")
    with pytest.raises(AssertionError, match="computed again"):
        again.forgetting(folder, split="validation")
