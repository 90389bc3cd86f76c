"""Hidden-state alignment: teach the mapped XLNet what BERT's absolute positions gave it.

The mapping (``warmstart.py``) copies every tensor BERT and XLNet share, but BERT's absolute position embeddings
and its value / output biases have no place in XLNet, and XLNet's relative-position parts start at zero. On the
pinned MiniLM the mapped XLNet therefore computes BERT *without word order*. Alignment trains the XLNet student,
before any permutation-LM step, to reproduce the source BERT's hidden states layer by layer on training text:
the layer-wise (hidden-state) distillation of TinyBERT (Jiao et al. 2020, sec. 3.1, the hidden-states loss) and
CoFi (Xia et al. 2022, sec. 3.3), with teacher and student of the same width so no projection ``W_h`` is needed.

Both models read the same text in their own order: BERT ``[CLS] x [SEP]``, XLNet ``x <sep> <cls>`` (left padded).
The shared WordPiece vocabulary gives the same ids; :func:`aligned_batch` pairs every XLNet position with the BERT
position of the same token, so XLNet's last token (``<cls>``, what its summary reads) learns BERT's ``[CLS]``
state (what BERT's pooler reads). The loss of layer ``l`` is the fraction of variance unexplained,

    FVU_l = sum_t ||h^S_{l,t} - h^T_{l,t}||^2 / sum_t ||h^T_{l,t} - mean_t h^T_{l,t}||^2,

over the real tokens ``t`` of the batch; the objective is its mean over layers ``1..L`` (layer 0, the
embeddings, cannot agree: BERT adds positions there, XLNet cannot).
"""
from __future__ import annotations

import random
import time

import torch
from transformers import BertModel

from .warmstart import is_fresh
from ..config import UserError


def source_bert(state: dict, bert_config):
    """The source ``BertModel`` (no pooler) in eval mode, the alignment's teacher; ``state`` without ``bert.``."""
    teacher = BertModel(bert_config, add_pooling_layer=False)
    teacher.load_state_dict({k: v for k, v in state.items() if not k.startswith("pooler.")}, strict=False)
    return teacher.eval()


def aligned_batch(tokenizer, texts: list[str], max_len: int) -> dict:
    """Tokenize ``texts`` for both models. Returns tensors ``(B, L)``: ``student_ids``, ``student_types``,
    ``student_mask`` (XLNet's ``x <sep> <cls>``, left padded), ``teacher_ids``, ``teacher_mask``
    (BERT's ``[CLS] x [SEP]``, right padded) and ``order``: the teacher position of each student position
    (padding points at 0 and is masked). Raises ``UserError`` if the tokenizer does not end sequences with
    ``<sep> <cls>`` (alignment needs ``warmstart.xlnet_tokenizer``)."""
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    enc = [tokenizer(t, truncation=True, max_length=max_len) for t in texts]
    if any(e["input_ids"][-2:] != [sep, cls] for e in enc):
        raise UserError("alignment needs XLNet's conventions (sequences ending <sep> <cls>): "
                        "use warmstart.xlnet_tokenizer")
    width = max(len(e["input_ids"]) for e in enc)
    out = {k: torch.zeros(len(enc), width, dtype=torch.long)
           for k in ("student_ids", "student_types", "student_mask", "teacher_ids", "teacher_mask", "order")}
    for b, e in enumerate(enc):
        ids, n = e["input_ids"], len(e["input_ids"])
        s = slice(width - n, width)
        out["student_ids"][b, s] = torch.tensor(ids)
        out["student_types"][b, s] = torch.tensor(e["token_type_ids"])
        out["student_mask"][b, s] = 1
        out["teacher_ids"][b, :n] = torch.tensor([cls, *ids[:-2], sep])
        out["teacher_mask"][b, :n] = 1
        out["order"][b, s] = torch.tensor([*range(1, n - 1), n - 1, 0])   # x.. <- 1..n-2, <sep> <- n-1, <cls> <- 0
    return out


def layer_fvu(teacher, student, batch: dict):
    """Per-layer fraction of variance unexplained, a tensor ``(L,)`` (see the module docstring).

    ``teacher``: a ``BertModel``; ``student``: an ``XLNetModel`` (or an ``XLNetLMHeadModel``'s
    ``transformer``) of the same depth and width; ``batch``: :func:`aligned_batch`. Gradients flow into the
    student only."""
    with torch.no_grad():
        target = teacher(input_ids=batch["teacher_ids"], attention_mask=batch["teacher_mask"],
                         output_hidden_states=True).hidden_states
    hidden = student(input_ids=batch["student_ids"], token_type_ids=batch["student_types"],
                     attention_mask=batch["student_mask"], output_hidden_states=True).hidden_states
    if len(hidden) != len(target):
        raise ValueError(f"student has {len(hidden) - 1} layers, teacher {len(target) - 1}")
    real = batch["student_mask"].bool()
    order = batch["order"].unsqueeze(-1)
    fvu = []
    for h, t in zip(hidden[1:], target[1:]):
        t = torch.gather(t, 1, order.expand(-1, -1, t.shape[-1]))[real]
        fvu.append(((h[real] - t) ** 2).sum() / ((t - t.mean(0)) ** 2).sum())
    return torch.stack(fvu)


def heldout_fvu(teacher, student, batches: list[dict]) -> list[float]:
    """Per-layer FVU averaged over held-out ``batches`` (eval mode, no gradients)."""
    was = student.training
    student.eval()
    with torch.no_grad():
        fvu = torch.stack([layer_fvu(teacher, student, b) for b in batches]).mean(0)
    student.train(was)
    return [float(x) for x in fvu]


def align(lm, teacher, tokenizer, texts: list[str], heldout: list[str], *, steps: int, batch: int, max_len: int,
          lr: float, fresh_lr: float, warmup_ratio: float = 0.06, seed: int = 0, progress: bool = False) -> dict:
    """Train ``lm`` (the mapped ``XLNetLMHeadModel``) in place for ``steps`` AdamW steps of ``batch`` random
    ``texts`` on the mean of :func:`layer_fvu`; the fresh parts (``warmstart.FRESH_PARAMETERS``) at
    ``fresh_lr``, the mapped tensors at ``lr``, linear warm-up and decay, gradients clipped at norm 1.

    Returns ``{"steps", "seconds", "fvu_before", "fvu_after", "loss_curve"}``: per-layer FVU on ``heldout``
    texts (never the evaluation splits) before and after, and ``[step, loss]`` every 10 steps.
    """

    if steps < 0 or batch < 1:
        raise UserError("alignment steps must be >= 0 and its batch >= 1")
    student, rng = lm.transformer, random.Random(seed)
    held = [aligned_batch(tokenizer, heldout[i:i + 64], max_len) for i in range(0, len(heldout), 64)]
    before = heldout_fvu(teacher, student, held)
    groups = {True: [], False: []}
    for name, p in lm.named_parameters():
        if name.startswith("transformer.") and p.requires_grad:
            groups[is_fresh(name)].append(p)
    opt = torch.optim.AdamW([{"params": groups[True], "lr": fresh_lr}, {"params": groups[False], "lr": lr}],
                            weight_decay=0.0)
    warm = max(1, round(warmup_ratio * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * (steps - s) / steps)
    curve, start = [], time.perf_counter()
    student.train()
    for step in range(steps):
        loss = layer_fvu(teacher, student, aligned_batch(tokenizer, rng.sample(texts, batch), max_len)).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 10 == 0 or step == steps - 1:
            curve.append([step + 1, loss.item()])
            if progress:
                print(f"align step {step + 1}/{steps}: FVU {loss.item():.3f}", flush=True)
    seconds = time.perf_counter() - start
    return {"steps": steps, "seconds": seconds, "fvu_before": before, "fvu_after": heldout_fvu(teacher, student, held),
            "loss_curve": curve}
