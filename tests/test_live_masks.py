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
from pathlib import Path

import pytest
import torch
from conftest import padded_batch, tiny_config

import xlprune_lib
from xlprune_lib.book import experiments
from xlprune_lib.loops import distributed, gradual, l0_training, oneshot, rounds, score_inputs
from xlprune_lib.deploy import bench, onnx
from xlprune_lib.measure import report, sparse
from xlprune_lib.prune import importance, l0, select
from xlprune_lib.xlnet import masks
from xlprune_lib.prune.plan import PruningPlan
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
    masks.prune_to(model, 0.4)
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


def _values(scores):
    return list(scores.values()) if isinstance(scores, dict) else scores


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


def _prune_to(model, c):
    reached = masks.prune_to(model, 0.6)
    return reached, [masks.current_weight(*p) for p in XLNetStructure(model).prunable()], c.logits(model)


def _apply_masks(model, c):
    g = torch.Generator().manual_seed(3)
    pairs = XLNetStructure(model).prunable()
    rounds.apply_masks(model, {"layer.0.rel_attn.q": torch.rand(masks.current_weight(*pairs[0]).shape, generator=g) > 0.5})
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
    heads = importance.score(model, "taylor", "head", c.batches)
    neurons = importance.score(model, "taylor", "neuron", c.batches)
    plan, info = select.EncoderBudget(0.25).plan_with_share(model, (heads, neurons))
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
    """Signed (movement-like) scores, the same for both twins: zeros already written in must still go first."""
    g = torch.Generator().manual_seed(seed)
    return {p: torch.randn(masks.current_weight(*p).shape, generator=g) for p in XLNetStructure(model).prunable()}


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
    "masks.prune_to (signed scores)": lambda m, c: (masks.prune_to(m, 0.6, _signed(m)), c.logits(m),
                                                    [masks.current_weight(*p) for p in XLNetStructure(m).prunable()]),
    "masks.prune_to (signed, local)": lambda m, c: (masks.prune_to(m, 0.6, _signed(m), scope="local"), c.logits(m)),
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
    "gradual.install_identity_masks": lambda m, c: (gradual.install_identity_masks(m), c.logits(m)),
    "importance.magnitude": lambda m, c: _values(importance.magnitude(m)),
    "importance.random_scores": lambda m, c: _values(importance.random_scores(m, 3)),
    "experiments.sublayer_ablation": lambda m, c: experiments.sublayer_ablation(m, lambda mm: {"logits":
                                                                                              c.logits(mm)}),
    "pretrain.fresh_rate_optimizer": lambda m, c: [
        (g["lr"], g["weight_decay"], sum(p.numel() for p in g["params"]))
        for g in pretrain.fresh_rate_optimizer(m, dataclasses.replace(c.profile, plm_fresh_lr=1e-2)).param_groups],
    "importance.gradient": lambda m, c: _values(importance.gradient(m, c.batches)),
    "importance.taylor": lambda m, c: _values(importance.taylor(m, c.batches)),
    "importance.frozen_movement": lambda m, c: _values(importance.frozen_movement(m, c.batches)),
    "importance.fisher": lambda m, c: _values(importance.fisher(m, c.batches)),
    "gates.unit_gates": lambda m, c: _gated_logits(m, c, "neuron"),
    "importance.gate_gradient": lambda m, c: importance.gate_gradient(m, c.batches, "head"),
    "importance.gate_fisher": lambda m, c: importance.gate_fisher(m, c.batches, "neuron"),
    "importance.mean_loss": lambda m, c: importance.mean_loss(m, c.batches),
    "importance.layer_skip_loss": lambda m, c: importance.layer_skip_loss(m, c.batches),
    "importance.unit_sums": lambda m, c: importance.unit_sums(m, importance.magnitude(m), "head"),
    "importance.score (layers)": lambda m, c: importance.score(m, "taylor", "layer", c.batches),
    "importance.score (weights)": lambda m, c: _values(importance.score(m, "fisher", "weight", c.batches)),
    # the batches path (the movement path trains: it is movement_finetune, covered in TRAINING)
    "importance.gather_inputs": lambda m, c: [
        [b["input_ids"] for b in importance.gather_inputs(m, "fisher", c.tok, c.ds, c.profile, 2, 1)["batches"]],
        importance.gather_inputs(m, "magnitude", c.tok, c.ds, c.profile, 2, 1), c.logits(m)],
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
    "l0.finalize": _l0_finalized,
    "l0.finalize (heads, neurons)": _l0_heads_finalized,
    "structure.XLNetStructure.prunable": lambda m, c: [masks.current_weight(*p).shape for p in XLNetStructure(m).prunable()],
    "masks.prune_to": _prune_to,
    "masks.make_permanent": lambda m, c: (masks.make_permanent(m), c.logits(m), masks.counts(m)),
    "masks.counts": lambda m, c: masks.counts(m),
    "masks.measured": lambda m, c: masks.measured(m, masks.counts(m)),
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
    "oneshot.score": lambda m, c: _values(oneshot.score(m, oneshot.PruneSpec("taylor", "head", 0.5, score_batches=1),
                                                        c.tok, c.ds, c.profile)),
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
    "rounds.apply_masks": _apply_masks,
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
    "rounds.masks_of": "reads the live masks (that is its job); a permanent model has none",
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
    elif isinstance(a, dict):
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
        scores = importance.movement_finetune(model, c.tok, c.ds, c.profile, 2)
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
