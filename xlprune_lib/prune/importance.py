"""Importance scores: which weights, FFN neurons, attention heads and layers a classifier can lose.

Every score is "higher = keep". Weight-level scores are ``{(module, name): tensor}`` dicts over the prunable
set of ``masks.prunable_parameters`` (the shape ``masks.prune_to`` takes); structure scores are one tensor per
layer (heads, neurons) or one tensor over layers.

Weights (``w``: the effective, masked weight; ``g_b``: the gradient of the mean loss of batch ``b``):

* magnitude ``|w|`` (Han et al. 2015, "Learning both Weights and Connections");
* gradient ``mean_b |g_b|``;
* Taylor ``mean_b |w * g_b|``: the first-order estimate of the loss change when ``w`` is set to zero
  (Molchanov et al. 2017/2019, "Importance Estimation for Neural Network Pruning", eq. 3-4);
* Fisher ``mean_i (d log p(y_i | x_i) / dw)^2``: the diagonal of the *empirical* Fisher (true labels ``y_i``,
  not labels sampled from the model), per example, as in LeCun et al. 1990 / Kirkpatrick et al. 2017. Each
  example of a batch is run forward and backward alone (its padding stripped), so memory holds one gradient
  of the model at a time, never per-example gradients of the whole model;
* movement ``-sum_t w_t * g_t`` accumulated at every optimizer step of fine-tuning (Sanh et al. 2020,
  "Movement Pruning", eq. 5 with the straight-through estimator), by :class:`MovementCallback`. Without
  training, :func:`frozen_movement` gives its zero-step limit ``-w * sum_b g_b`` (a signed Taylor score).

Structures (heads, FFN neurons, layers) get a multiplicative gate ``xi = 1`` on their output, put into the
``transformers`` XLNet (which has no ``head_mask``) by ``gates.py``: a head's slice of the output projection
``o`` (the same as gating its attention vector), a neuron's column of ``layer_2``, a layer's update
``h + xi * (layer(h) - h)``.
Then (Michel et al. 2019, "Are Sixteen Heads Really Better than One?", eq. 2):

* gradient = Taylor ``mean_b |dL_b / d xi|`` (at ``xi = 1``, ``|xi * g| = |g|``: the two coincide; for a
  neuron this is the Taylor score of its activation, Molchanov et al. 2017, eq. 5);
* Fisher ``mean_i (d log p(y_i|x_i) / d xi)^2`` (the mask Fisher of Kwon et al. 2022, "A Fast Post-Training
  Pruning Framework for Transformers", eq. 6);
* magnitude: the L2 norm of the unit's weights (for a neuron: its ``layer_1`` row and ``layer_2`` column);
* movement: the weight movement scores summed over the unit's weights.

Random (every granularity): independent uniform scores from a seeded generator, the control every pruning
result is compared with (Blalock et al. 2020, "What is the State of Neural Network Pruning?", Sec. 7): a score
that does not beat random at the same sparsity has not found which weights matter.

For a layer, ``|dL/d xi|`` is the first-order estimate of the loss increase when the layer is skipped;
:func:`layer_skip_loss` measures that increase exactly (one forward pass per layer).
"""
from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from transformers import DataCollatorWithPadding, Trainer, TrainerCallback

from .. import validate
from ..config import UserError, option
from ..train.runs import quiet_trainer, training_args
from ..xlnet.gates import unit_gates
from ..xlnet.masks import current_weight, forward_weight, prunable_parameters
from ..xlnet.structure import KINDS, XLNetStructure

METHODS = ("magnitude", "gradient", "taylor", "fisher", "movement", "random")
GRANULARITIES = KINDS
GRADIENT_METHODS = ("gradient", "taylor", "fisher", "movement")


# options every pruning command shares (``xlprune prune`` and ``iterate``), defined once
OPTIONS = {
    "method": dict(help=f"importance score: {', '.join(METHODS)}"),
    "granularity": dict(default="weight", help=f"unit removed: {', '.join(GRANULARITIES)}"),
    "scope": dict(default="global", help="global (one threshold over all layers) or local (per tensor / layer)"),
    "score_batches": dict(default=16, help="training batches for gradient, Taylor and Fisher scores"),
    "score_steps": dict(default=100, help="fine-tuning steps that accumulate movement scores"),
}


def shared_option(name: str, **overrides):
    """The spec field of a shared option (:data:`OPTIONS`), with ``overrides`` (``help``, ``default``)."""
    return option(**{**OPTIONS[name], **overrides})


def check_method(method: str, granularity: str = "weight") -> None:
    validate.choice(method, METHODS, "method")
    validate.choice(granularity, GRANULARITIES, "granularity", "granularities")


def score_batches(tokenizer, dataset, n_batches: int, batch_size: int, max_len: int, seed: int = 0) -> list[dict]:
    """``n_batches`` padded batches (with ``labels``) drawn without replacement from a ``text``/``label`` split."""
    from ..train.finetune import tokenize_split  # the [train] extra (datasets): not needed to score given batches

    n = min(len(dataset), n_batches * batch_size)
    enc = tokenize_split(dataset.shuffle(seed=seed).select(range(n)), tokenizer, max_len)
    collate = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    rows = [enc[i] for i in range(n)]
    return [dict(collate(rows[i:i + batch_size])) for i in range(0, n, batch_size)]


def _device_batch(model, batch: dict) -> dict:
    device = next(model.parameters()).device
    return {k: v.to(device) for k, v in batch.items()}


def _param(module, name: str) -> nn.Parameter:
    """The trainable tensor behind ``module.name`` (``name_orig`` once ``torch.nn.utils.prune`` masks it)."""
    return getattr(module, f"{name}_orig") if hasattr(module, f"{name}_orig") else getattr(module, name)


@contextlib.contextmanager
def _eval_mode(model):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)


def _log_likelihood(model, batch: dict) -> torch.Tensor:
    """``log p(y_i | x_i)`` of each example (the classifier's log-softmax at the true label)."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits
    return torch.log_softmax(logits.float(), -1).gather(1, batch["labels"].view(-1, 1)).squeeze(1)


def _inputs(params) -> list[torch.Tensor]:
    """The tensors to differentiate: a list, or a callable read after each forward pass (:func:`_weights_used`)."""
    return params() if callable(params) else params


def _weights_used(pairs):
    """The weights as the last forward pass used them. With live ``torch.nn.utils.prune`` masks that is the
    masked tensor ``w_orig * mask`` computed by the forward pre-hook, so gradients are taken with respect to
    the effective weight, masked entries included, exactly as on the same model made permanent."""
    return lambda: [forward_weight(*p) for p in pairs]


def _grads(output: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """``d output / d t`` for every tensor ``t`` of ``inputs``, of ``t``'s shape.

    A tensor with no entries gets an empty gradient without being differentiated. Pruning leaves such tensors:
    a layer with no head keeps ``(d_model, 0, d_head)`` projections and a ``(0,)`` head gate, a layer with no
    neuron ``(0, d_model)`` / ``(d_model, 0)`` FFN weights, and the zero-width forward never touches them
    (``modeling_xlnet_pruned.fit_zero_width``), so ``torch.autograd.grad`` would call them unused. Every
    tensor with entries must still be used by the forward pass: autograd's error stays for those.
    """
    used = [i for i, t in enumerate(inputs) if t.numel()]
    grads = dict(zip(used, torch.autograd.grad(output, [inputs[i] for i in used]) if used else ()))
    return [grads[i] if i in grads else torch.zeros_like(t) for i, t in enumerate(inputs)]


def _batch_means(model, batches, params, combine) -> list[torch.Tensor]:
    """``mean_b combine(i, g_b[i])`` over batches, ``g_b`` the gradients of batch ``b``'s mean loss."""
    totals = [torch.zeros_like(p, dtype=torch.float32) for p in _inputs(params)]
    with _eval_mode(model):
        for batch in batches:
            loss = model(**_device_batch(model, batch)).loss
            for i, (t, g) in enumerate(zip(totals, _grads(loss, _inputs(params)))):
                t += combine(i, g.float())
    return [t / max(1, len(batches)) for t in totals]


def _examples(batch: dict):
    """The examples of a padded batch one at a time, padding removed (XLNet pads on the left; the attention
    mask hides the pads, so an example alone gives the same log-likelihood)."""
    mask = batch.get("attention_mask")
    for i in range(len(batch["labels"])):
        keep = mask[i].bool() if mask is not None else slice(None)
        yield {k: (v[i:i + 1] if k == "labels" else v[i:i + 1, keep]) for k, v in batch.items()}


def _example_fisher(model, batches, params) -> list[torch.Tensor]:
    """``mean_i (d log p(y_i|x_i) / d param)^2``, per example, one gradient in memory at a time.

    Each example gets its own forward and backward pass without its padding, so the cost is one small
    forward/backward per example (not one full-batch backward per example, as slicing a batched graph
    would cost).
    """
    totals = [torch.zeros_like(p, dtype=torch.float32) for p in _inputs(params)]
    n = 0
    with _eval_mode(model):
        for batch in batches:
            for example in _examples(_device_batch(model, batch)):
                logp = _log_likelihood(model, example)[0]
                for t, g in zip(totals, _grads(logp, _inputs(params))):
                    t += g.float() ** 2
                n += 1
    return [t / max(1, n) for t in totals]


# --- weight-level scores -------------------------------------------------------------------------------

def magnitude(model, pairs=None) -> dict:
    """``|w|`` (Han et al. 2015)."""
    pairs = pairs if pairs is not None else prunable_parameters(model)
    return {p: current_weight(*p).detach().abs().float() for p in pairs}


def random_scores(model, seed: int = 0, pairs=None) -> dict:
    """Uniform ``[0, 1)`` scores of the shape of each prunable weight, from ``torch.Generator`` seeded with ``seed``
    (the same seed gives the same scores; Blalock et al. 2020's random baseline)."""
    pairs = pairs if pairs is not None else prunable_parameters(model)
    g = torch.Generator().manual_seed(seed)
    return {p: torch.rand(current_weight(*p).shape, generator=g) for p in pairs}


def _weight_scores(model, batches, pairs, combine) -> dict:
    pairs = pairs if pairs is not None else prunable_parameters(model)
    weights = [current_weight(*p).detach().float() for p in pairs]
    return dict(zip(pairs, _batch_means(model, batches, _weights_used(pairs), lambda i, g: combine(weights[i], g))))


def gradient(model, batches, pairs=None) -> dict:
    """``mean_b |g_b|``: how strongly the loss reacts to each weight."""
    return _weight_scores(model, batches, pairs, lambda w, g: g.abs())


def taylor(model, batches, pairs=None) -> dict:
    """``mean_b |w * g_b|`` (Molchanov et al. 2019, eq. 3-4): first-order loss change of zeroing ``w``."""
    return _weight_scores(model, batches, pairs, lambda w, g: (w * g).abs())


def frozen_movement(model, batches, pairs=None) -> dict:
    """``-w * mean_b g_b``: movement (Sanh et al. 2020, eq. 5) in the limit of a zero learning rate."""
    return _weight_scores(model, batches, pairs, lambda w, g: -w * g)


def fisher(model, batches, pairs=None) -> dict:
    """Diagonal empirical Fisher ``mean_i (d log p(y_i|x_i) / dw)^2``, per example (see the module docstring)."""
    pairs = pairs if pairs is not None else prunable_parameters(model)
    return dict(zip(pairs, _example_fisher(model, batches, _weights_used(pairs))))


class MovementCallback(TrainerCallback):
    """Trainer callback accumulating movement scores ``S -= w * g`` at every optimizer step (Sanh et al. 2020).

    ``g`` is the gradient after clipping, read in ``on_pre_optimizer_step``; ``w`` the effective weight the
    forward pass used. ``scores`` is a ``{(module, name): tensor}`` dict like the other weight scores.
    """
    def __init__(self, pairs):
        self.pairs = list(pairs)
        self.scores = {p: torch.zeros_like(current_weight(*p), dtype=torch.float32) for p in self.pairs}
        self.steps = 0

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        with torch.no_grad():
            for p in self.pairs:
                grad = _param(*p).grad
                if grad is not None:
                    self.scores[p] -= current_weight(*p).detach().float() * grad.float()
        self.steps += 1


def movement_finetune(model, tokenizer, train, profile, steps: int, seed: int = 0, progress: bool = False,
                      lr: float | None = None) -> dict:
    """Fine-tune ``model`` in place for ``steps`` optimizer steps and return the movement scores gathered.

    The profile's fine-tuning learning rate, batch size and weight decay; the weights after these steps are
    the ones movement pruning then masks (Sanh et al. 2020 score and prune the weights being fine-tuned).
    """
    from ..train.finetune import tokenize_split  # the [train] extra (datasets): fine-tuning reads a split

    if steps < 1:
        raise UserError("movement scores are accumulated during fine-tuning: give at least one scoring step")
    callback = MovementCallback(prunable_parameters(model))
    with tempfile.TemporaryDirectory() as tmp:
        args = training_args(profile, Path(tmp), seed, epochs=1, batch=profile.ft_batch, lr=lr or profile.ft_lr,
                             progress=progress, max_steps=steps)
        trainer = Trainer(model=model, args=args, train_dataset=tokenize_split(train, tokenizer, profile.max_seq_len),
                          data_collator=DataCollatorWithPadding(tokenizer), callbacks=[callback])
        quiet_trainer(trainer, progress)
        trainer.train()
    model.eval()
    return callback.scores


# --- structure gates -------------------------------------------------------------------------------------

def gate_gradient(model, batches, granularity: str) -> list[torch.Tensor]:
    """Michel et al. 2019, eq. 2: ``mean_b |dL_b / d xi|`` for every head / neuron / layer gate."""
    with unit_gates(model, granularity) as gates:
        return _batch_means(model, batches, gates, lambda i, g: g.abs())


def gate_fisher(model, batches, granularity: str) -> list[torch.Tensor]:
    """Kwon et al. 2022, eq. 6: ``mean_i (d log p(y_i|x_i) / d xi)^2`` per gate, per example."""
    with unit_gates(model, granularity) as gates:
        return _example_fisher(model, batches, gates)


def mean_loss(model, batches) -> float:
    """Mean classification loss over ``batches`` (no gradients)."""
    with torch.no_grad(), _eval_mode(model):
        return sum(float(model(**_device_batch(model, b)).loss) for b in batches) / max(1, len(batches))


def layer_skip_loss(model, batches) -> torch.Tensor:
    """Loss increase when each layer alone is skipped (its gate set to 0): the exact layer importance."""
    base = mean_loss(model, batches)
    out = []
    with unit_gates(model, "layer") as gates:
        for gate in gates:
            with torch.no_grad():
                gate.zero_()
            out.append(mean_loss(model, batches) - base)
            with torch.no_grad():
                gate.fill_(1.0)
    return torch.tensor(out)


# --- aggregating weight scores over structures ---------------------------------------------------------

def unit_sums(model, scores: dict, granularity: str) -> list[torch.Tensor]:
    """Sum a weight-level score over each head / neuron / layer's weights (one tensor per layer)."""
    s, out = XLNetStructure(model), []
    for i in range(len(s.layers)):
        if granularity == "head":
            out.append(sum(scores[p].sum(dim=(0, 2)) for p in s.prunable(part="attention", layer=i)))
        elif granularity == "neuron":
            (w1, n1), (w2, n2) = s.prunable(part="ffn", layer=i)
            out.append(scores[(w1, n1)].sum(1) + scores[(w2, n2)].sum(0))
        elif granularity == "layer":
            out.append(sum(scores[p].sum() for p in s.prunable(layer=i)))
        else:
            raise UserError(f"unit sums exist for heads, neurons and layers, not {granularity!r}")
    return out


def _magnitude_units(model, kind: str, inputs: "ScoreInputs"):
    """The L2 norm of each unit's weights (for a neuron: its ``layer_1`` row and ``layer_2`` column)."""
    return [s.sqrt() for s in unit_sums(model, {p: w ** 2 for p, w in magnitude(model).items()}, kind)]


def _random_units(model, kind: str, inputs: "ScoreInputs"):
    g = torch.Generator().manual_seed(inputs.seed)
    s = XLNetStructure(model)
    return torch.rand(len(s.layers), generator=g) if kind == "layer" else \
        [torch.rand(int(n), generator=g) for n in s.unit_counts(kind)]


@dataclass(frozen=True)
class ScoreInputs:
    """What a score may need: ``batches`` of labelled examples (:func:`score_batches`; gradient, Taylor,
    Fisher), the weight-level ``movement`` scores gathered while fine-tuning (:func:`movement_finetune`), the
    ``seed`` of the random control."""
    batches: list | None = None
    movement: dict | None = None
    seed: int = 0


@dataclass(frozen=True)
class Scorer:
    """One importance method, for every granularity (after Torch-Pruning's one ``Importance`` interface):
    ``weights(model, inputs)`` gives ``{(module, name): tensor}`` over the prunable set, ``units(model, kind,
    inputs)`` one tensor per layer (heads, neurons) or one over layers. ``needs``: ``"batches"`` or
    ``"movement"`` when the method cannot score without them; ``signed``: scores may be negative (ranked as
    given, never normalised per layer)."""
    name: str
    weights: Callable
    units: Callable
    needs: str | None = None
    signed: bool = False


SCORERS = {s.name: s for s in (
    Scorer("magnitude", lambda m, x: magnitude(m), _magnitude_units),
    Scorer("gradient", lambda m, x: gradient(m, x.batches), lambda m, k, x: gate_gradient(m, x.batches, k),
           needs="batches"),
    # at xi = 1, |xi * dL/dxi| = |dL/dxi|: for units the Taylor and gradient scores coincide (module docstring)
    Scorer("taylor", lambda m, x: taylor(m, x.batches), lambda m, k, x: gate_gradient(m, x.batches, k),
           needs="batches"),
    Scorer("fisher", lambda m, x: fisher(m, x.batches), lambda m, k, x: gate_fisher(m, x.batches, k),
           needs="batches"),
    Scorer("movement", lambda m, x: x.movement, lambda m, k, x: unit_sums(m, x.movement, k), needs="movement",
           signed=True),
    Scorer("random", lambda m, x: random_scores(m, x.seed), _random_units),
)}


def score(model, method: str, kind: str = "weight", batches=None, movement: dict | None = None, seed: int = 0):
    """The ``method`` scores of every weight, head, neuron or layer (``kind``) of ``model``: the one entry point
    for every method and granularity (definitions in the module docstring; what each needs: :class:`Scorer`,
    and :func:`gather_inputs` to get it). Weights come back as ``{(module, name): tensor}`` of the weights'
    shapes, heads and neurons as one tensor per layer (``(n_head,)``, ``(d_inner,)`` as the layer is now),
    layers as one tensor of shape ``(n_layer,)``.

    Raises ``UserError`` for an unknown method or kind, or when the method needs batches or movement scores
    it was not given.
    """
    check_method(method, kind)
    scorer, inputs = SCORERS[method], ScoreInputs(batches, movement, seed)
    if scorer.needs == "batches" and not inputs.batches:
        raise UserError(f"{method} scores need batches of labelled examples")
    if scorer.needs == "movement" and inputs.movement is None:
        raise UserError("movement scores are accumulated during fine-tuning (movement_finetune)")
    if kind == "weight":
        return scorer.weights(model, inputs)
    out = scorer.units(model, kind, inputs)
    return torch.stack([o.reshape(()) for o in out]) if kind == "layer" and not isinstance(out, torch.Tensor) \
        else out


def gather_inputs(model, method: str, tokenizer, train, profile, n_batches: int, score_steps: int, seed: int = 0,
                  lr: float | None = None, progress: bool = False, rank: int = 0, world: int = 1) -> dict:
    """What ``method`` needs before it can score: ``n_batches`` training batches (this rank's share of them,
    every ``world``-th from ``rank``), or for movement ``score_steps`` fine-tuning steps of ``model`` (in place,
    at ``lr``, default the profile's fine-tuning rate), as the keyword arguments of :func:`score`. Raises
    ``UserError`` when the batches cannot be shared among the processes."""
    needs = SCORERS[method].needs if method in SCORERS else None
    if needs == "movement":
        movement = movement_finetune(model, tokenizer, train, profile, score_steps, seed, progress, lr=lr)
        return {"movement": movement, "seed": seed}
    if needs == "batches":
        if n_batches < world:
            raise UserError(f"--score-batches ({n_batches}) must be at least the number of processes")
        batches = score_batches(tokenizer, train, n_batches, profile.ft_batch, profile.max_seq_len, seed)
        return {"batches": batches[rank::world], "seed": seed}
    return {"seed": seed}
