"""Every public function that takes a model works on a model with live ``torch.nn.utils.prune`` masks and gives
what it gives on the same model made permanent (issue 13, kind 2).

``TWINS`` runs each entry point on two copies of one pruned model: one whose masks are live (after a forward
pass with autograd on, so each masked weight is a non-leaf tensor), one made permanent. The list is checked
against the library itself, so a new public function that takes a model cannot be left out.
"""
import copy
import dataclasses
import importlib
import inspect
import pkgutil
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from conftest import padded_batch, tiny_config

import xlprune_lib
from xlprune_lib.book import experiments
from xlprune_lib.loops import distributed, gradual, l0_training, oneshot, rounds, score_inputs
from xlprune_lib.deploy import bench, onnx
from xlprune_lib.measure import report, sparse
from xlprune_lib.loops.specs import IterSpec
from xlprune_lib.prune import importance, l0, learned, select
from xlprune_lib.prune.importance import ScoreInputs
from xlprune_lib.prune.scores import Scores
from xlprune_lib.xlnet import masks
from xlprune_lib.prune.plan import PruningPlan, named_weights
from xlprune_lib.train import finetune, pretrain
from xlprune_lib.xlnet import gates, modeling, modeling_xlnet_pruned, surgery
from xlprune_lib.xlnet.structure import XLNetStructure
from xlprune_lib.config import get_profile

TEXTS = ["a moving, funny film", "dull and far too long", "the cast is wonderful", "a mess of a script",
         "beautifully shot", "nothing works here", "i loved every minute", "tedious"]


def _make(vocab: int):
    """The same pruned tiny classifier every call: 40% of the prunable weights masked (magnitude)."""
    from transformers import XLNetForSequenceClassification

    torch.manual_seed(0)
    model = XLNetForSequenceClassification(tiny_config(num_labels=2, vocab_size=vocab, summary_last_dropout=0.0))
    select.WeightSparsity(0.4)(model, importance.magnitude(model)).apply_masks(model)
    return model


class Ctx:
    def __init__(self, tok, tmp: Path, saved: Path):
        from datasets import Dataset

        vocab = len(tok)
        self.tok, self.tmp, self.saved = tok, tmp, saved
        self.batches = [padded_batch([7, 4, 9], [0, 1, 1], 1, vocab), padded_batch([5, 8], [1, 0], 2, vocab)]
        self.inputs = {k: v for k, v in self.batches[0].items() if k != "labels"}
        self.ds = Dataset.from_dict({"text": TEXTS, "label": [1, 0, 1, 0, 1, 0, 1, 0]})
        self.profile = get_profile("smoke")

    def logits(self, model):
        model.eval()
        with torch.no_grad():
            return model(**self.inputs).logits

    def loss(self, model):
        return {"loss": importance.mean_loss(model, self.batches)}


def _step(model) -> None:
    """The same in-place update of every prunable weight of either twin, as an optimizer step makes it: to
    ``w_orig`` under a live mask (the pre-hook's ``w`` keeps the last forward pass's values until the next
    one), to the kept entries of a permanent weight."""
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for m, n in XLNetStructure(model).prunable():
            delta = torch.randn(masks.current_mask(m, n).shape, generator=g) * 0.5
            if hasattr(m, f"{n}_orig"):
                getattr(m, f"{n}_orig").add_(delta)
            else:
                w = getattr(m, n)
                w.add_(delta * (w != 0))


@pytest.fixture(params=["after a forward pass", "after an optimizer step"])
def twins(request, small_tokenizer, tmp_path):
    """A live-masked model and its permanent twin. In the second case the live twin's ``w_orig`` changed after its
    last forward pass (issue 15's kind: a reader of ``module.w`` sees the weights one step old)."""
    live = _make(len(small_tokenizer))
    ctx_live = Ctx(small_tokenizer, tmp_path / "live", None)
    live.train()
    live(**ctx_live.batches[0]).loss.backward()        # masked weights are now non-leaf tensors with a graph
    live.zero_grad(set_to_none=True)
    live.eval()
    permanent = _make(len(small_tokenizer)).eval()
    masks.make_permanent(permanent)
    if request.param == "after an optimizer step":
        _step(live)
        _step(permanent)
    saved = modeling.save_model(_permanent(len(small_tokenizer)), small_tokenizer, tmp_path / "saved")
    assert masks.live_masks(live) and not masks.live_masks(permanent)
    return (live, Ctx(small_tokenizer, tmp_path / "live", saved)), (permanent,
                                                                     Ctx(small_tokenizer, tmp_path / "perm", saved))


def _permanent(vocab):
    m = _make(vocab)
    masks.make_permanent(m)
    return m


def _shapes(model):
    s = XLNetStructure(model)
    return s.unit_counts("head"), s.unit_counts("neuron")


def _seeded_gates(model, granularity):
    gs = l0.attach(model, granularity)
    torch.manual_seed(7)
    with torch.no_grad():
        for la in gs.all_log_alpha():
            la.copy_(torch.randn_like(la) * 3)
    return gs


def _save_and_read(model, c, fn):
    from safetensors.torch import load_file

    out = fn(model, c.tmp / "out")
    files = sorted(out.glob("*.safetensors"))
    return [load_file(str(f)) for f in files], [f.stat().st_size for f in files]


def _gated_logits(model, c, granularity):
    with gates.unit_gates(model, granularity) as g:
        with torch.no_grad():
            g[0].mul_(0.5)
        return c.logits(model)


def _installed(model, c):
    gates.install(model, "head", [torch.full((n,), 0.5) for n in XLNetStructure(model).unit_counts("head")])
    return c.logits(model)


def _removed(model, c):
    _installed(model, c)
    gates.remove(model, "head")
    return c.logits(model)


def _l0_finalized(model, c):
    _seeded_gates(model, "weight")
    removed = l0.prune_with_gates(model, target=0.6)
    return c.logits(model), masks.counts(model), removed


def _l0_heads_finalized(model, c):
    _seeded_gates(model, "head+neuron")
    removed = l0.prune_with_gates(model)
    return c.logits(model), _shapes(model), removed


def _weights_masked(model, c, scores, scope="global"):
    """A weight sparsity reached the one way (``WeightSparsity`` -> plan -> ``apply_masks``): what the tensors
    then show."""
    select.WeightSparsity(0.6, scope)(model, scores).apply_masks(model)
    pairs = XLNetStructure(model).prunable()
    return masks.weight_sparsity(pairs), c.logits(model), [masks.current_weight(*p) for p in pairs]


def _reattach_masks(model, c):
    g = torch.Generator().manual_seed(3)
    pairs = XLNetStructure(model).prunable()
    rounds.reattach_masks(model, {"layer.0.rel_attn.q": torch.rand(masks.current_weight(*pairs[0]).shape,
                                                                    generator=g) > 0.5})
    return c.logits(model)


def _checkpoint(model, c):
    from safetensors.torch import load_file

    rounds.save_checkpoint(model, c.tok, c.tmp / "round-1")
    return load_file(str(c.tmp / "round-1" / "model.safetensors")), c.logits(model)


def _sparse(model, c):
    tensors, sizes = _save_and_read(model, c, sparse.save_sparse)
    return tensors, sizes, c.logits(sparse.load_sparse(c.tmp / "out"))


def _saved(model, c):
    tensors, sizes = _save_and_read(model, c, lambda m, out: modeling.save_model(m, c.tok, out))
    return tensors, sizes, c.logits(modeling.load_saved(c.tmp / "out"))


def _budget(model, c):
    scores = importance.score(model, "taylor", "head+neuron", c.batches)
    plan, info = select.EncoderBudget(0.25).plan_with_share(model, scores)
    plan.apply_surgery(model)
    return plan, info, c.logits(model), XLNetStructure(model).encoder_params()


def _unit_rule(model, c):
    plan = select.UnitFraction("head", 0.25)(model, importance.score(model, "magnitude", "head"))
    plan.apply_surgery(model)
    return plan, c.logits(model), _shapes(model), PruningPlan.of(model)


def _weight_rule(model, c, rule):
    plan = rule(model, _signed(model))
    plan.apply_masks(model)
    return plan, c.logits(model), PruningPlan.of(model) == plan


def _plan_masks(model, c):
    plan = PruningPlan.of(model).without("head", {0: [1, 2]}).without("neuron", {1: [3]})
    plan.apply_masks(model)
    return c.logits(model), PruningPlan.of(model).digest()


def _signed(model, seed=5):
    """Signed (movement-like) weight scores, the same for both twins: zeros already written in must still go
    first."""
    g = torch.Generator().manual_seed(seed)
    return Scores("weight", {n: torch.randn(masks.current_weight(m, a).shape, generator=g)
                             for n, m, a in named_weights(model)})


def _learned(model, c):
    """A trained score on one weight: the mask it gives now, the logits through it, and the plan it gives."""
    mask = learned.attach_learned_mask(model, "layer.1.ff.layer_1.weight", 0.5)
    return mask.mask(), c.logits(model), learned.learned_plan(model, [mask])


def _movement_step(model, c):
    """One step of movement accumulation (``S -= w g``): the gradient is held by ``w_orig`` under a live mask."""
    callback = score_inputs.MovementCallback(model)
    model(**c.batches[0]).loss.backward()
    callback.on_pre_optimizer_step(None, None, None)
    return callback.scores, callback.steps


def _run_context(model, c, granularity):
    """An ``iterate`` run's shared context on a claimed folder: what it measures and records for a model (the
    wall-clock fields left out, as ``rounds.same_records`` leaves them out)."""
    out = c.tmp / "run"
    rounds.claim(out, "key", {"run": "twins"})
    data = ({"train": c.ds, "validation": c.ds, "test": c.ds}, "accuracy", {})
    spec = IterSpec("magnitude", granularity=granularity, target=0.5, requirement="dense-0.01")
    run = rounds.RunContext(c.saved, spec, out, c.profile, 0, progress=False, report=False, data=data)
    first = run.record(model, round=0, step=0, target=0.0)
    run.commit(first)
    return ({k: v for k, v in first.items() if k not in rounds.TIMING_KEYS}, run.evaluate(model),
            run.unit_sparsity(model, first))


def _timed(model, c, fn):
    """Timings differ run to run: what must agree is what was timed."""
    out = fn({"m": model})
    return sorted(out), [len(v) if isinstance(v, list) else sorted(v) for v in out.values()]


def _unparametrized(model, c):
    gates.install(model, "neuron", [torch.full((n,), 0.5) for n in XLNetStructure(model).unit_counts("neuron")])
    for layer in XLNetStructure(model).layers:
        ff = layer.ff.layer_2
        gates.unparametrize(ff, "weight_orig" if hasattr(ff, "weight_orig") else "weight", keep_values=True)
    return c.logits(model)


def _onnx(model, c, export):
    """What ONNX Runtime computes from the exported model (the masked weights are traced as such)."""
    c.tmp.mkdir(parents=True, exist_ok=True)
    path = c.tmp / "m.onnx"
    checked = export(model, path)
    return checked, onnx.OnnxClassifier(path)(**c.inputs).logits, c.logits(model)


def _zero_width(model, c):
    heads = XLNetStructure(model).heads(0)
    surgery.prune_heads(model, {0: list(range(heads))})
    for layer in XLNetStructure(model).layers:
        modeling_xlnet_pruned.fit_zero_width(layer)
    return type(XLNetStructure(model).layers[0].rel_attn).__name__, c.logits(model)


def _evaluator(model, c):
    ev = finetune.Evaluator(c.tok, {"x": c.ds}, 16)
    return ev(model), ev.split(model, "x")


def _evaluator_logits(model, c):
    logits, labels = finetune.Evaluator(c.tok, {"x": c.ds}, 16).logits(model, "x")
    assert list(labels) == list(c.ds["label"])          # in the split's own order, not the length order
    return torch.from_numpy(logits), torch.from_numpy(labels)


def _attached(m, c):
    """A mask on one tensor (stacked on the live twin's): the half of layer 0's ``q`` with the smallest |w| goes."""
    attn = m.transformer.layer[0].rel_attn
    w = masks.current_weight(attn, "q").detach().abs()
    masks.attach(attn, "q", w > w.median())
    return c.logits(m), [masks.current_weight(*p) for p in XLNetStructure(m).prunable()]


# entry point -> what it gives on a model; the live and the permanent twin must give the same
TWINS = {
    "select.WeightSparsity.__call__ (signed, applied)": lambda m, c: _weights_masked(m, c, _signed(m)),
    "select.WeightSparsity.__call__ (signed, local)": lambda m, c: _weights_masked(m, c, _signed(m), "local"),
    "select.WeightSparsity.__call__ (magnitude, applied)": lambda m, c: _weights_masked(m, c,
                                                                                         importance.magnitude(m)),
    "select.WeightSparsity.__call__ (one part)": lambda m, c: _weights_masked(
        m, c, importance.magnitude(m).only(["layer.0.rel_attn.q", "layer.1.ff.layer_2.weight"])),
    "oneshot.apply (movement weights)": lambda m, c: (oneshot.apply(m, oneshot.PruneSpec("movement", "weight", 0.7),
                                                                    _signed(m)), c.logits(m)),
    "masks.current_weight": lambda m, c: [masks.current_weight(*p) for p in XLNetStructure(m).prunable()],
    "masks.forward_weight": lambda m, c: (c.logits(m), [masks.forward_weight(*p) for p in
                                                        XLNetStructure(m).prunable()])[1],   # read after a forward
    "bench.time_alternating": lambda m, c: _timed(m, c, lambda ms: bench.time_alternating(ms, c.inputs, 1, 2, "cpu")),
    "bench.latency_sweep": lambda m, c: _timed(m, c, lambda ms: bench.latency_sweep(ms, len(c.tok), 2, 8, 1, 2)),
    "finetune.Evaluator.__call__": _evaluator,
    "finetune.Evaluator.logits": _evaluator_logits,
    "finetune.Evaluator.split": _evaluator,
    "gates.GatedLayer": lambda m, c: (gates.install(m, "layer", [torch.tensor(0.5), torch.tensor(0.7)]),
                                      c.logits(m)),
    "gates.unparametrize": _unparametrized,
    "report.effective_parameters": lambda m, c: dict(sorted(report.effective_parameters(m))),
    "report.layer_flops": lambda m, c: [report.layer_flops(layer, 16) for layer in XLNetStructure(m).layers],
    "structure.XLNetStructure (costs, counts)": lambda m, c: [
        [XLNetStructure(m).unit_cost(i, k, w) for i in range(2) for k in ("head", "neuron") for w in ("encoder",
                                                                                                  "prunable")],
        XLNetStructure(m).encoder_params(), [XLNetStructure(m).total_units(k) for k in ("head", "neuron", "layer")],
        [XLNetStructure(m).unit_counts(k) for k in ("head", "neuron", "layer")]],
    "structure.XLNetStructure.base_of": lambda m, c: type(XLNetStructure.base_of(m)).__name__,
    "bench.static_measures": lambda m, c: bench.static_measures(m, c.saved, 16),
    "distributed.plan_digest": lambda m, c: distributed.plan_digest(m),
    "finetune.evaluate": lambda m, c: finetune.evaluate(m, c.tok, c.ds, max_len=16),
    "gates.install": _installed,
    "gates.remove": _removed,
    "gates.is_gated": lambda m, c: gates.is_gated(m),
    # the trainable tensor a gate scales: w_orig under a live mask, w itself once permanent (the same parameter)
    "gates.tensor_name": lambda m, c: [(isinstance(getattr(mod, gates.tensor_name(mod, n)), torch.nn.Parameter),
                                        getattr(mod, gates.tensor_name(mod, n)).shape)
                                       for mod, n in XLNetStructure(m).prunable()],
    "gates.gated_weights": lambda m, c: [[(type(mod).__name__, n, axis, masks.current_weight(mod, n))
                                          for mod, n, axis in gates.gated_weights(m, k)] for k in ("head", "neuron")],
    "gradual.install_identity_masks": lambda m, c: (gradual.install_identity_masks(m), c.logits(m)),
    "importance.magnitude": lambda m, c: importance.magnitude(m),
    "importance.random_scores": lambda m, c: importance.random_scores(m, 3),
    "importance.zero_movement": lambda m, c: importance.zero_movement(m),
    "experiments.sublayer_ablation": lambda m, c: experiments.sublayer_ablation(m, lambda mm: {"logits":
                                                                                              c.logits(mm)}),
    "pretrain.fresh_rate_optimizer": lambda m, c: [
        (g["lr"], g["weight_decay"], sum(p.numel() for p in g["params"]))
        for g in pretrain.fresh_rate_optimizer(m, dataclasses.replace(c.profile, plm_fresh_lr=1e-2)).param_groups],
    "importance.gradient": lambda m, c: importance.gradient(m, c.batches),
    "importance.taylor": lambda m, c: importance.taylor(m, c.batches),
    "importance.frozen_movement": lambda m, c: importance.frozen_movement(m, c.batches),
    "importance.fisher": lambda m, c: importance.fisher(m, c.batches),
    "gates.unit_gates": lambda m, c: _gated_logits(m, c, "neuron"),
    "importance.gate_gradient": lambda m, c: importance.gate_gradient(m, c.batches, "head"),
    "importance.gate_fisher": lambda m, c: importance.gate_fisher(m, c.batches, "neuron"),
    "importance.mean_loss": lambda m, c: importance.mean_loss(m, c.batches),
    "importance.layer_skip_loss": lambda m, c: importance.layer_skip_loss(m, c.batches),
    "importance.unit_sums": lambda m, c: importance.unit_sums(m, importance.magnitude(m), "head"),
    "importance.score (layers)": lambda m, c: importance.score(m, "taylor", "layer", c.batches),
    "importance.score (weights)": lambda m, c: importance.score(m, "fisher", "weight", c.batches),
    "importance.score (heads and neurons)": lambda m, c: importance.score(m, "gradient", "head+neuron", c.batches),
    # the registry's classes, each method's own weights / units (Importance.units: the sum over a unit's weights)
    "importance.Importance.__call__": lambda m, c: importance.Fisher("head+neuron")(m, ScoreInputs(c.batches)),
    "importance.Importance.units": lambda m, c: importance.Movement("head").units(
        m, "neuron", ScoreInputs(movement=_signed(m))),
    "importance.Magnitude.weights": lambda m, c: importance.Magnitude().weights(m, ScoreInputs()),
    "importance.Magnitude.units": lambda m, c: [importance.Magnitude().units(m, k, ScoreInputs())
                                                for k in ("head", "neuron", "layer")],
    "importance.Gradient.weights": lambda m, c: importance.Gradient().weights(m, ScoreInputs(c.batches)),
    "importance.Gradient.units": lambda m, c: importance.Gradient().units(m, "neuron", ScoreInputs(c.batches)),
    "importance.Taylor.weights": lambda m, c: importance.Taylor().weights(m, ScoreInputs(c.batches)),
    "importance.Fisher.weights": lambda m, c: importance.Fisher().weights(m, ScoreInputs(c.batches)),
    "importance.Fisher.units": lambda m, c: importance.Fisher().units(m, "head", ScoreInputs(c.batches)),
    "importance.Movement.weights": lambda m, c: importance.Movement().weights(m, ScoreInputs(movement=_signed(m))),
    "importance.Random.weights": lambda m, c: importance.Random().weights(m, ScoreInputs(seed=4)),
    "importance.Random.units": lambda m, c: importance.Random().units(m, "head", ScoreInputs(seed=4)),
    # the batches path (the movement path trains: it is movement_finetune, covered in TRAINING)
    "score_inputs.gather_inputs": lambda m, c: [
        [b["input_ids"] for b in score_inputs.gather_inputs(m, "fisher", c.tok, c.ds, c.profile, 2, 1)["batches"]],
        score_inputs.gather_inputs(m, "magnitude", c.tok, c.ds, c.profile, 2, 1), c.logits(m)],
    "score_inputs.MovementCallback": _movement_step,
    "learned.attach_learned_mask": _learned,
    "learned.learned_plan": _learned,
    "plan.named_weights": lambda m, c: [(n, a, masks.current_weight(mod, a).shape) for n, mod, a in
                                        named_weights(m)],
    "plan.PruningPlan.apply_surgery": lambda m, c: (PruningPlan.of(m).without("neuron", {0: [1, 2], 1: [0]}).apply_surgery(m),
                                               c.logits(m), _shapes(m), PruningPlan.of(m)),
    "plan.PruningPlan.apply_masks": _plan_masks,
    "plan.PruningPlan.check_model": lambda m, c: PruningPlan.of(m).check_model(m),
    "select.UnitFraction.__call__": _unit_rule,
    "select.EncoderBudget.__call__": _budget,
    "select.EncoderBudget.plan_with_share": _budget,
    "select.WeightSparsity.__call__": lambda m, c: _weight_rule(m, c, select.WeightSparsity(0.6)),
    "select.NM.__call__": lambda m, c: _weight_rule(m, c, select.NM(2, 4)),
    "l0.L0Gates": lambda m, c: float(l0.L0Gates(m, "head+neuron").expected_sparsity().detach()),
    "l0.attach": lambda m, c: (_seeded_gates(m, "head"), c.logits(m))[1],
    "l0.prune_with_gates": _l0_finalized,
    "l0.prune_with_gates (heads, neurons)": _l0_heads_finalized,
    "structure.XLNetStructure (prunable)": lambda m, c: [masks.current_weight(*p).shape for p in XLNetStructure(m).prunable()],
    "masks.make_permanent": lambda m, c: (masks.make_permanent(m), c.logits(m), masks.counts(m)),
    "masks.counts": lambda m, c: masks.counts(m),
    "masks.sparsity_from": lambda m, c: masks.sparsity_from(m, masks.counts(m)),
    "masks.effective_state_dict": lambda m, c: masks.effective_state_dict(m),
    "masks.copy_model": lambda m, c: c.logits(masks.copy_model(m)),
    "masks.attach": _attached,
    "modeling.record_plan": lambda m, c: (modeling.record_plan(m, PruningPlan.of(m).to_config()).config.heads_per_layer,
                                          c.logits(m)),
    "modeling.save_model": _saved,
    "modeling_xlnet_pruned.fit_zero_width": _zero_width,
    "modeling_xlnet_pruned.match_default_dtype": lambda m, c: (modeling_xlnet_pruned.match_default_dtype(m),
                                                               c.logits(m)),
    "modeling_xlnet_pruned.compute_in_model_dtype": lambda m, c: (modeling_xlnet_pruned.compute_in_model_dtype(m),
                                                                  c.logits(m.to(torch.bfloat16)).float()),
    "select.NM.groups": lambda m, c: select.NM(2, 4).groups(m),
    "onnx.to_onnx": lambda m, c: _onnx(m, c, lambda m, p: onnx.to_onnx(m, c.inputs, p) and None),
    "onnx.export_onnx": lambda m, c: _onnx(m, c, lambda m, p: onnx.export_onnx(m, c.tok, p, TEXTS)["verified"]),
    "onnx.max_logit_difference": lambda m, c: _onnx(m, c, lambda m, p: onnx.to_onnx(m, c.inputs, p) and
                                                    onnx.max_logit_difference(m, p, c.tok, TEXTS) < 1e-4),
    "modeling.consumer_ready": lambda m, c: modeling.consumer_ready(m).config.use_mems_eval,
    "modeling.check_saveable": lambda m, c: modeling.check_saveable(m),
    "modeling.require_classifier": lambda m, c: modeling.require_classifier(m),
    "oneshot.spec_scores": lambda m, c: oneshot.spec_scores(m, oneshot.PruneSpec("taylor", "head", 0.5,
                                                                                  score_batches=1),
                                                            c.tok, c.ds, c.profile),
    "oneshot.apply": lambda m, c: (oneshot.apply(m, oneshot.PruneSpec("magnitude", "head", 0.25),
                                                 importance.score(m, "magnitude", "head")), c.logits(m)),
    "experiments.curve": lambda m, c: experiments.curve(m, oneshot.PruneSpec("magnitude", "weight", 0.0), [0.5, 0.7],
                                                        importance.magnitude(m), c.loss),
    "experiments.sensitivity": lambda m, c: experiments.sensitivity(m, [0.6], c.loss),
    "report.parameter_breakdown": lambda m, c: report.parameter_breakdown(m),
    "report.layer_report": lambda m, c: report.layer_report(m, 16),
    "report.prunable_target": lambda m, c: report.prunable_target(m, 0.3),
    "report.tensor_sizes": lambda m, c: report.tensor_sizes(m),
    "rounds.save_checkpoint": _checkpoint,
    "rounds.reattach_masks": _reattach_masks,
    "rounds.RunContext.record": lambda m, c: _run_context(m, c, "weight"),
    "rounds.RunContext.evaluate": lambda m, c: _run_context(m, c, "weight"),
    "rounds.RunContext.unit_sparsity": lambda m, c: _run_context(m, c, "head"),
    "sparse.save_sparse": _sparse,
    "surgery.prune_heads": lambda m, c: (surgery.prune_heads(m, {0: [1]}), c.logits(m), _shapes(m)),
    "surgery.prune_neurons": lambda m, c: (surgery.prune_neurons(m, {1: [0, 5, 7]}), c.logits(m)),
    "surgery.drop_layers": lambda m, c: (surgery.drop_layers(m, [0]), c.logits(m)),
}

# entry points that train: live masks keep the pruned entries at zero (the point of keeping them live)
TRAINING = ("finetune.train_classifier", "score_inputs.movement_finetune", "l0_training.train_l0")

EXEMPT = {
    "bench.cuda_peak_memory": "needs a GPU; it only runs forward passes, like bench.static_measures here",
    "bench.resident_bytes": "counts the bytes a model holds: a live mask is a buffer of its own, so the twins "
                            "differ by exactly the masks (test_bench checks the count)",
    "masks.current_mask": "returns the mask itself; a permanent model has none (all ones)",
    "l0_training.L0Trainer.create_optimizer": "run by l0_training.train_l0 in test_training_keeps_live_masks",
    "l0_training.L0Trainer.compute_loss": "run by l0_training.train_l0 in test_training_keeps_live_masks",
    "masks.live_masks": "lists the live masks, which a permanent model has none of",
    "rounds.live_weight_masks": "reads the live masks (that is its job); a permanent model has none "
                                "(rounds.save_checkpoint and rounds.reattach_masks, which use it, are twins)",
    "importance.Importance.weights": "the base class's abstract method (NotImplementedError); every method's own "
                                     "weights is a twin",
    "distill.DistillationTrainer.compute_loss": "the Trainer's loss hook, a function of logits; train_classifier "
                                                "runs it with a teacher in test_distill",
    "modeling_xlnet_pruned.shrink_to_config": "runs in a pruned class's __init__, before any mask can exist",
    "modeling_xlnet_pruned.cut_units": "cuts one layer with the slice function it is given; surgery passes the "
                                       "mask-aware one (the surgery twins)",
    "modeling_xlnet_pruned.slice_tensor": "slices a plain parameter; surgery wraps it for masked tensors (the "
                                          "surgery twins)",
    "semi_structured.semi_structured_checked": "semi_structured on a saved 2:4 folder, which refuses live masks "
                                               "by design (test_bench checks it)",
    "semi_structured.semi_structured": "converts a saved 2:4 folder for inference on a GPU and refuses live masks "
                                       "by design (test_bench checks both)",
    "dense_study.DenseStudy.validation": "Evaluator.__call__ on the validation split (its twin is above); a study "
                                         "needs a trained dense run",
    "pretrain.align_to_source": "aligns the freshly mapped warm start inside pretrain, before any mask can exist, "
                                "to the 384-wide MiniLM teacher; align.align is tested in test_align",
}


def _same(a, b, where="result"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape, where
        scale = b.double().abs().max().clamp_min(1e-30) if b.numel() else 1.0   # gradients can be ~1e-9
        torch.testing.assert_close(a.double() / scale, b.double() / scale, rtol=1e-5, atol=1e-5, msg=where)
    elif isinstance(a, Mapping):          # dicts, and Scores (their kind too)
        assert type(a) is type(b) and getattr(a, "kind", None) == getattr(b, "kind", None), where
        assert list(a) == list(b) if all(isinstance(k, str) for k in a) else len(a) == len(b), where
        for (ka, va), vb in zip(a.items(), b.values()):
            _same(va, vb, f"{where}[{ka}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-7), where
    else:
        assert a == b, where


# twins that fail today because of a library bug (strict: once fixed, they pass and this entry must go)
@pytest.mark.parametrize("name", sorted(TWINS))
def test_entry_point_on_live_masks_equals_permanent(twins, name):
    (live, c_live), (permanent, c_perm) = twins
    _same(TWINS[name](live, c_live), TWINS[name](permanent, c_perm), name)


@pytest.mark.parametrize("name", TRAINING)
def test_training_keeps_live_masks(small_tokenizer, tmp_path, name):
    model = _make(len(small_tokenizer))
    c = Ctx(small_tokenizer, tmp_path, None)
    pruned = [masks.current_mask(*p) == 0 for p in XLNetStructure(model).prunable()]
    enc = {"train": finetune.tokenize_split(c.ds, c.tok, 16)}
    if name == "finetune.train_classifier":
        finetune.train_classifier(model, c.tok, enc, c.profile, 0, 1.0, progress=False, steps=2)
    elif name == "score_inputs.movement_finetune":
        scores = score_inputs.movement_finetune(model, c.tok, c.ds, c.profile, 2)
        assert isinstance(scores, Scores) and list(scores) == PruningPlan.of(model).names()
        assert all(bool(s.abs().sum() > 0) for s in scores.values())
    else:
        l0_training.train_l0(model, c.tok, enc, c.profile, 0, "neuron", lam=0.5, progress=False)
        l0.prune_with_gates(model)
    for p, gone in zip(XLNetStructure(model).prunable(), pruned):
        assert not masks.current_weight(*p)[gone].any(), p
    assert masks.live_masks(model)


def test_the_issue_inputs(twins):
    """The three failures reported: surgery on a masked model, its sparse file, copying it after a forward
    (``copy.deepcopy`` itself, pytorch#37322)."""
    (live, c), (permanent, _) = twins
    before = c.logits(live)
    a = sparse.save_sparse(live, c.tmp / "a")
    b = sparse.save_sparse(permanent, c.tmp / "b")
    assert (a / sparse.SPARSE_FILE).stat().st_size == (b / sparse.SPARSE_FILE).stat().st_size
    _same(c.logits(sparse.load_sparse(a)), c.logits(live))
    clone = copy.deepcopy(live)   # the masked weights are no graph leaves during a forward pass only
    surgery.prune_heads(clone, {0: [1]})
    surgery.prune_heads(permanent, {0: [1]})
    _same(c.logits(clone), c.logits(permanent))
    _same(c.logits(live), before)   # copying left the original as it was


MODEL_ARGS = ("model", "module", "layer", "models")   # a model, one of its modules or layers, several models


def _public_model_functions():
    """``module.function`` (and ``module.Class.method``) of every public callable whose first argument is a model."""
    found = set()
    for info in pkgutil.walk_packages(xlprune_lib.__path__, "xlprune_lib."):
        if info.ispkg or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        short = info.name.rsplit(".", 1)[-1]      # module basenames are unique across the subpackages
        for name, obj in vars(module).items():
            if name.startswith("_") or not callable(obj) or getattr(obj, "__module__", None) != module.__name__:
                continue
            candidates = [(name, obj)]
            if inspect.isclass(obj):
                candidates += [(f"{name}.{m}", f) for m, f in vars(obj).items()
                               if callable(f) and (not m.startswith("_") or m == "__call__")]
            for label, fn in candidates:
                try:
                    params = [p for p in inspect.signature(fn).parameters if p != "self"]
                except (TypeError, ValueError):
                    continue
                if params and params[0] in MODEL_ARGS:
                    found.add(f"{short}.{label}")
    return found


def test_every_public_model_entry_point_is_covered():
    covered = {n.split(" ")[0] for n in TWINS} | set(TRAINING) | set(EXEMPT)
    missing = _public_model_functions() - covered
    assert not missing, f"public functions taking a model without a live-mask test: {sorted(missing)}"
    assert not covered - _public_model_functions(), "the lists name functions that no longer exist"
