"""Chapter 2's measurements on copies of one model: the sublayer ablation switches whole sublayers off exactly
(the curves and the sensitivity scan are checked on live masks in test_live_masks.py)."""
import copy

import torch
from conftest import padded_batch

from xlprune_lib.loops.experiments import sublayer_ablation


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
