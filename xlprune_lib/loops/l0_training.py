"""Training the L0 objective: the ``transformers`` Trainer with the hard-concrete penalty (``prune/l0.py``).

The gates, their expected L0 norm and how a gated model becomes a pruned one are ``prune/l0.py``; training
them with the weights is here, beside the other loops that train (Louizos et al. 2018, eq. 1 with eq. 12; the
Lagrangian of Wang et al. 2020, eq. 6, and CoFi, Xia et al. 2022, eq. 4).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from torch.optim.lr_scheduler import LambdaLR
from transformers import DataCollatorWithPadding, Trainer

from .. import validate
from ..prune.l0 import L0Gates, attach
from ..train.runs import quiet_trainer, training_args


class L0Trainer(Trainer):
    """The ``transformers`` Trainer with the L0 penalty added to the task loss.

    ``lam``: fixed trade-off (``loss + lam * E[L0] / N``). ``target``: expected sparsity to reach, through the
    Lagrangian whose multipliers take a gradient-*ascent* step of size ``dual_lr`` after every step, with the
    target ramped up linearly over ``target_warmup`` of the training steps (CoFi). ``lambda_2`` starts at
    ``quadratic_init`` (an augmented Lagrangian): with AdamW's sign-like steps on ``log_alpha``, a pure integral
    multiplier overshoots and oscillates around the target, while the quadratic term pulls back as soon as
    the sparsity crosses it. ``log_alpha`` forms its own optimizer group with a constant learning rate
    ``l0_lr``, no momentum and no weight decay. Expected
    L0, expected sparsity and lambda are logged with the loss (``state.log_history``, progress bar), and every
    step is kept in ``l0_history``.
    """
    def __init__(self, *args, lam: float | None = None, target: float | None = None, l0_lr: float = 0.1,
                 target_warmup: float = 0.5, dual_lr: float = 1.0, quadratic_init: float = 10.0, **kwargs):
        super().__init__(*args, **kwargs)
        validate.lam_or_target(lam, target)
        self.lam, self.target, self.l0_lr, self.target_warmup = lam, target, l0_lr, target_warmup
        self.dual_lr = dual_lr
        self.gates: L0Gates = self.model.l0_gates
        # lambda_1, lambda_2: updated by dual ascent, not by AdamW; lambda_2 may start positive (augmented Lagrangian)
        self.multipliers = torch.tensor([0.0, float(quadratic_init)])
        self._gap = 0.0
        self.l0_history: list[dict] = []
        self._pending: list[dict] = []

    def create_optimizer(self, model=None):
        gate_ids = {id(p) for p in self.gates.all_log_alpha()}
        decay = self.get_decay_parameter_names(self.model)
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad and id(p) not in gate_ids]
        groups = [
            {"params": [p for n, p in named if n in decay], "weight_decay": self.args.weight_decay},
            {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
            # no momentum on the gates: the sparsity then follows the penalty's sign within a step, instead of
            # overshooting the target by what momentum carries
            {"params": self.gates.all_log_alpha(), "weight_decay": 0.0, "lr": self.l0_lr, "betas": (0.0, 0.999)},
        ]
        self.optimizer = torch.optim.AdamW(groups, lr=self.args.learning_rate)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """The profile's schedule (linear with warmup) for the model; a constant rate for gates and multipliers,
        which must keep moving until the last step for the sparsity to settle on its target."""
        optimizer = optimizer or self.optimizer
        warmup = self.args.get_warmup_steps(num_training_steps)

        def linear(step):
            if step < warmup:
                return step / max(1, warmup)
            return max(0.0, (num_training_steps - step) / max(1, num_training_steps - warmup))

        self.lr_scheduler = LambdaLR(optimizer, [linear, linear, lambda step: 1.0])
        return self.lr_scheduler

    def current_target(self) -> float:
        total = max(1, self.state.max_steps)
        ramp = max(1.0, self.target_warmup * total)
        return self.target * min(1.0, (self.state.global_step + 1) / ramp)

    def penalty(self, expected: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The L0 term for the current expected sparsity ``expected`` (differentiable in ``log_alpha``)."""
        if self.lam is not None:
            kept = 1.0 - expected
            return self.lam * kept, {"lambda": self.lam}
        t = self.current_target()
        l1, l2 = (float(v) for v in self.multipliers)
        gap = expected - t
        self._gap = float(gap.detach())
        return l1 * gap + l2 * gap ** 2, {"lambda_1": l1, "lambda_2": l2, "target": t}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        expected = self.gates.expected_sparsity()   # once per step: with weight gates it spans every weight
        extra, info = self.penalty(expected)
        sparsity = float(expected.detach())
        row = {"task_loss": float(loss.detach()), "expected_l0": (1.0 - sparsity) * self.gates.total,
               "expected_sparsity": sparsity, "penalty": float(extra.detach()), **info}
        self._pending.append(row)
        total = loss + extra
        return (total, outputs) if return_outputs else total

    def training_step(self, *args, **kwargs):
        out = super().training_step(*args, **kwargs)
        if self.target is not None:
            # dual ascent (Wang et al. 2020, eq. 6): the multipliers climb the Lagrangian's gradient, (gap, gap^2)
            self.multipliers += self.dual_lr * torch.tensor([self._gap, self._gap ** 2])
        if self._pending:
            self.l0_history.append({"step": self.state.global_step + 1, **self._pending[-1]})
            self._pending.clear()
        return out

    def log(self, logs: dict, *args, **kwargs):
        if self.l0_history and "loss" in logs:
            last = self.l0_history[-1]
            logs.update({k: round(v, 4) if isinstance(v, float) else v for k, v in last.items() if k != "step"})
        super().log(logs, *args, **kwargs)


def train_l0(model, tokenizer, enc: dict, profile, seed: int, granularity: str, lam: float | None = None,
             target: float | None = None, epochs: float = 1.0, progress: bool = True, **l0_kwargs):
    """Attach gates to ``model``, train weights and gates together with :class:`L0Trainer`, leave the gates on.

    Returns ``(trainer, seconds)``; call ``l0.prune_with_gates`` to turn the gates into a smaller model.
    """


    attach(model, granularity)
    with tempfile.TemporaryDirectory() as tmp:
        args = training_args(profile, Path(tmp), seed, epochs=epochs, batch=profile.ft_batch, lr=profile.ft_lr,
                             progress=progress, train_sampling_strategy="group_by_length")
        trainer = L0Trainer(model=model, args=args, train_dataset=enc["train"],
                            data_collator=DataCollatorWithPadding(tokenizer), lam=lam, target=target, **l0_kwargs)
        quiet_trainer(trainer, progress)
        start = time.perf_counter()
        trainer.train()
        return trainer, time.perf_counter() - start
