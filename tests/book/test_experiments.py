"""book/experiments.py: chapter 2's curves, sensitivity scan and sublayer ablation, on a tiny random XLNet.

Each measurement prunes copies through the one path (scores, rule, plan): the model is never changed, the
measured sparsity is counted in the pruned copy's tensors, and a scan touches only the part it names."""
import copy

import torch
from conftest import padded_batch

from xlprune_lib.book import experiments
from xlprune_lib.book.experiments import sublayer_ablation
from xlprune_lib.loops.oneshot import PruneSpec
from xlprune_lib.prune import importance
from xlprune_lib.prune.select import WeightSparsity
from xlprune_lib.xlnet.masks import current_weight, weight_sparsity
from xlprune_lib.xlnet.structure import XLNetStructure


def _probe(seen):
    """An evaluate_fn that records each pruned copy's zero fraction per (layer, part) and returns its logits' sum
    as a stand-in metric (the curves only pass it through)."""
    batch = padded_batch([6, 3], [0, 1])
    batch.pop("labels")

    def evaluate(model):
        s = XLNetStructure(model)
        seen.append({(i, part): weight_sparsity(s.prunable(part=part, layer=i))
                     for i in range(len(s.layers)) for part in ("attention", "ffn")})
        with torch.no_grad():
            return {"validation_accuracy": float(model(**batch).logits.sum())}
    return evaluate


def test_curve_prunes_copies_and_counts_what_it_removed(tiny_classifier):
    before = copy.deepcopy(tiny_classifier.state_dict())
    scores = importance.score(tiny_classifier, "magnitude")
    seen = []
    rows = experiments.curve(tiny_classifier, PruneSpec("magnitude", "weight", 0.0), [0.25, 0.5], scores,
                             _probe(seen))
    assert [r["requested"] for r in rows] == [0.25, 0.5]
    assert [round(r["sparsity"], 3) for r in rows] == [0.25, 0.5]            # counted in each copy
    assert all(torch.equal(v, tiny_classifier.state_dict()[k]) for k, v in before.items())   # model untouched


def test_curve_reuses_unit_scores_on_every_copy(tiny_classifier):
    """Scores are keyed by unit names, so one set of head scores prunes every copy (no re-keying)."""
    scores = importance.score(tiny_classifier, "magnitude", "head")
    rows = experiments.curve(tiny_classifier, PruneSpec("magnitude", "head", 0.0), [0.25, 0.5], scores,
                             lambda m: {"heads": XLNetStructure(m).total_units("head")})
    assert [r["heads"] for r in rows] == [6, 4]                              # of 2 layers x 4 heads
    assert XLNetStructure(tiny_classifier).total_units("head") == 8


def test_sensitivity_prunes_one_part_of_one_layer(tiny_classifier):
    seen = []
    rows = experiments.sensitivity(tiny_classifier, [0.5], _probe(seen))
    assert [(r["layer"], r["part"]) for r in rows] == [(0, "attention"), (0, "ffn"), (1, "attention"), (1, "ffn")]
    for row, zeros in zip(rows, seen):
        target = (row["layer"], row["part"])
        assert abs(zeros[target] - 0.5) < 0.01 and abs(row["sparsity"] - zeros[target]) < 1e-9
        assert all(v == 0.0 for k, v in zeros.items() if k != target)        # the rest stays dense
    # local: every tensor of the part at the same sparsity, by magnitude (the kept |w| are the largest)
    pruned = copy.deepcopy(tiny_classifier)
    scores = importance.magnitude(pruned)
    chosen = scores.only([n for n in scores if n.startswith("layer.1.ff.")])
    WeightSparsity(0.5, "local")(pruned, chosen).apply_masks(pruned)
    for module, attr in XLNetStructure(pruned).prunable(part="ffn", layer=1):
        w, orig = current_weight(module, attr).detach(), getattr(module, f"{attr}_orig").detach()
        assert abs(float((w == 0).float().mean()) - 0.5) < 0.01
        assert orig[w == 0].abs().max() <= orig[w != 0].abs().min()


def test_sublayer_ablation_switches_a_whole_kind_off_and_restores_it(tiny_classifier):
    seen = []
    rows = experiments.sublayer_ablation(tiny_classifier, _probe(seen))
    assert [r["ablation"] for r in rows] == ["dense", "all-heads-off", "all-ffn-off"]
    assert len({r["validation_accuracy"] for r in rows}) == 3                 # each changes the output
    again = experiments.sublayer_ablation(tiny_classifier, _probe([]))
    assert again[0] == rows[0]                                                # the gates came off again


def test_sublayer_ablation_switches_off_every_head_or_neuron(tiny_classifier):
    """The blunt ablation of chapter 2: all heads off equals an attention output of zero, all FFN neurons off
    equals an FFN output of its bias only; the model is unchanged afterwards."""
    batch = padded_batch([7, 5, 3], [0, 1, 1])
    inputs = {k: v for k, v in batch.items() if k != "labels"}

    def logits(m):
        with torch.no_grad():
            return {"logits": m(**inputs).logits.clone()}

    before = logits(tiny_classifier)["logits"]
    rows = sublayer_ablation(tiny_classifier, logits)
    assert [r["ablation"] for r in rows] == ["dense", "all-heads-off", "all-ffn-off"]
    assert torch.equal(rows[0]["logits"], before) and torch.equal(logits(tiny_classifier)["logits"], before)
    no_heads, no_ffn = [copy.deepcopy(tiny_classifier) for _ in range(2)]
    with torch.no_grad():
        for layer in no_heads.transformer.layer:
            layer.rel_attn.o.zero_()
        for layer in no_ffn.transformer.layer:
            layer.ff.layer_2.weight.zero_()
    assert torch.allclose(rows[1]["logits"], logits(no_heads)["logits"], atol=1e-5)
    assert torch.allclose(rows[2]["logits"], logits(no_ffn)["logits"], atol=1e-5)
    assert (rows[1]["logits"] - before).abs().max() > 1e-6 and (rows[2]["logits"] - before).abs().max() > 1e-6
