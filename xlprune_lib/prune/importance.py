"""Importance scores: which weights, FFN neurons, attention heads and layers a classifier can lose.

Every score is "higher = keep", and every method gives a :class:`~xlprune_lib.prune.scores.Scores`: tensors
keyed by the plan's unit names (``layer.<L>.rel_attn.q`` for a weight, ``layer.<L>.heads``, ``.neurons``,
``layer.<L>``), whatever the granularity. One class per method (:class:`Importance`, after Torch-Pruning's
``Importance``) is the registry; :func:`score` is its front door. Scorers are pure: ``(model, inputs) ->
Scores``, the model unchanged. Gathering what they need (batches, the fine-tuning that accumulates movement)
is the loops' work (``loops/score_inputs.py``).

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
  "Movement Pruning", eq. 5 with the straight-through estimator), by ``loops.score_inputs.MovementCallback``
  (:func:`movement_step` is one step of it). Without training, :func:`frozen_movement` gives its zero-step
  limit ``-w * sum_b g_b`` (a signed Taylor score).

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
from dataclasses import dataclass

import torch
from torch import nn

from .. import validate
from ..config import UserError
from ..xlnet.gates import unit_gates
from ..xlnet.masks import current_weight, forward_weight
from ..xlnet.structure import ENCODER, KINDS, UNIT_KINDS, XLNetStructure
from .plan import PruningPlan
from .scores import Scores

METHODS = ("magnitude", "gradient", "taylor", "fisher", "movement", "random")
GRANULARITIES = KINDS
GRADIENT_METHODS = ("gradient", "taylor", "fisher", "movement")


def check_method(method: str, granularity: str = "weight") -> None:
    validate.choice(method, METHODS, "method")
    validate.choice(granularity, GRANULARITIES, "granularity", "granularities")


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

def _named(model) -> tuple[list[str], list[tuple[nn.Module, str]]]:
    """The names (``PruningPlan.names``) and ``(module, attr)`` pairs of the prunable set, in the same order."""
    return PruningPlan.of(model, weights=False).names(), XLNetStructure(model).prunable()


def _weight_scores(names, tensors) -> Scores:
    return Scores("weight", dict(zip(names, tensors)))


def magnitude(model) -> Scores:
    """``|w|`` of every weight of the prunable set (Han et al. 2015)."""
    names, pairs = _named(model)
    return _weight_scores(names, [current_weight(*p).detach().abs().float() for p in pairs])


def random_scores(model, seed: int = 0) -> Scores:
    """Uniform ``[0, 1)`` scores of the shape of each prunable weight, from ``torch.Generator`` seeded with ``seed``
    (the same seed gives the same scores; Blalock et al. 2020's random baseline)."""
    names, pairs = _named(model)
    g = torch.Generator().manual_seed(seed)
    return _weight_scores(names, [torch.rand(current_weight(*p).shape, generator=g) for p in pairs])


def _gradient_scores(model, batches, combine) -> Scores:
    names, pairs = _named(model)
    weights = [current_weight(*p).detach().float() for p in pairs]
    return _weight_scores(names, _batch_means(model, batches, _weights_used(pairs),
                                              lambda i, g: combine(weights[i], g)))


def gradient(model, batches) -> Scores:
    """``mean_b |g_b|``: how strongly the loss reacts to each weight."""
    return _gradient_scores(model, batches, lambda w, g: g.abs())


def taylor(model, batches) -> Scores:
    """``mean_b |w * g_b|`` (Molchanov et al. 2019, eq. 3-4): first-order loss change of zeroing ``w``."""
    return _gradient_scores(model, batches, lambda w, g: (w * g).abs())


def frozen_movement(model, batches) -> Scores:
    """``-w * mean_b g_b``: movement (Sanh et al. 2020, eq. 5) in the limit of a zero learning rate."""
    return _gradient_scores(model, batches, lambda w, g: -w * g)


def fisher(model, batches) -> Scores:
    """Diagonal empirical Fisher ``mean_i (d log p(y_i|x_i) / dw)^2``, per example (see the module docstring)."""
    names, pairs = _named(model)
    return _weight_scores(names, _example_fisher(model, batches, _weights_used(pairs)))


def zero_movement(model) -> Scores:
    """Movement scores before the first step: zeros of the shape of each prunable weight (float32)."""
    names, pairs = _named(model)
    return _weight_scores(names, [torch.zeros_like(current_weight(*p), dtype=torch.float32) for p in pairs])


def movement_step(named, scores: Scores) -> None:
    """One optimizer step's movement, in place: ``S -= w * g`` for every weight of ``scores`` (Sanh et al. 2020,
    eq. 5), ``g`` the gradient now held by the trainable tensor (``w_orig`` while a mask is live), ``w`` the
    effective weight. ``named``: ``plan.named_weights(model)``. Call it after clipping and before the
    optimizer steps. Weights without a gradient are left as they are."""
    with torch.no_grad():
        for name, module, attr in named:
            grad = _param(module, attr).grad
            if name in scores and grad is not None:
                scores[name].sub_(current_weight(module, attr).detach().float() * grad.float())


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


def layer_skip_loss(model, batches) -> Scores:
    """Loss increase when each layer alone is skipped (its gate set to 0): the exact layer importance, as
    layer :class:`Scores` (one scalar per layer, in nats)."""
    base = mean_loss(model, batches)
    out = []
    with unit_gates(model, "layer") as gates:
        for gate in gates:
            with torch.no_grad():
                gate.zero_()
            out.append(mean_loss(model, batches) - base)
            with torch.no_grad():
                gate.fill_(1.0)
    return Scores("layer", dict(zip(PruningPlan.of(model, weights=False).unit_names("layer"),
                                    [torch.tensor(x) for x in out])))


# --- aggregating weight scores over structures ---------------------------------------------------------

def unit_sums(model, scores: Scores, granularity: str) -> list[torch.Tensor]:
    """A weight-level score summed over each head / neuron / layer's weights: one tensor per layer (a head's
    slices of ``q, k, v, o, r``; a neuron's ``layer_1`` row and ``layer_2`` column; all of a layer's weights)."""
    if granularity not in UNIT_KINDS:
        raise UserError(f"unit sums exist for heads, neurons and layers, not {granularity!r}")
    out = []
    for L in PruningPlan.of(model, weights=False).layers:
        at = lambda part: scores[f"layer.{L}.{part}"]   # noqa: E731 (one layer's weight scores, by part)
        if granularity == "head":
            out.append(sum(at(f"rel_attn.{n}").sum(dim=(0, 2)) for n in XLNetStructure.PROJECTIONS))
        elif granularity == "neuron":
            out.append(at("ff.layer_1.weight").sum(1) + at("ff.layer_2.weight").sum(0))
        else:
            out.append(sum(t.sum() for n, t in scores.items() if n.startswith(f"layer.{L}.")))
    return out


@dataclass(frozen=True)
class ScoreInputs:
    """What a score may need: ``batches`` of labelled examples (gradient, Taylor, Fisher), the weight-level
    ``movement`` :class:`Scores` accumulated while fine-tuning (``loops.score_inputs``), the ``seed`` of the
    random control."""
    batches: list | None = None
    movement: Scores | None = None
    seed: int = 0


class Importance:
    """One importance method for every granularity: ``Importance(kind)(model, inputs) -> Scores``.

    The model of Torch-Pruning's ``Importance`` (one class per method, called on what it scores). A method
    defines :meth:`weights` (one tensor per weight of the prunable set, in ``XLNetStructure.prunable`` order)
    and :meth:`units` (one tensor per layer for heads and neurons; one tensor over layers for layers); the
    base class checks the inputs and names the tensors (``scores.py``). ``needs``: ``"batches"`` or
    ``"movement"`` when the method cannot score without them; ``signed``: scores may be negative (rules rank
    them as given, never normalised per layer). Pure: the model is unchanged.
    """

    name: str = ""
    needs: str | None = None
    signed: bool = False

    def __init__(self, kind: str = "weight"):
        validate.choice(kind, GRANULARITIES + (ENCODER,), "granularity", "granularities")
        self.kind = kind

    def __call__(self, model, inputs: ScoreInputs = ScoreInputs()) -> Scores:
        if self.needs == "batches" and not inputs.batches:
            raise UserError(f"{self.name} scores need batches of labelled examples")
        if self.needs == "movement" and inputs.movement is None:
            raise UserError("movement scores are accumulated during fine-tuning (loops.score_inputs)")
        if self.kind == "weight":
            return self.weights(model, inputs)
        plan = PruningPlan.of(model, weights=False)
        kinds = ("head", "neuron") if self.kind == ENCODER else (self.kind,)
        tensors = {}
        for kind in kinds:
            out = self.units(model, kind, inputs)
            out = list(out) if not isinstance(out, torch.Tensor) else list(out.unbind(0))
            tensors.update(zip(plan.unit_names(kind), [t.reshape(()) if kind == "layer" else t for t in out]))
        return Scores(self.kind, tensors)

    def weights(self, model, inputs: ScoreInputs) -> Scores:
        raise NotImplementedError

    def units(self, model, kind: str, inputs: ScoreInputs):
        """By default, the weight score summed over each unit's weights (:func:`unit_sums`)."""
        return unit_sums(model, self.weights(model, inputs), kind)


class Magnitude(Importance):
    """``|w|``; a unit's magnitude is the L2 norm of its weights (a neuron: its ``layer_1`` row and
    ``layer_2`` column)."""
    name = "magnitude"

    def weights(self, model, inputs):
        return magnitude(model)

    def units(self, model, kind, inputs):
        return [s.sqrt() for s in unit_sums(model, magnitude(model).map(lambda w: w ** 2), kind)]


class Gradient(Importance):
    """``mean_b |g_b|`` for weights; Michel et al. 2019's ``mean_b |dL_b / d xi|`` for unit gates."""
    name, needs = "gradient", "batches"

    def weights(self, model, inputs):
        return gradient(model, inputs.batches)

    def units(self, model, kind, inputs):
        return gate_gradient(model, inputs.batches, kind)


class Taylor(Gradient):
    """``mean_b |w g_b|`` for weights (Molchanov et al. 2019, eq. 3-4). For a unit gate at ``xi = 1``,
    ``|xi * g| = |g|``: the Taylor and gradient scores coincide (module docstring)."""
    name = "taylor"

    def weights(self, model, inputs):
        return taylor(model, inputs.batches)


class Fisher(Importance):
    """The diagonal empirical Fisher of weights, or of unit gates (Kwon et al. 2022, eq. 6), per example."""
    name, needs = "fisher", "batches"

    def weights(self, model, inputs):
        return fisher(model, inputs.batches)

    def units(self, model, kind, inputs):
        return gate_fisher(model, inputs.batches, kind)


class Movement(Importance):
    """The movement accumulated while fine-tuning (Sanh et al. 2020, eq. 5); a unit's is the sum over its
    weights. Signed: the most negative goes first."""
    name, needs, signed = "movement", "movement", True

    def weights(self, model, inputs):
        return inputs.movement


class Random(Importance):
    """Independent uniform scores from a generator seeded with ``inputs.seed`` (Blalock et al. 2020's control)."""
    name = "random"

    def weights(self, model, inputs):
        return random_scores(model, inputs.seed)

    def units(self, model, kind, inputs):
        g = torch.Generator().manual_seed(inputs.seed)
        s = XLNetStructure(model)
        return torch.rand(len(s.layers), generator=g) if kind == "layer" else \
            [torch.rand(int(n), generator=g) for n in s.unit_counts(kind)]


IMPORTANCES = {cls.name: cls for cls in (Magnitude, Gradient, Taylor, Fisher, Movement, Random)}
assert tuple(IMPORTANCES) == METHODS


def score(model, method: str, kind: str = "weight", batches=None, movement: Scores | None = None,
          seed: int = 0) -> Scores:
    """The ``method`` scores of every weight, head, neuron or layer (``kind``; ``head+neuron``: both) of
    ``model``: ``IMPORTANCES[method](kind)(model, ScoreInputs(batches, movement, seed))``. Weights have the
    weights' shapes, heads and neurons one entry per unit the layer has now, layers one scalar each
    (``scores.py``).

    Raises ``UserError`` for an unknown method or kind, or when the method needs batches or movement scores
    it was not given.
    """
    validate.choice(method, METHODS, "method")
    return IMPORTANCES[method](kind)(model, ScoreInputs(batches, movement, seed))
