"""The prune -> fine-tune -> evaluate loop (the flowchart of chapter 4), with checkpoints and resume.

Round-based loop (iterative pruning, Han et al. 2015, "Learning both Weights and Connections", sec. 3.3):
start from a trained classifier; score importance (any method and granularity of ``importance``); prune to
the round's sparsity (``schedule.round_targets``: a constant step, or a fixed fraction of what remains);
fine-tune for a budget of optimizer steps; evaluate on the validation split; if the requirement (an absolute
accuracy, or the dense accuracy minus a tolerance) still holds, go round again, otherwise stop. The result is
the *last round that met the requirement*, never the first one that failed. ``--schedule cubic`` prunes
gradually inside one fine-tuning run instead (``gradual.py``); one-shot pruning is ``oneshot.py``.

Sparsity is cumulative and counted against the *starting* model: round ``k`` of weight pruning masks the
lowest-scoring weights until the round's fraction of the original prunable set is zero; round ``k`` of head,
neuron or layer pruning removes units (surgery) until that fraction of the original units is gone.
Movement scores come from the previous round's fine-tuning (the first round fine-tunes ``score_steps`` to
get them). Every round is checkpointed (``rounds.py``); the same command resumes after the last complete
round. Under ``torchrun`` the gradient-based scores are averaged across ranks (``distributed.py``).
"""
from __future__ import annotations

import contextlib
import shutil
from dataclasses import asdict
from pathlib import Path


from .distributed import average_across_ranks, barrier, init_distributed, is_main, rank_and_world
from .gradual import run_gradual
from .rounds import RUN, SUMMARY, RunContext, claim, load_checkpoint, read_records, save_checkpoint
from .score_inputs import MovementCallback, gather_inputs
from .specs import IterSpec
from ..config import cache_lock, check_output_dir, read_json, set_seed, write_json_atomic, write_text_atomic
from ..deploy.card import CARD, SPLITS, model_card
from ..measure.delivery import delivery
from ..measure.report import checkpoint_sizes, layer_report, provenance
from ..prune.importance import score
from ..prune.plan import PruningPlan
from ..prune.select import UnitFraction, WeightSparsity
from ..train.data import run_data, user_data
from ..train.finetune import train_classifier
from ..train.runs import default_out, own_profile, precision_record, quiet_libraries, run_key, source_data, source_run
from ..xlnet.modeling import check_supported, label_names, load_saved, saved_class

ITERATE_VERSION = 3   # 2: signed movement scores ranked as given. 3: plans (removed units in original indices)


def iterate_config(spec: IterSpec, source_key: str, profile, seed: int, data=None) -> dict:
    """The run's cache key fields; ``data`` (``UserData``) adds the user's data and its digest."""
    return {"source": source_key, "profile": profile.name, "seed": seed, "iterate_version": ITERATE_VERSION,
            **{k: getattr(profile, k) for k in ("task", "max_examples", "max_seq_len", "ft_batch", "recovery_lr")},
            **asdict(spec), **(data.key() if data is not None else {})}


def iterate(model_dir, spec: IterSpec, out=None, profile=None, seed: int = 0, progress: bool = True,
            report: bool = True, data=None) -> Path:
    """``xlprune iterate``: the round-based loop (constant / geometric) or gradual pruning (cubic).

    Returns ``out``; its ``summary.json`` names the final model (the last round that met the requirement, or the
    end of the gradual run), why the loop stopped, the data it ran on (``data``) and the precision requested and
    delivered (``precision``). Resumes when ``out`` holds earlier rounds of the same configuration; refuses a
    folder that holds anything else. ``progress``: the Trainer's progress bars; ``report``: one printed line per
    round; ``data``: the user's data (as in ``oneshot.prune_run``).
    """
    init_distributed()
    spec.check()
    check_supported(model_dir, classifier=True, tokenizer=True)
    model_dir, source_key, profile = source_run(model_dir, profile, data)
    user = user_data(source_data(model_dir, data))
    cfg = iterate_config(spec, source_key, profile, seed, user)
    key = run_key("iterate", cfg)
    out = Path(out) if out else default_out("iterate", profile, key)
    # the user's data is read and checked before the folder is claimed: bad files leave --out untouched
    splits = None if user is None else run_data(profile, seed, user, label_names(saved_class(model_dir)[1]))
    if not (out / RUN).is_file():
        check_output_dir(out)   # a file, a foreign folder or an unwritable place: refused before any wait
    # one process runs (or resumes) this folder at a time; under torchrun rank 0 holds the lock for all ranks
    with cache_lock(out) if is_main() else contextlib.nullcontext():
        return _iterate(model_dir, spec, out, profile, seed, progress, report, cfg, key, splits)


def _iterate(model_dir: Path, spec: IterSpec, out: Path, profile, seed: int, progress: bool, report: bool,
             cfg: dict, key: str, splits) -> Path:
    """:func:`iterate`'s rounds in ``out`` (under its lock): claim or resume the folder, run, summarise.
    ``splits``: the user's data as ``run_data`` gives it, or ``None`` for the profile's task."""
    claim(out, key, cfg)
    if (out / SUMMARY).is_file():
        return out
    if not progress:
        quiet_libraries()
    run = RunContext(model_dir, spec, out, profile, seed, progress, report, splits)
    if spec.schedule == "cubic":

        summary = run_gradual(run)
    else:
        summary = run_rounds(run)
    unit = "prunable weights" if spec.granularity == "weight" else f"{spec.granularity}s"
    final = summary["final"] or run.records[0]   # no round met the requirement: the result is the dense model
    delivered = final["prunable_sparsity" if spec.granularity == "weight" else "unit_sparsity"]
    summary["delivery"] = delivery(spec.target, delivered, unit, why=summary["stop_reason"])
    summary["precision"] = precision_record(run.profile)
    if is_main():
        if summary["final"] is not None and summary["final"]["round"] > 0:
            write_card(run, summary)
        write_json_atomic(out / SUMMARY, {"config_key": key, **summary, "data": run.data_record,
                                           "records": len(run.records)})
    barrier()
    return out


def write_card(run: RunContext, summary: dict) -> Path:
    """The model card (``README.md``, ``deploy.card``) of the folder ``summary["final_model"]``: the dense and
    final accuracies of the run's records, the delivered sparsity, the sizes counted from the saved folder, and
    the run's provenance. Returns the card's path."""
    folder, final = Path(summary["final_model"]), summary["final"]
    model = load_saved(folder)
    metrics = {"spec": asdict(run.spec), "delivery": summary["delivery"], "step": final["step"],
               "data": run.data_record, "labels": label_names(model.config), "source_model": str(run.model_dir),
               "source_profile": own_profile(run.model_dir),
               "dense": {k: run.records[0][k] for k in ("validation_accuracy", "test_accuracy")},
               **{k: final[k] for k in ("validation_accuracy", "test_accuracy")}, **provenance(run.cfg["config"])}
    sizes = {split: len(run.data[split]) for split in SPLITS}
    text = model_card(metrics, layer_report(model, run.profile.max_seq_len), checkpoint_sizes(folder), sizes,
                      run.profile, model.config.model_type)
    write_text_atomic(folder / CARD, text)
    return folder / CARD


def load_run(out) -> tuple[list[dict], dict]:
    """``(records, summary)`` of a finished ``iterate`` folder."""
    out = Path(out)
    return read_records(out), read_json(out / SUMMARY)


def run_rounds(run: RunContext) -> dict:
    """Score -> prune -> fine-tune ``round_steps`` -> evaluate, until the requirement fails or the target is met."""
    spec, targets = run.spec, run.spec.rounds()
    last = run.records[-1] if run.records else None
    if last and last["round"] > 0:
        model, movement = load_checkpoint(run.out / f"round-{last['round']}")
    else:
        model, movement = run.start(), None
    while run.records[-1]["passed"] and run.records[-1]["round"] < len(targets):
        k = run.records[-1]["round"] + 1
        set_seed(run.seed + k)
        steps = spec.round_steps + (spec.score_steps if spec.method == "movement" and movement is None else 0)
        scores = _scores(run, model, movement, k)
        removed = _prune(run, model, targets[k - 1], scores)
        mover = MovementCallback(model) if spec.method == "movement" else None
        set_seed(run.seed + k)
        train_classifier(model, run.tok, run.enc, run.profile, run.seed + k, 1.0, run.glue, run.progress,
                         callbacks=[mover] if mover else None, steps=spec.round_steps, lr=run.profile.recovery_lr)
        movement = mover.scores if mover else None
        save_checkpoint(model, run.tok, run.out / f"round-{k}", movement)
        barrier()
        run.commit(run.record(model, round=k, step=run.records[-1]["step"] + steps, target=targets[k - 1],
                              removed=removed))
        _drop_old_rounds(run)
    passing = [r for r in run.records if r["passed"]]
    final = passing[-1]["round"] if passing else None
    failed = not run.records[-1]["passed"]
    reason = (f"round {run.records[-1]['round']} missed the requirement" if failed and final is not None
              else "the dense model misses the requirement" if failed else "target sparsity reached")
    return {"stop_reason": reason, "final_round": final,
            "final_model": None if final is None else str(run.model_dir if final == 0 else run.out / f"round-{final}"),
            "final": passing[-1] if passing else None}


def _drop_old_rounds(run: RunContext) -> None:
    """Keep the checkpoints a resume or the result needs: the latest round and the last one that passed."""
    if not is_main():
        return

    keep = {run.records[-1]["round"]} | {max((r["round"] for r in run.records if r["passed"]), default=0)}
    for folder in run.out.glob("round-*"):
        if folder.name.split("-")[-1].isdigit() and int(folder.name.split("-")[-1]) not in keep:
            shutil.rmtree(folder, ignore_errors=True)


def _scores(run: RunContext, model, movement, k: int):
    """This round's importance scores; gradient-based ones averaged over every rank's share of the batches.
    Movement scores come from the previous round's fine-tuning (round 1 fine-tunes ``score_steps`` first)."""
    spec = run.spec
    inputs = {"seed": run.seed + k, "movement": movement}
    if movement is None or spec.method != "movement":
        rank, world = rank_and_world()
        inputs = gather_inputs(model, spec.method, run.tok, run.data["train"], run.profile, spec.score_batches,
                               spec.score_steps, run.seed + k, lr=run.profile.recovery_lr, progress=run.progress,
                               rank=rank, world=world)
    scores = score(model, spec.method, spec.granularity, **inputs)
    if inputs.get("batches") is not None:
        average_across_ranks(list(scores.values()), len(inputs["batches"]))
    return scores


def _prune(run: RunContext, model, target: float, scores):
    """Cumulative pruning to ``target`` of the *original* prunable weights or units, through the rule's
    :class:`PruningPlan` (weights masked, units cut); returns the units removed, in original indices. A unit
    rule is given the starting model's count (round 0's record), so it removes what is still missing."""
    spec = run.spec
    if spec.granularity == "weight":
        WeightSparsity(target, spec.scope)(model, scores).apply_masks(model)
        return None
    original = run.records[0]["units"][spec.granularity]
    start = original if spec.granularity == "layer" else \
        tuple(original) if spec.scope == "local" else sum(original)
    before = PruningPlan.of(model, weights=False)
    plan = UnitFraction(spec.granularity, target, spec.scope, start=start)(model, scores)
    plan.apply_surgery(model)
    return plan.removed_since(before)
