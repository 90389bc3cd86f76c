"""What a score needs before it can be computed: labelled batches, or the fine-tuning that accumulates movement.

Scorers (``prune/importance.py``) are pure functions of a model and their inputs. Getting those inputs reads
data and trains, so it lives here, above ``prune/`` and ``train/``:

* :func:`score_batches`: padded training batches for the gradient, Taylor and Fisher scores;
* :class:`MovementCallback`: a ``transformers`` Trainer callback that accumulates movement ``S -= w g`` at
  every optimizer step (Sanh et al. 2020, "Movement Pruning", eq. 5), by ``importance.movement_step``;
* :func:`movement_finetune`: fine-tune for a number of steps with that callback;
* :func:`gather_inputs`: whichever of these a method needs, as the keyword arguments of ``importance.score``.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from transformers import DataCollatorWithPadding, Trainer, TrainerCallback

from ..config import UserError
from ..prune.importance import IMPORTANCES, movement_step, zero_movement
from ..prune.plan import named_weights
from ..train.finetune import tokenize_split
from ..train.runs import quiet_trainer, training_args


def score_batches(tokenizer, dataset, n_batches: int, batch_size: int, max_len: int, seed: int = 0) -> list[dict]:
    """``n_batches`` padded batches (with ``labels``) drawn without replacement from a ``text``/``label`` split."""
    n = min(len(dataset), n_batches * batch_size)
    enc = tokenize_split(dataset.shuffle(seed=seed).select(range(n)), tokenizer, max_len)
    collate = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    rows = [enc[i] for i in range(n)]
    return [dict(collate(rows[i:i + batch_size])) for i in range(0, n, batch_size)]


class MovementCallback(TrainerCallback):
    """Trainer callback accumulating movement scores ``S -= w * g`` at every optimizer step (Sanh et al. 2020).

    ``g`` is the gradient after clipping, read in ``on_pre_optimizer_step``; ``w`` the effective weight the
    forward pass used. ``scores``: weight ``Scores`` of ``model`` (zeros at the start), keyed by the plan's
    weight names.
    """
    def __init__(self, model):
        self.named = named_weights(model)
        self.scores = zero_movement(model)
        self.steps = 0

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        movement_step(self.named, self.scores)
        self.steps += 1


def movement_finetune(model, tokenizer, train, profile, steps: int, seed: int = 0, progress: bool = False,
                      lr: float | None = None):
    """Fine-tune ``model`` in place for ``steps`` optimizer steps and return the movement ``Scores`` gathered.

    The profile's fine-tuning learning rate, batch size and weight decay; the weights after these steps are
    the ones movement pruning then masks (Sanh et al. 2020 score and prune the weights being fine-tuned).
    Raises ``UserError`` for fewer than one step.
    """
    if steps < 1:
        raise UserError("movement scores are accumulated during fine-tuning: give at least one scoring step")
    callback = MovementCallback(model)
    with tempfile.TemporaryDirectory() as tmp:
        args = training_args(profile, Path(tmp), seed, epochs=1, batch=profile.ft_batch, lr=lr or profile.ft_lr,
                             progress=progress, max_steps=steps)
        trainer = Trainer(model=model, args=args, train_dataset=tokenize_split(train, tokenizer, profile.max_seq_len),
                          data_collator=DataCollatorWithPadding(tokenizer), callbacks=[callback])
        quiet_trainer(trainer, progress)
        trainer.train()
    model.eval()
    return callback.scores


def gather_inputs(model, method: str, tokenizer, train, profile, n_batches: int, score_steps: int, seed: int = 0,
                  lr: float | None = None, progress: bool = False, rank: int = 0, world: int = 1) -> dict:
    """What ``method`` needs before it can score: ``n_batches`` training batches (this rank's share of them,
    every ``world``-th from ``rank``), or for movement ``score_steps`` fine-tuning steps of ``model`` (in place,
    at ``lr``, default the profile's fine-tuning rate), as the keyword arguments of ``importance.score``. Raises
    ``UserError`` when the batches cannot be shared among the processes."""
    needs = IMPORTANCES[method].needs if method in IMPORTANCES else None
    if needs == "movement":
        movement = movement_finetune(model, tokenizer, train, profile, score_steps, seed, progress, lr=lr)
        return {"movement": movement, "seed": seed}
    if needs == "batches":
        if n_batches < world:
            raise UserError(f"--score-batches ({n_batches}) must be at least the number of processes")
        batches = score_batches(tokenizer, train, n_batches, profile.ft_batch, profile.max_seq_len, seed)
        return {"batches": batches[rank::world], "seed": seed}
    return {"seed": seed}
