"""Knowledge distillation from a fine-tuned teacher into the classifier being trained (Hinton et al. 2015).

The student minimises (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network", Sec. 2)

    L = (1 - alpha) * CE(y, z_s) + alpha * T^2 * KL( softmax(z_t / T) || softmax(z_s / T) )

with student logits ``z_s``, teacher logits ``z_t``, temperature ``T`` (the ``T^2`` keeps the soft term's
gradient on the scale of the hard one) and mixing weight ``alpha``. CoFi (Xia et al. 2022) prunes with a
distillation term too. Here the teacher is the warm start's source fine-tuned as BERT (``source-bert``): its
logits on the training examples are computed once (:func:`teacher_logits`) and ride along with each example.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from transformers import AutoModelForSequenceClassification, Trainer

from .data import load_tokenizer
from ..xlnet.modeling import load_pretrained

TEACHER_COLUMN = "teacher_logits"


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, alpha: float,
                      temperature: float) -> torch.Tensor:
    """Hinton et al. (2015)'s loss above; ``student`` / ``teacher``: ``(batch, classes)`` logits, ``labels``:
    ``(batch,)``. ``alpha = 0`` is plain cross-entropy."""
    hard = F.cross_entropy(student, labels)
    if alpha == 0:
        return hard
    t = temperature
    soft = F.kl_div(F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1), log_target=True,
                    reduction="batchmean") * t * t
    return (1 - alpha) * hard + alpha * soft


class DistillationTrainer(Trainer):
    """A ``transformers.Trainer`` whose loss is :func:`distillation_loss`; each batch carries the teacher's
    logits in the ``teacher_logits`` column (the training arguments need ``remove_unused_columns=False``)."""
    def __init__(self, *args, alpha: float = 0.5, temperature: float = 2.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha, self.temperature = alpha, temperature

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if TEACHER_COLUMN not in inputs:          # evaluation: the plain loss
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        teacher = inputs.pop(TEACHER_COLUMN)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = distillation_loss(outputs.logits, teacher.to(outputs.logits), labels, self.alpha, self.temperature)
        return (loss, outputs) if return_outputs else loss


class WithTeacher:
    """Wraps a collator (``DataCollatorWithPadding``): the ``teacher_logits`` of each example are taken out before
    padding (the tokenizer's ``pad`` keeps only model inputs) and put back as a ``(batch, classes)`` tensor."""
    def __init__(self, collator):
        self.collator = collator

    def __call__(self, features):
        if TEACHER_COLUMN not in features[0]:     # evaluation splits carry no teacher
            return self.collator(features)
        logits = torch.tensor([f.pop(TEACHER_COLUMN) for f in features], dtype=torch.float32)
        batch = self.collator(features)
        batch[TEACHER_COLUMN] = logits
        return batch


def teacher_logits(run_dir: Path | str, texts: list[str], max_len: int, batch: int = 64) -> np.ndarray:
    """Logits ``(len(texts), classes)`` of the classifier saved in ``run_dir`` (its own tokenizer), in order."""
    tok = load_tokenizer(run_dir)
    model = load_pretrained(AutoModelForSequenceClassification, run_dir).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            enc = tok(texts[i:i + batch], truncation=True, max_length=max_len, padding=True, return_tensors="pt")
            out.append(model(**enc).logits.float().numpy())
    return np.concatenate(out)
