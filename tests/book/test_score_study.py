"""Chapter 2's measurements (``book/score_study.py``): the pure pieces (``lowest``, ``movement_anatomy``) on
hand-made scores, and the study's measurements on a tiny random XLNet.

The dense run is a saved tiny classifier (``finetune.dense_run`` is replaced so nothing trains), the scoring
batches are random padded batches, the evaluator a stand-in whose "accuracy" is counted from the model it is
given, and the cache a temporary folder. The movement fine-tuning is never run: the weight scores are given.
"""
import numpy as np
import pytest
import torch
from conftest import padded_batch, tiny_config
from transformers import XLNetForSequenceClassification

from xlprune_lib.book import score_study
from xlprune_lib.book.score_study import ScoreStudy, lowest, movement_anatomy
from xlprune_lib.measure import ranks
from xlprune_lib.prune import importance
from xlprune_lib.prune.plan import PruningPlan
from xlprune_lib.train import finetune
from xlprune_lib.xlnet.masks import weight_sparsity
from xlprune_lib.xlnet.modeling import save_model
from xlprune_lib.xlnet.structure import XLNetStructure

N_LAYER, N_HEAD, D_MODEL, D_INNER = 3, 4, 32, 64     # conftest.tiny_config with 3 layers
PRUNABLE = N_LAYER * (5 * D_MODEL * D_MODEL + 2 * D_MODEL * D_INNER)   # q k v o r (d x n_head x d_head) + FFN


# --- lowest and movement_anatomy -----------------------------------------------------------------------

def test_lowest_takes_the_int_share_lowest_ties_by_position():
    scores = torch.tensor([3.0, 1.0, 2.0, 1.0, 0.0])
    assert lowest(scores, 0.6).tolist() == [4, 1, 3]           # int(0.6 * 5) = 3; the two 1s in their order
    assert lowest(scores, 0.39).tolist() == [4]                # int(1.95) = 1
    assert lowest(scores, 0.0).tolist() == []
    order = torch.tensor([4, 3, 1, 2, 0])                        # a given order is used as it is
    assert lowest(scores, 0.4, order).tolist() == [4, 3]
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="sparsity"):
            lowest(scores, bad)


def test_movement_anatomy_by_hand():
    """Four weights, Taylor 1 < 2 < 3 < 4, movement (4, 3, -2, -1): the two negative scores are the two
    weights Taylor keeps at 50%.

    Ranks of S: (3, 2, 0, 1) against (0, 1, 2, 3): d^2 sums to 18, rho = 1 - 6 * 18 / (4 * 15) = -0.8;
    |S| = (4, 3, 2, 1) ranks exactly reversed, rho = -1.
    """
    flat = {"taylor": torch.tensor([1.0, 2.0, 3.0, 4.0]), "movement": torch.tensor([4.0, 3.0, -2.0, -1.0]),
            "random": torch.tensor([0.1, 0.9, 0.2, 0.8])}
    out = movement_anatomy(flat, [0.5, 0.25])
    assert out["negative_share"] == 0.5
    assert out["rho_signed"] == pytest.approx(-0.8, abs=1e-12) and out["rho_magnitude"] == pytest.approx(-1, abs=1e-12)
    removed = {(r["method"], r["requested"]): r["removed"] for r in out["taylor_keep_removed"]}
    assert list(removed) == [(m, s) for s in (0.5, 0.25) for m in ("taylor", "movement", "random")]
    # 50%: Taylor keeps weights 2 and 3; movement cuts 2 and 3 (all of them), random cuts 0 and 2 (one of two)
    assert removed["taylor", 0.5] == 0 and removed["movement", 0.5] == 1 and removed["random", 0.5] == 0.5
    # 25%: Taylor keeps 1, 2, 3; movement cuts weight 2 (one of three), random weight 0 (none of them)
    assert removed["movement", 0.25] == pytest.approx(1 / 3) and removed["random", 0.25] == 0


def test_movement_anatomy_on_hand_made_scores():
    """Movement scores whose sign is chance and whose size follows Taylor: about half negative, |S| ranked like
    Taylor, and the cut removes more of what Taylor keeps than random does; Taylor's own cut removes none."""
    g = torch.Generator().manual_seed(0)
    taylor = torch.rand(20_000, generator=g)
    sign = torch.where(torch.rand(20_000, generator=g) < 0.5, -1.0, 1.0)
    flat = {"taylor": taylor, "movement": sign * taylor, "random": torch.rand(20_000, generator=g)}
    out = movement_anatomy(flat, [0.3, 0.7])
    assert abs(out["negative_share"] - 0.5) < 0.02 and abs(out["rho_signed"]) < 0.05 and out["rho_magnitude"] > 0.99
    removed = {(r["method"], r["requested"]): r["removed"] for r in out["taylor_keep_removed"]}
    for s in (0.3, 0.7):
        assert removed["taylor", s] == 0 and abs(removed["random", s] - s) < 0.02
    # at 30% movement removes the most negative: the large-Taylor weights with a minus sign, half of the top 70%
    assert removed["movement", 0.3] > 0.4
    assert len(lowest(taylor, 0.3)) == 6000
    with pytest.raises(ValueError, match="sparsity"):
        lowest(taylor, 1.0)


# --- the study on a tiny classifier ----------------------------------------------------------------------

def forbidden(*args, **kwargs):
    raise AssertionError("a cached measurement was computed again")


def heads_kept(model) -> float:
    return sum(layer.rel_attn.n_head for layer in model.transformer.layer) / (N_HEAD * N_LAYER)


class FakeEvaluator:
    """``finetune.Evaluator``'s call: ``accuracy(model)`` on every split asked for (the nonzero share of the
    prunable weights unless told otherwise)."""

    def __init__(self, accuracy=lambda m: 1.0 - weight_sparsity(XLNetStructure(m).prunable())):
        self.accuracy, self.calls = accuracy, []

    def __call__(self, model, splits=None):
        splits = list(splits or ("validation", "test"))
        self.calls.append(splits)
        return {f"{s}_accuracy": self.accuracy(model) for s in splits}


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XLPRUNE_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = XLNetForSequenceClassification(tiny_config(n_layer=N_LAYER, num_labels=2)).eval()
    folder = save_model(model, None, tmp_path / "dense")
    monkeypatch.setattr(finetune, "dense_run", lambda profile, seed=0, progress=False, data=None: folder)
    return folder


BATCHES = [padded_batch([6, 4, 5, 3], [0, 1, 1, 0], seed=s) for s in range(2)]


def _study(evaluator=None, score_batches=2, movement_steps=3, **weights):
    """A study on the tiny run; ``weights``: weight scores by method (computed on the dense model when given)."""
    study = ScoreStudy("smoke", 0, score_batches, movement_steps)
    study.evaluator = evaluator or FakeEvaluator()
    study.batches = BATCHES
    if weights:
        study._weights = {"scores": weights, "seconds": {m: 0.5 for m in weights}, "moved": study.model}
    return study


def test_the_grid_holds_the_scoring_settings(run_dir):
    study = ScoreStudy("smoke", 1, score_batches=4, movement_steps=7)
    assert study.grid["score_batches"] == 4 and study.grid["movement_steps"] == 7 and study.grid["seed"] == 1
    assert study.run_dir == run_dir and study._n_heads == N_LAYER * N_HEAD        # read from config.json
    counts = []
    for s in (study, ScoreStudy("smoke", 1, score_batches=4, movement_steps=8), study):
        s._measured("demo", lambda: counts.append(1) or len(counts))
    assert len(counts) == 2


def test_dense_and_majority(run_dir):
    from datasets import Dataset

    study = _study()
    assert study.dense() == {"validation_accuracy": 1.0, "test_accuracy": 1.0}
    study.data = {"train": Dataset.from_dict({"label": [1, 1, 0]}), "validation": Dataset.from_dict({"label": [1, 0]}),
                  "test": Dataset.from_dict({"label": [1, 1, 1, 0]})}
    majority = study.majority()
    assert majority["predicts"] == 1 and majority["validation_accuracy"] == 0.5 and majority["test_accuracy"] == 0.75
    again = _study(evaluator=forbidden)
    assert again.dense() == {"validation_accuracy": 1.0, "test_accuracy": 1.0}


def test_prunable_count_is_counted_from_the_tensors(run_dir):
    study = _study()
    count = study.prunable_count()
    assert count == {"prunable": PRUNABLE, "total": sum(p.numel() for p in study.model.parameters())}


def test_weight_scoring_counts_the_examples_each_score_read(run_dir):
    study = _study(magnitude=None, gradient=None, taylor=None, random=None, movement=None)
    out = study.weight_scoring()
    labelled = sum(len(b["labels"]) for b in BATCHES)       # 8
    assert out["examples"] == {"magnitude": 0, "gradient": labelled, "taylor": labelled, "random": 0,
                               "movement": 3 * study.profile.ft_batch}
    assert out["seconds"] == {m: 0.5 for m in out["examples"]} and out["movement_start"]["test_accuracy"] == 1.0


def test_weight_curves_start_dense_and_prune_by_each_score(run_dir, monkeypatch):
    study = _study()
    scores = {"magnitude": importance.magnitude(study.model), "random": importance.score(study.model, "random", seed=0)}
    study._weights = {"scores": scores, "seconds": {}, "moved": None}
    rows = study.weight_curves([0.5, 0.8])
    assert [(r["method"], r["requested"]) for r in rows] == [
        ("magnitude", 0.0), ("magnitude", 0.5), ("magnitude", 0.8), ("random", 0.0), ("random", 0.5), ("random", 0.8)]
    for r in rows:
        assert r["sparsity"] == pytest.approx(r["requested"], abs=1e-3)
        assert r["test_accuracy"] == pytest.approx(1 - r["sparsity"], abs=1e-6)    # evaluated on the pruned copy
    monkeypatch.setattr(score_study.experiments, "curve", forbidden)
    assert _study().weight_curves([0.5, 0.8]) == rows
    fresh = _study()
    fresh._weights = {"scores": scores, "seconds": {}, "moved": None}
    with pytest.raises(AssertionError, match="computed again"):
        fresh.weight_curves([0.5])


def test_score_correlation_and_movement_anatomy_of_the_flat_scores(run_dir, monkeypatch):
    g = torch.Generator().manual_seed(0)
    taylor = torch.rand(400, generator=g)
    flat = {"taylor": taylor, "movement": taylor - 0.5, "random": torch.rand(400, generator=g)}
    study = _study()
    study._flat_scores = flat
    corr = study.score_correlation()
    assert corr["methods"] == ["taylor", "movement", "random"]
    np.testing.assert_allclose(corr["rho"], ranks.spearman_matrix(list(flat.values())), atol=1e-12)
    assert corr["rho"][0][1] == pytest.approx(1.0)             # a shift keeps the order
    anatomy = study.movement_anatomy([0.5])
    assert anatomy == movement_anatomy(flat, [0.5])                 # the function, through the cache
    # read back without a score: computing them would need the movement fine-tuning
    monkeypatch.setattr(score_study, "movement_finetune", forbidden)
    monkeypatch.setattr(score_study.importance, "score", forbidden)
    again = _study()
    assert again.score_correlation() == corr and again.movement_anatomy([0.5]) == anatomy
    with pytest.raises(AssertionError, match="computed again"):
        again.movement_anatomy([0.25])


def test_inside_cut_magnitude_removes_no_large_weight_random_a_fair_share(run_dir):
    study = _study()
    scores = {"magnitude": importance.magnitude(study.model), "random": importance.score(study.model, "random", seed=3)}
    study._weights = {"scores": scores, "seconds": {}, "moved": None}
    assert len(study._flat_scores["magnitude"]) == PRUNABLE
    out = study.inside_cut(0.5)
    # the cut by |w| takes the smaller half: none of the largest 10%, and a mean well below the mean |w|
    assert out["magnitude"]["largest_removed"] == 0 and out["magnitude"]["mean_removed_ratio"] < 0.6
    # a random cut takes about half of everything
    assert out["random"]["largest_removed"] == pytest.approx(0.5, abs=0.05)
    assert out["random"]["mean_removed_ratio"] == pytest.approx(1.0, abs=0.05)


def test_head_importance_rows_are_unit_norm_per_layer(run_dir):
    study = _study()
    study._unit_scores = {"head": {"taylor": importance.score(study.model, "taylor", "head", BATCHES)}}
    rows = study.head_importance()
    assert len(rows) == N_LAYER and all(len(r) == N_HEAD for r in rows)
    for row, raw in zip(rows, study._unit_scores["head"]["taylor"].per_layer()):
        assert torch.tensor(row).norm().item() == pytest.approx(1.0, abs=1e-6)
        assert torch.tensor(row) == pytest.approx(raw / raw.norm(), abs=1e-6)   # each layer scaled alone


def test_head_fractions_grid(run_dir):
    study = _study()
    assert study.head_fractions() == {"taylor": [k / 12 for k in range(1, 12)],
                                      "magnitude": [k / 12 for k in (2, 4, 6, 8, 10)],
                                      "fisher": [k / 12 for k in (2, 4, 6, 8, 10)],
                                      "random": [k / 12 for k in (2, 4, 6, 8, 10)]}
    study._n_heads = 144                                       # 12 x 12: a grid of 1/16, every ninth head
    fine = study.head_fractions()["taylor"]
    assert fine == [k / 144 for k in range(9, 144, 9)] and study.head_fractions()["random"] == fine[1::2]


def test_head_curves_and_removable_heads(run_dir):
    """Accuracy = the share of heads kept: with a tolerance of 0.3 the largest share removed while accuracy stays
    above 1 - 0.3 is 3/12 (accuracy 0.75)."""
    study = _study(FakeEvaluator(heads_kept))
    curves = study.head_curves()
    fractions = study.head_fractions()
    assert [(r["method"], r["requested"]) for r in curves] == [(m, f) for m, fs in fractions.items() for f in fs]
    for r in curves:
        assert r["validation_accuracy"] == pytest.approx(1 - round(r["requested"] * 12) / 12)
        assert "test_accuracy" not in r                          # curves are drawn on validation
    best = study.removable_heads(0.3)
    assert best["fraction"] == pytest.approx(3 / 12) and best["heads_removed"] == 3 and best["heads_total"] == 12
    assert sum(best["heads_per_layer"]) == 9 and best["test_accuracy"] == pytest.approx(0.75)
    nothing = study.removable_heads(-1.0)                       # no share keeps accuracy above dense + 1
    assert nothing["fraction"] == 0.0 and nothing["heads_removed"] == 0 and nothing["validation_accuracy"] == 1.0


def test_neuron_curves_every_unit_score(run_dir):
    neurons = lambda m: sum(layer.ff.layer_1.out_features for layer in m.transformer.layer) / (D_INNER * N_LAYER)  # noqa: E731
    study = _study(FakeEvaluator(neurons))
    rows = study.neuron_curves([0.25, 0.5])
    assert [(r["method"], r["requested"]) for r in rows] == [(m, f) for m in score_study.UNIT_METHODS
                                                              for f in (0.25, 0.5)]
    assert all(r["validation_accuracy"] == pytest.approx(1 - r["requested"]) for r in rows)


def test_layer_study_drops_the_lowest_scoring_layers(run_dir):
    seen = []

    def layers(model):
        seen.append(PruningPlan.of(model).layers)
        return len(model.transformer.layer) / N_LAYER

    study = _study(FakeEvaluator(layers))
    out = study.layer_study()
    assert len(out["skip_loss"]) == len(out["taylor"]) == N_LAYER
    assert [(r["method"], r["layers removed"]) for r in out["rows"]] == [
        (m, k) for m in ("skip loss", "taylor", "magnitude", "random") for k in (1, 2)]
    assert [r["validation_accuracy"] for r in out["rows"]] == pytest.approx([2 / 3, 1 / 3] * 4)
    # the layers kept are those the score ranks highest (the k lowest go)
    for method, key, offset in (("skip loss", "skip_loss", 0), ("taylor", "taylor", 2)):
        order = torch.argsort(torch.tensor(out[key]), stable=True).tolist()
        for k in (1, 2):
            assert seen[offset + k - 1] == tuple(sorted(order[k:])), (method, k)
    assert len(study.model.transformer.layer) == N_LAYER          # copies were cut, not the dense model


def test_ablation_and_sensitivity_are_the_experiments_rows(run_dir, monkeypatch):
    study = _study()
    ablation = study.ablation()
    assert [r["ablation"] for r in ablation] == ["dense", "all-heads-off", "all-ffn-off"]
    rows = study.sensitivity([0.5])
    assert [(r["layer"], r["part"]) for r in rows] == [(i, p) for i in range(N_LAYER) for p in ("attention", "ffn")]
    for r in rows:   # one layer's attention or FFN at 50%: the share of the whole prunable set it zeroes
        part = 5 * D_MODEL * D_MODEL if r["part"] == "attention" else 2 * D_MODEL * D_INNER
        assert r["sparsity"] == pytest.approx(0.5, abs=1e-3)
        assert r["validation_accuracy"] == pytest.approx(1 - 0.5 * part / PRUNABLE, abs=1e-4)
    monkeypatch.setattr(score_study.experiments, "sublayer_ablation", forbidden)
    monkeypatch.setattr(score_study.experiments, "sensitivity", forbidden)
    again = _study()
    assert again.ablation() == ablation and again.sensitivity([0.5]) == rows


def _zero_a_quarter(model, fraction):
    """A shortcut that zeroes the smallest ``fraction`` of every Linear's weight (and prints, as a cell might)."""
    import torch

    print("pruning")
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            w = module.weight.data
            w[w.abs() <= w.abs().flatten().kthvalue(max(1, int(fraction * w.numel()))).values] = 0


def test_shortcut_comparison_matches_the_zero_fraction_with_global_magnitude(run_dir, capsys):
    study = _study()
    out = study.shortcut_comparison(_zero_a_quarter, 0.25)
    assert capsys.readouterr().out == ""                          # the shortcut's prints are swallowed
    assert list(out)[0] == "shortcut" and list(out)[-1] == "dense"
    (label,) = [k for k in out if k.startswith("global magnitude")]
    assert label == "global magnitude, same zero fraction"
    assert 0 < out["shortcut"]["zero_fraction"] < 0.25
    assert abs(out[label]["zero_fraction"] - out["shortcut"]["zero_fraction"]) <= 0.005
    assert out["dense"]["zero_fraction"] < out["shortcut"]["zero_fraction"] and out["dense"]["test_accuracy"] == 1.0
    assert weight_sparsity(XLNetStructure(study.model).prunable()) == 0          # the dense model is untouched
    # another function's source is another key (a shortcut that zeroes nothing leaves the dense zeros)
    calls = []
    idle = study.shortcut_comparison(lambda m, f: calls.append(f), 0.25)
    assert calls == [0.25] and idle["shortcut"]["zero_fraction"] == out["dense"]["zero_fraction"]
    assert study.shortcut_comparison(_zero_a_quarter, 0.25) == out and calls == [0.25]       # read back
