"""Distillation (Hinton et al. 2015): the loss's defining properties and a real Trainer run with teacher logits."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from transformers import XLNetForSequenceClassification

from conftest import tiny_config
from xlprune_lib.train.distill import distillation_loss
from xlprune_lib.train.finetune import tokenize_split, train_classifier


def test_loss_is_cross_entropy_at_alpha_zero_and_zero_when_student_is_teacher_and_right():
    torch.manual_seed(0)
    s, t = torch.randn(8, 2), torch.randn(8, 2)
    y = torch.randint(0, 2, (8,))
    assert torch.allclose(distillation_loss(s, t, y, 0.0, 2.0), torch.nn.functional.cross_entropy(s, y))
    # pure soft term: zero exactly when the student copies the teacher, positive otherwise
    assert distillation_loss(t, t, y, 1.0, 2.0).abs() < 1e-6
    assert distillation_loss(s, t, y, 1.0, 2.0) > 0.01
    # the soft term pulls the student towards the teacher
    s = s.clone().requires_grad_()
    distillation_loss(s, t, y, 1.0, 3.0).backward()
    step = s - 0.5 * s.grad
    assert distillation_loss(step, t, y, 1.0, 3.0) < distillation_loss(s.detach(), t, y, 1.0, 3.0)


def test_a_student_trained_on_teacher_logits_follows_the_teacher(smoke, small_tokenizer, rows):
    """With alpha = 1 the labels are ignored: a teacher that always says "negative" makes the student say it."""
    from xlprune_lib.train.data import load_offline

    data = load_offline(max_examples=96, rows=rows)
    enc = {k: tokenize_split(data[k], small_tokenizer, 32) for k in ("train", "validation")}
    teacher = np.tile([[4.0, -4.0]], (len(data["train"]), 1))
    profile = dataclasses.replace(smoke, distill_alpha=1.0, distill_temperature=1.0, ft_lr=3e-3, ft_batch=16)
    torch.manual_seed(0)
    model = XLNetForSequenceClassification(tiny_config(vocab_size=len(small_tokenizer), num_labels=2,
                                                       pad_token_id=small_tokenizer.pad_token_id))
    trainer, _ = train_classifier(model, small_tokenizer, enc, profile, 0, epochs=3, progress=False,
                                  teacher=teacher)
    pred = trainer.predict(enc["validation"]).predictions.argmax(-1)
    assert (pred == 0).mean() > 0.95
    assert trainer.state.global_step == 3 * int(np.ceil(len(data["train"]) / 16))
