"""The parameter table and the per-layer report: parameters, nonzeros, heads, neurons, FLOPs per token and sizes,
counted from the tensors."""
import copy
import json

import pytest
import torch
from conftest import tiny_config
from torch.nn.utils import prune

from xlprune_lib import cli
from xlprune_lib.measure import report
from xlprune_lib.prune import importance
from xlprune_lib.prune.select import WeightSparsity
from xlprune_lib.xlnet import masks, surgery
from xlprune_lib.xlnet.structure import XLNetStructure

L, D, H, DH, DI, V = 2, 32, 4, 8, 64, 120


def _magnitude_prune(model, target):
    """Mask the lowest-magnitude weights until ``target`` of the prunable set is masked; the measured zero fraction."""
    WeightSparsity(target)(model, importance.magnitude(model)).apply_masks(model)
    return masks.weight_sparsity(XLNetStructure(model).prunable())


@pytest.fixture
def model():
    from transformers import XLNetForSequenceClassification

    torch.manual_seed(0)
    m = XLNetForSequenceClassification(tiny_config(num_labels=2)).eval()
    with torch.no_grad():  # XLNet initialises biases to exactly 0; make every entry nonzero so zeros mean pruned
        for p in m.parameters():
            p.copy_(torch.where(p >= 0, 1.0, -1.0) * (p.abs() + 0.01))
    return m


def expected_flops(heads, inner, seq_len, d_model=D, d_head=DH):
    """The docstring's formula, written out again: q,k,v,o + r over 2T positions + AC, BD, AV + FFN."""
    proj = 4 * 2 * d_model * heads * d_head
    rel = 2 * (2 * seq_len) * d_model * heads * d_head // seq_len
    scores = 3 * 2 * seq_len * heads * d_head
    return proj + rel + scores + 2 * d_model * inner * 2


def test_unpruned_counts_every_parameter(model):
    rep = report.layer_report(model)
    per_layer = sum(layer[p]["params"] for layer in rep["layers"] for p in ("attention", "ffn", "layer_norm"))
    total = sum(p.numel() for p in model.parameters())
    assert per_layer + rep["totals"]["outside_layers"]["params"] == total == rep["totals"]["model"]["params"]
    assert rep["totals"]["outside_layers"]["params"] == V * D + D + (D * D + D) + (D * 2 + 2)
    assert [layer["heads"] for layer in rep["layers"]] == [H] * L
    assert [layer["neurons"] for layer in rep["layers"]] == [DI] * L
    assert rep["layers"][0]["attention"]["params"] == 5 * D * H * DH + 5 * H * DH
    assert rep["totals"]["prunable"]["params"] == L * (5 * D * H * DH + 2 * D * DI)
    assert rep["totals"]["prunable"]["sparsity"] == rep["totals"]["model"]["sparsity"] == 0
    assert rep["layers"][0]["flops_per_token"] == rep["layers"][0]["flops_per_token_sparse"] == \
        expected_flops(H, DI, 128)
    assert rep["seq_len"] == 128


def test_zeros_of_a_fresh_init_are_counted():
    from transformers import XLNetForSequenceClassification

    fresh = XLNetForSequenceClassification(tiny_config(num_labels=2))
    rep = report.layer_report(fresh)
    nonzero = sum(int((p != 0).sum()) for p in fresh.parameters())
    assert rep["totals"]["model"]["nonzero"] == nonzero < rep["totals"]["model"]["params"]  # zero biases
    assert rep["totals"]["prunable"]["sparsity"] == 0


def test_lm_head_tied_weights_once():
    from transformers import XLNetLMHeadModel

    lm = XLNetLMHeadModel(tiny_config())
    rep = report.layer_report(lm, seq_len=16)
    assert rep["totals"]["model"]["params"] == sum(p.numel() for p in lm.parameters())
    assert rep["sizes"]["dense_bytes"] == 4 * sum(p.numel() for p in lm.parameters())


def test_masked_weights_are_counted_as_masked(model):
    layer = model.transformer.layer[0]
    prune.l1_unstructured(layer.rel_attn, "q", amount=0.3)
    prune.l1_unstructured(layer.ff.layer_1, "weight", amount=100)
    with torch.no_grad():
        layer.ff.layer_2.bias[:3] = 0  # exact zeros count too
    rep = report.layer_report(model)
    attn_zeros = int((layer.rel_attn.q == 0).sum())
    assert attn_zeros == round(0.3 * D * H * DH)
    assert rep["layers"][0]["attention"]["nonzero"] == rep["layers"][0]["attention"]["params"] - attn_zeros
    assert rep["layers"][0]["ffn"]["nonzero"] == rep["layers"][0]["ffn"]["params"] - 100 - 3
    assert rep["totals"]["model"]["params"] == sum(p.numel() for p in model.parameters())
    assert rep["layers"][0]["flops_per_token"] - rep["layers"][0]["flops_per_token_sparse"] == \
        2 * attn_zeros + 2 * 100

    measured = _magnitude_prune(model, 0.5)
    rep = report.layer_report(model)
    pairs = XLNetStructure(model).prunable()
    zeros = sum(int((masks.current_weight(m, n) == 0).sum()) for m, n in pairs)
    assert rep["totals"]["prunable"]["nonzero"] == rep["totals"]["prunable"]["params"] - zeros
    assert rep["totals"]["prunable"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert rep["totals"]["prunable"]["sparsity"] == pytest.approx(measured)
    assert 0 < rep["totals"]["model"]["sparsity"] < rep["totals"]["prunable"]["sparsity"]


def test_surgery_shapes_and_flops(model):
    before = report.layer_report(model)
    surgery.prune_heads(model, {0: [0, 1]})
    surgery.prune_neurons(model, {1: list(range(10))})
    after = report.layer_report(model)
    assert [layer["heads"] for layer in after["layers"]] == [2, 4]
    assert [layer["neurons"] for layer in after["layers"]] == [64, 54]
    drop0 = before["layers"][0]["flops_per_token"] - after["layers"][0]["flops_per_token"]
    assert drop0 == 4 * 2 * D * 2 * DH + 2 * (2 * 128) * D * 2 * DH // 128 + 3 * 2 * 128 * 2 * DH
    drop1 = before["layers"][1]["flops_per_token"] - after["layers"][1]["flops_per_token"]
    assert drop1 == 2 * D * 10 * 2
    assert after["totals"]["flops_per_token"] == expected_flops(2, DI, 128) + expected_flops(H, 54, 128)
    assert after["totals"]["model"]["params"] == sum(p.numel() for p in model.parameters())


def test_sparse_bytes(model):
    dense = report.layer_report(model)["sizes"]
    assert dense["sparse_bytes"] == dense["dense_bytes"] == 4 * sum(p.numel() for p in model.parameters())
    _magnitude_prune(model, 0.9)
    sizes = report.layer_report(model)["sizes"]
    assert sizes["dense_bytes"] == dense["dense_bytes"]  # masks are not stored twice
    assert sizes["sparse_bytes"] < 0.6 * sizes["dense_bytes"]


def test_format_table(model):
    rep = report.layer_report(model, seq_len=8)
    rep["sizes"]["file_bytes"] = 12345
    text = report.format_layer_report(rep)
    assert len(text.splitlines()) == 1 + L + 4
    for word in ("heads", "neurons", "prunable set", "whole model", "FLOPs/token", "files 0.012 MB"):
        assert word in text


def test_seq_len_must_be_positive(model):
    with pytest.raises(report.UserError, match="seq-len"):
        report.layer_report(model, seq_len=0)


def test_cli_report(model, tmp_path, capsys):
    model.save_pretrained(str(tmp_path), safe_serialization=True)
    assert cli.main(["report", "--model", str(tmp_path), "--json", "--seq-len", "32"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert {"layers", "totals", "sizes", "seq_len", "model", "architecture"} <= set(got)
    assert got["seq_len"] == 32 and got["architecture"] == "XLNetForSequenceClassification"
    assert got["sizes"]["file_bytes"] == (tmp_path / "model.safetensors").stat().st_size > 0
    assert got["layers"] == report.layer_report(model, seq_len=32)["layers"]
    assert cli.main(["report", "--model", str(tmp_path)]) == 0
    assert "whole model" in capsys.readouterr().out


@pytest.mark.parametrize("args, fragment", [(["--seq-len", "0"], "seq-len"), ([], "does not exist")])
def test_cli_report_user_errors(args, fragment, tmp_path, capsys):
    (tmp_path / "m").mkdir()
    folder = tmp_path / ("m" if args else "nope")
    assert cli.main(["report", "--model", str(folder), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0] and "Traceback" not in err[0]


def test_cli_report_help(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["report", "--help"])
    assert exc.value.code == 0 and "--seq-len" in capsys.readouterr().out

def test_breakdown_counts_every_parameter_once(tiny_classifier):
    table = report.parameter_breakdown(tiny_classifier)
    assert table["total"]["params"] == sum(p.numel() for p in tiny_classifier.parameters())
    c = table["components"]
    L, d, H, dh, di, V = 2, 32, 4, 8, 64, 120
    for proj in "qkvor":
        assert c[f"attention.{proj}"]["params"] == L * d * H * dh
    assert c["relative_biases"]["params"] == L * (3 * H * dh + 2 * H * dh)
    assert c["ffn"]["params"] == L * (d * di + di + di * d + d)
    assert c["layer_norm"]["params"] == L * 2 * 2 * d
    assert c["embeddings"]["params"] == V * d + d  # word embedding + mask_emb
    assert c["head"]["params"] == (d * d + d) + (d * 2 + 2)


def test_nonzeros_are_counted_not_assumed(tiny_classifier):
    before = report.parameter_breakdown(tiny_classifier)["components"]["ffn"]
    with torch.no_grad():
        tiny_classifier.transformer.layer[0].ff.layer_1.weight[:10] = 0
    after = report.parameter_breakdown(tiny_classifier)["components"]["ffn"]
    assert after["params"] == before["params"]
    assert before["nonzero"] - after["nonzero"] == 10 * 32


def test_lm_head_tied_weights_counted_once():
    from transformers import XLNetLMHeadModel

    lm = XLNetLMHeadModel(tiny_config())
    table = report.parameter_breakdown(lm)
    assert lm.lm_loss.weight is lm.transformer.word_embedding.weight
    assert table["total"]["params"] == sum(p.numel() for p in lm.parameters())
    assert table["components"]["head"]["params"] == 120  # only the output bias is the LM head's own


def test_unknown_parameter_names_are_not_silently_dropped():
    with pytest.raises(ValueError):
        XLNetStructure.component_of("transformer.layer.0.new_thing.weight")


def test_prunable_target_reaches_a_whole_model_zero_fraction(model):
    """Chapter 2 compares a shortcut with magnitude pruning "to the same zero fraction" of the whole model; the
    prunable set is only part of the model, so the target handed to WeightSparsity must be converted (the chapter once
    passed the whole-model fraction straight through and got half of it)."""
    with torch.no_grad():                      # a few zeros outside the prunable set count as well
        model.transformer.word_embedding.weight[:3] = 0
    totals = report.layer_report(model)["totals"]
    share = totals["prunable"]["params"] / totals["model"]["params"]
    for wanted in (0.05, 0.2, share * 0.9):
        pruned = copy.deepcopy(model)
        _magnitude_prune(pruned, report.prunable_target(model, wanted))
        assert report.layer_report(pruned)["totals"]["model"]["sparsity"] == pytest.approx(wanted, abs=2e-3)
    assert report.prunable_target(model, 0.0) == 0.0 and report.prunable_target(model, 1.0) == 0.99
    with pytest.raises(ValueError, match="model_fraction"):
        report.prunable_target(model, 1.5)
