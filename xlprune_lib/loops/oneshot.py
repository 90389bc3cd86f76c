"""One-shot pruning of a fine-tuned classifier: score, cut once, optionally fine-tune, evaluate, save.

Every granularity goes one way: the method's :class:`~xlprune_lib.prune.scores.Scores`, the spec's rule
(``prune/select.py``), a :class:`~xlprune_lib.prune.plan.PruningPlan`. Weight granularity masks the weights the
plan masks (live ``torch.nn.utils.prune`` masks) and writes the zeros into the weights before saving; head, neuron and layer granularity remove the lowest-scoring
units with surgery, so the saved model is smaller (an ``xlnet-pruned`` folder). The sparsity reached is
always measured from the tensors: for weights, the zero fraction of the prunable set; for structures, also
``1 - remaining / original`` parameters of the prunable set. Granularity ``head+neuron`` removes heads and
neurons together until the requested fraction of the *encoder's* parameters is gone (``select.EncoderBudget``), the
structured pruning that chapter 5 turns into speed.

``xlprune prune`` is :func:`prune_run`; the chapters use :func:`spec_scores` and :func:`apply` (and
``book/experiments.py``'s curves, built on them).
"""
from __future__ import annotations

from dataclasses import asdict
from functools import partial
from pathlib import Path

from .specs import PruneSpec
from ..config import Profile, UserError, set_seed
from ..deploy.card import SPLITS, model_card
from ..measure.delivery import TOLERANCE, delivery
from ..measure.report import checkpoint_sizes, layer_report, provenance
from ..prune.importance import GRADIENT_METHODS, score
from ..prune.l0 import prune_with_gates
from ..prune.plan import PruningPlan
from ..prune.select import NM, EncoderBudget, UnitFraction, WeightSparsity
from ..train.data import load_tokenizer, run_data, user_data
from ..train.finetune import Evaluator, tokenize_split, train_classifier
from ..train.runs import (METRICS, default_out, own_profile, precision_record, produce_run, run_key, source_accuracy,
                          source_data, source_run)
from ..xlnet.masks import counts, make_permanent, sparsity_from, weight_sparsity
from ..xlnet.modeling import check_supported, label_names, load_saved, require_classifier, save_model
from ..xlnet.structure import ENCODER, XLNetStructure
from .l0_training import train_l0
from .score_inputs import gather_inputs

# Part of every prune run's key: bump it when the pruning code changes what a request produces.
PRUNE_VERSION = 4   # 3: signed scores ranked as given; L0 finalized to its target. 4: plans (removed units in
                    # original indices, the plan recorded in the saved config)


def spec_scores(model, spec: PruneSpec, tokenizer=None, train=None, profile: Profile | None = None, seed: int = 0,
                progress: bool = False):
    """The :class:`~xlprune_lib.prune.scores.Scores` ``spec`` asks for (``importance.score``; N:M ranks single
    weights). Movement first fine-tunes ``model`` in place for ``spec.score_steps``
    (``score_inputs.gather_inputs``). Raises ``UserError`` when a gradient method lacks its data."""
    spec.check()
    inputs = {"seed": seed}
    if spec.method in GRADIENT_METHODS:
        require_classifier(model)
        if train is None or tokenizer is None or profile is None:
            raise UserError(f"{spec.method} scores need the tokenizer, the training split and the profile")
        inputs = gather_inputs(model, spec.method, tokenizer, train, profile, spec.score_batches, spec.score_steps,
                               seed, progress=progress)
    kind = "weight" if NM.parse(spec.granularity) else spec.granularity    # N:M ranks single weights
    return score(model, spec.method, kind, **inputs)


def rule(spec: PruneSpec):
    """The threshold rule (``prune/select.py``) a spec asks for."""
    if spec.granularity == "weight":
        return WeightSparsity(spec.sparsity, spec.scope)
    if (nm := NM.parse(spec.granularity)) is not None:
        return nm
    if spec.granularity == ENCODER:      # the sparsity is a fraction of the encoder's parameters
        return EncoderBudget(spec.sparsity)
    return UnitFraction(spec.granularity, spec.sparsity, spec.scope)


def apply(model, spec: PruneSpec, scores) -> dict:
    """Prune ``model`` in place to ``spec.sparsity`` with ``scores``; return what was measured.

    The spec's rule makes a :class:`PruningPlan`; weights are masked to it (live ``torch.nn.utils.prune``
    masks), units are cut by surgery. ``mask_sparsity``: the zero fraction of the prunable weights as the
    forward pass uses them. ``delivery`` (``measure/delivery.py``) compares the request with what the tensors
    show, in the request's unit: the zero fraction of the prunable weights, the fraction of heads / neurons /
    layers removed, or the fraction of the encoder's parameters removed (``head+neuron``). ``removed``: what
    the plan removed, in original indices (``PruningPlan.removed``).
    """
    before = counts(model)
    start = PruningPlan.of(model, weights=False)
    nm = NM.parse(spec.granularity)
    weights = spec.granularity == "weight" or nm is not None      # masks, nothing removed
    units_before = None if weights or spec.granularity == ENCODER else \
        XLNetStructure(model).total_units(spec.granularity)
    encoder_before = XLNetStructure(model).encoder_params()
    made = rule(spec)
    if spec.granularity == ENCODER:
        plan, info = made.plan_with_share(model, scores)
    else:
        plan, info = made(model, scores), {}
    if weights:
        plan.apply_masks(model)
    else:
        plan.apply_surgery(model)
    out = {"mask_sparsity": weight_sparsity(XLNetStructure(model).prunable()), **_sparsity_record(model, before),
           "removed": None if weights else plan.removed_since(start)}
    if nm is not None:
        out["nm_groups"] = nm.groups(model)
    if weights:
        out["delivery"] = delivery(spec.sparsity, out["mask_sparsity"], "prunable weights")
    elif spec.granularity == ENCODER:
        after = XLNetStructure(model).encoder_params()
        out.update({"encoder_params_before": encoder_before, "encoder_params_after": after,
                    "encoder_removed": 1 - after / encoder_before, "share": info["share"]})
        out["delivery"] = delivery(spec.sparsity, out["encoder_removed"], "encoder parameters")
    else:
        out["unit_sparsity"] = 1 - XLNetStructure(model).total_units(spec.granularity) / units_before
        out["delivery"] = delivery(spec.sparsity, out["unit_sparsity"], f"{spec.granularity}s")
    return out





def _sparsity_record(model, before: dict) -> dict:
    """The prunable set's sparsity now against its size ``before`` (``masks.counts``; surgery shrinks the
    tensors), with the two counts behind it."""
    return {"prunable_sparsity": sparsity_from(model, before)["prunable_sparsity"],
            "prunable_params_before": before["prunable"], "prunable_nonzero_after": counts(model)["prunable_nonzero"]}


def prune_config(spec: PruneSpec, source_key: str, profile: Profile, seed: int, data=None) -> dict:
    """The run's cache key fields; ``data`` (``UserData``) adds the user's data and its digest."""
    return {"source": source_key, "profile": profile.name, "seed": seed, "prune_version": PRUNE_VERSION,
            "recovery_lr": profile.recovery_lr, **asdict(spec), **(data.key() if data is not None else {}),
            # N:M groups moved to each matrix's input axis (layer_1 and o had theirs along the outputs): only
            # N:M runs get a new key, so the book's other cached runs stay valid
            **({"nm_axes": "input"} if NM.parse(spec.granularity) else {})}


def prune_run(model_dir, spec: PruneSpec, out=None, profile: Profile | None = None, seed: int = 0,
              progress: bool = True, data=None) -> Path:
    """``xlprune prune``: load a fine-tuned classifier, prune it, optionally fine-tune, evaluate, save.

    ``out`` receives the model (safetensors; weights pruned permanently, structures removed), the tokenizer,
    ``metrics.json`` (validation / test accuracy before and after, measured sparsity, provenance) and
    ``report.json`` (``report.layer_report``). Refuses an ``out`` that holds a different run; ``out=None`` uses
    the run cache, so the same request again returns the stored result.

    ``data``: the user's data (a path or hub name, ``train.data.UserData``); default: the data the folder was
    fine-tuned on (a user's, or its profile's task). A folder from outside xlprune needs it
    (``runs.source_run``). Bad data is a one-line ``UserError`` before anything is written.
    """
    spec.check()
    check_supported(model_dir, classifier=True, tokenizer=True)
    model_dir, source_key, profile = source_run(model_dir, profile, data)
    user = user_data(source_data(model_dir, data))
    cfg = prune_config(spec, source_key, profile, seed, user)
    key = run_key("prune", cfg)
    out = Path(out) if out else default_out("prune", profile, key)
    return produce_run(out, key, lambda: _prune_run(model_dir, spec, out, profile, seed, progress, source_key, cfg,
                                                    key, user))


def _prune_run(model_dir: Path, spec: PruneSpec, out: Path, profile: Profile, seed: int, progress: bool,
               source_key: str, cfg: dict, key: str, user) -> Path:
    """:func:`prune_run`'s work into ``out`` (under its lock, ``runs.produce_run``); ``user``: the user's data
    (``train.data.UserData``) or ``None``."""
    model = load_saved(model_dir)
    require_classifier(model)
    tok = load_tokenizer(model_dir)
    data, glue_metric, data_record = run_data(profile, seed, user, label_names(model.config))
    evaluator = Evaluator(tok, {s: data[s] for s in ("validation", "test")}, profile.max_seq_len, glue_metric)

    def evaluate_all(m):
        return {k: v for k, v in evaluator(m).items() if k.endswith("_accuracy")}

    dense = source_accuracy(model_dir, source_key, profile, seed, lambda: evaluate_all(model),
                            user.key() if user is not None else None)
    set_seed(seed)
    header = {"config_key": key, "profile": profile.name, "task": data_record.get("task"), "seed": seed,
              "data": data_record, "labels": label_names(model.config), "source_model": str(model_dir),
              "source_profile": own_profile(model_dir)}
    if spec.method == "l0":
        return _l0_run(model, tok, data, spec, profile, seed, progress, out, cfg, header, dense, evaluate_all)
    scores = spec_scores(model, spec, tok, data["train"], profile, seed, progress)
    scored = evaluate_all(model) if spec.method == "movement" else dense  # movement fine-tuned while scoring
    measured = apply(model, spec, scores)
    oneshot = evaluate_all(model)
    metrics = {**header, "spec": asdict(spec), **measured,
               "dense": dense, "before_pruning": scored, "one_shot": oneshot}
    if spec.finetune_epochs > 0:
        enc = {k: tokenize_split(data[k], tok, profile.max_seq_len) for k in ("train", "validation")}
        set_seed(seed)
        _, seconds = train_classifier(model, tok, enc, profile, seed, spec.finetune_epochs, glue_metric, progress,
                                      lr=profile.recovery_lr)
        metrics["finetune_seconds"] = seconds
        metrics["after_finetune"] = evaluate_all(model)
    make_permanent(model)
    final = metrics.get("after_finetune", oneshot)
    metrics.update(final)  # validation_accuracy / test_accuracy of the saved model
    return _save_result(model, tok, out, profile, cfg, metrics, _split_sizes(data))


def _split_sizes(data) -> dict[str, int]:
    return {split: len(data[split]) for split in SPLITS}


def _save_result(model, tok, out, profile, cfg, metrics: dict, sizes: dict[str, int]) -> Path:
    """Write the pruned model, ``report.json``, ``metrics.json`` (with the saved sparsity, ``precision``
    requested and delivered, and provenance) and the model card (``README.md``, ``deploy.card``; ``sizes``:
    examples per evaluation split)."""
    report = layer_report(model, profile.max_seq_len)
    metrics["prunable_sparsity_saved"] = report["totals"]["prunable"]["sparsity"]
    metrics["precision"] = precision_record(profile)
    metrics.update(provenance(cfg))
    card = partial(model_card, metrics, report, sizes=sizes, profile=profile, model_type=model.config.model_type)
    save_model(model, tok, out, extra_files={"report.json": report, METRICS: metrics},
               card=lambda folder: card(checkpoint_sizes(folder)))
    return out


def _l0_run(model, tok, data, spec, profile, seed, progress, out, cfg, header, dense, evaluate_all) -> Path:
    """``xlprune prune --method l0``: train gates with the weights, prune with them, evaluate, save (same
    outputs)."""
    before = counts(model)
    enc = {"train": tokenize_split(data["train"], tok, profile.max_seq_len)}
    trainer, seconds = train_l0(model, tok, enc, profile, seed, spec.granularity, lam=spec.lam,
                                target=spec.sparsity, epochs=spec.l0_epochs, progress=progress)
    history = trainer.l0_history
    gated = evaluate_all(model.eval())
    plan = prune_with_gates(model, target=spec.sparsity)
    final = evaluate_all(model)
    done = _sparsity_record(model, before)
    expected = history[-1]["expected_sparsity"] if history else None
    why = None
    if spec.sparsity is not None and expected is not None and spec.sparsity > expected + TOLERANCE:
        why = f"the gates reached an expected sparsity of {expected:.4f} only"
    metrics = {**header, "spec": asdict(spec), "dense": dense, "gated_eval": gated, **final,
               "train_seconds": seconds, "expected_sparsity_final": expected, **done,
               "removed": plan.removed(),
               "delivery": delivery(spec.sparsity, done["prunable_sparsity"], "prunable weights", why=why),
               "l0_history": history[:: max(1, len(history) // 200)]}
    return _save_result(model, tok, out, profile, cfg, metrics, _split_sizes(data))
