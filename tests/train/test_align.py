"""Hidden-state alignment (align.py): token pairing, exactness where the mapping is exact, and that it learns."""
from __future__ import annotations

import copy

import pytest
import torch

from xlprune_lib.train import align, warmstart
from xlprune_lib.config import UserError
from test_warmstart import mapped, random_bert

TEXTS = ["a warm and funny film .", "the plot never holds together , and the jokes fall flat",
         "unforgettable", "it is not the worst movie of the year , but it tries hard to be ."]


def bert_like(vocab: int, **kw):
    """A random 2-layer BERT over the real vocabulary (every bias random, see ``random_bert``)."""
    return random_bert(vocab=vocab, **kw)


def test_every_xlnet_position_is_paired_with_the_same_token_in_bert(real_tokenizer):
    b = align.aligned_batch(real_tokenizer, TEXTS, max_len=64)
    real = b["student_mask"].bool()
    paired = torch.gather(b["teacher_ids"], 1, b["order"])
    assert torch.equal(paired[real], b["student_ids"][real])
    # XLNet's last token is <cls>, BERT's first is [CLS]: the summary learns what BERT's pooler reads
    assert (b["student_ids"][:, -1] == real_tokenizer.cls_token_id).all()
    assert (b["teacher_ids"][:, 0] == real_tokenizer.cls_token_id).all()
    assert b["student_mask"].sum() == b["teacher_mask"].sum() == real.sum()
    assert (b["student_mask"][:, 0] == 0).any() and (b["teacher_mask"][:, -1] == 0).any()   # left vs right pad


def test_fvu_is_zero_where_the_mapping_is_exact_and_not_otherwise(real_tokenizer):
    b = align.aligned_batch(real_tokenizer, TEXTS, max_len=64)
    exact = bert_like(len(real_tokenizer))   # mean positions, no value/output biases: XLNet can hold it all
    xlnet, _ = mapped(exact)
    with torch.no_grad():
        fvu = align.layer_fvu(exact, xlnet.transformer, b)
    assert fvu.shape == (2,) and fvu.max() < 1e-8
    lossy = bert_like(len(real_tokenizer), positions="random", value_output_bias=True)
    xlnet, _ = mapped(lossy)
    with torch.no_grad():
        assert align.layer_fvu(lossy, xlnet.transformer, b).min() > 1e-2


def test_alignment_lowers_the_held_out_fvu_and_trains_the_fresh_parts(real_tokenizer, rows):
    torch.manual_seed(0)
    teacher = bert_like(len(real_tokenizer), positions="random", value_output_bias=True)
    lm, _ = mapped(teacher)
    r0 = copy.deepcopy(lm.transformer.layer[0].rel_attn.r.detach())
    texts = [r["text"] for r in rows[:200]]
    report = align.align(lm, teacher, real_tokenizer, texts, [r["text"] for r in rows[200:232]], steps=30, batch=8,
                         max_len=32, lr=1e-3, fresh_lr=1e-2, seed=0)
    assert len(report["fvu_before"]) == len(report["fvu_after"]) == 2
    assert sum(report["fvu_after"]) < 0.8 * sum(report["fvu_before"])
    assert not torch.equal(lm.transformer.layer[0].rel_attn.r, r0)
    assert report["loss_curve"][0][0] == 1 and report["loss_curve"][-1][0] == 30


def test_alignment_refuses_a_tokenizer_without_xlnet_conventions(minilm_folder):
    with pytest.raises(UserError, match="<sep> <cls>"):
        align.aligned_batch(warmstart.source_tokenizer(), TEXTS, max_len=64)
