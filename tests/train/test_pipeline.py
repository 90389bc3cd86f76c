"""The smoke profile end to end on the real corpus: PLM pretraining, fine-tuning, caching, determinism."""
import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from xlprune_lib.train import finetune as ft_mod
from xlprune_lib.train import pretrain as pre_mod
from xlprune_lib.config import UserError

pytestmark = pytest.mark.slow


def _metrics(d):
    return json.loads((d / "metrics.json").read_text())


def test_pretrain_writes_a_loadable_lm_and_metrics(smoke_runs):
    from transformers import XLNetLMHeadModel

    pre = smoke_runs["pre"]
    m = _metrics(pre)
    for key in ("plm_loss_first", "plm_loss_last", "train_seconds", "eval_loss_before", "eval_loss_after",
                "git_commit", "versions", "config"):
        assert key in m
    assert m["eval_loss_after"] < m["eval_loss_before"] - 0.5  # it learned something measurable
    assert m["plm_loss_last"] < m["plm_loss_first"]
    model = XLNetLMHeadModel.from_pretrained(pre)
    assert model.config.n_layer == 2 and model.config.d_model == 64
    assert (pre / "model.safetensors").is_file()


def test_finetune_writes_a_loadable_classifier_and_metrics(smoke_runs):
    from transformers import AutoTokenizer, XLNetForSequenceClassification

    ft = smoke_runs["ft"]
    m = _metrics(ft)
    for key in ("validation_accuracy", "test_accuracy", "majority_baseline", "train_seconds"):
        assert isinstance(m[key], float)
    assert 0 <= m["test_accuracy"] <= 1 and 0.3 < m["majority_baseline"] < 0.8
    assert m["sizes"] == {"train": 300, "validation": 60, "test": 60}
    model = XLNetForSequenceClassification.from_pretrained(ft)
    tok = AutoTokenizer.from_pretrained(ft)
    logits = model(**tok(["a wonderful film"], return_tensors="pt")).logits
    assert logits.shape == (1, 2)
    # the reported test accuracy is what the saved model really scores
    data = __import__("xlprune_lib.train.data", fromlist=["load_task"]).load_task("rt", 300, 0)
    again = ft_mod.evaluate(model.eval(), tok, data["test"], max_len=48)
    assert again["accuracy"] == pytest.approx(m["test_accuracy"])


def test_second_run_reuses_the_cached_result(smoke_runs, smoke):
    pre = smoke_runs["pre"]
    stamp = (pre / "model.safetensors").stat().st_mtime_ns
    assert pre_mod.pretrain(smoke, pre, seed=0, progress=False) == pre
    assert (pre / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_different_config_never_overwrites_a_result(smoke_runs, smoke):
    pre, before = smoke_runs["pre"], (smoke_runs["pre"] / "metrics.json").read_text()
    with pytest.raises(UserError, match="different run"):
        pre_mod.pretrain(smoke, pre, seed=1, progress=False)
    assert (pre / "metrics.json").read_text() == before


def test_same_seed_same_numbers(smoke, tmp_path):
    """Same seed and config on the same machine: the same loss curve and the same weights, bit for bit; another
    seed: another curve. A third of the smoke corpus for half an epoch keeps it to seconds (the check is the same)."""
    short = dataclasses.replace(smoke, max_examples=100, plm_epochs=0.5)
    first, again = (pre_mod.pretrain(short, tmp_path / name, seed=0, progress=False) for name in ("a", "b"))
    a, b = _metrics(first), _metrics(again)
    assert len(a["loss_curve"]) > 3
    assert a["loss_curve"] == b["loss_curve"] and a["eval_loss_after"] == b["eval_loss_after"]
    wa, wb = load_file(first / "model.safetensors"), load_file(again / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    other = pre_mod.pretrain(short, tmp_path / "c", seed=1, progress=False)
    assert _metrics(other)["loss_curve"] != a["loss_curve"]


def test_plm_blocks(small_tokenizer):
    tok = small_tokenizer
    blocks = pre_mod.plm_blocks(["one short review", "and another one, a little longer than that"] * 20, tok, 16)
    assert blocks and all(len(b) == 16 and b[-2:] == [tok.sep_token_id, tok.cls_token_id] for b in blocks)
    with pytest.raises(ValueError):
        pre_mod.plm_blocks(["x"], tok, 15)


def test_permutation_example_never_leaks_a_target(small_tokenizer):
    ex = pre_mod.permutation_example(small_tokenizer, "the plot is thin but the acting is superb and moving",
                                     block=16, seed=3, plm_probability=0.3)
    perm, pred = ex["perm_mask"], ex["predicted"]
    assert pred.any()
    for i in np.flatnonzero(pred):
        assert perm[i, i] == 1               # a predicted token cannot see itself
        assert ex["input_tokens"][i] == "<mask>"
    assert not perm[:, ~pred].any()          # context tokens are visible to everyone
    assert np.array_equal(ex["target_mapping"], np.eye(16))


def test_matthews_and_majority():
    y = np.array([0, 1, 1, 0, 1])
    assert ft_mod.matthews_corrcoef(y, y) == pytest.approx(1.0)
    assert ft_mod.matthews_corrcoef(y, 1 - y) == pytest.approx(-1.0)
    assert ft_mod.matthews_corrcoef(y, np.ones(5, int)) == 0.0
    assert ft_mod.majority_baseline([1, 1, 0], [1, 0, 0, 0]) == 0.25


def test_partial_prediction_keeps_the_loss_and_shrinks_the_query_stream(small_tokenizer, rows):
    """Cutting target_mapping to the predicted positions (XLNet's num_predict) gives the same PLM loss as the
    collator's full identity mapping, with a query stream a fraction of the length."""
    from transformers import DataCollatorForPermutationLanguageModeling, XLNetLMHeadModel

    from conftest import tiny_config

    blocks = pre_mod.plm_blocks([r["text"] for r in rows[:300]], small_tokenizer, 32)[:8]
    full = DataCollatorForPermutationLanguageModeling(tokenizer=small_tokenizer, plm_probability=1 / 6,
                                                      max_span_length=5)
    torch.manual_seed(3)
    a = full([{"input_ids": b} for b in blocks])
    torch.manual_seed(3)
    b = pre_mod.PartialPrediction(full)([{"input_ids": b} for b in blocks])
    assert torch.equal(a["perm_mask"], b["perm_mask"]) and torch.equal(a["input_ids"], b["input_ids"])
    k = b["target_mapping"].shape[1]
    assert k == int((a["labels"] != -100).sum(1).max()) and k < 32 // 2
    assert (b["labels"] != -100).sum() == (a["labels"] != -100).sum()
    torch.manual_seed(0)
    model = XLNetLMHeadModel(tiny_config(vocab_size=len(small_tokenizer), pad_token_id=small_tokenizer.pad_token_id))
    with torch.no_grad():
        la = model.eval()(**a).loss
        lb = model(**b).loss
    assert torch.allclose(la, lb, atol=1e-5)
