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
import time
from dataclasses import asdict
from pathlib import Path

import torch

from .distributed import (average_across_ranks, barrier, identical_across_ranks, init_distributed, is_main,
                          plan_digest, rank_and_world)
from .gradual import run_gradual
from .oneshot import require_classifier
from .specs import IterSpec, parse_requirement
from .rounds import RUN, SUMMARY, append_record, claim, load_checkpoint, read_records, save_checkpoint
from ..config import cache_lock, check_output_dir, read_json, set_seed, write_json_atomic, write_text_atomic
from ..deploy.card import CARD, SPLITS, model_card
from ..measure.delivery import delivery
from ..measure.report import checkpoint_sizes, git_commit, layer_report, provenance
from ..prune.importance import MovementCallback, gather_inputs, score
from ..prune.plan import PruningPlan
from ..prune.select import WeightSparsity, lowest_units
from ..train.data import load_tokenizer, run_data, user_data
from ..train.finetune import Evaluator, tokenize_split, train_classifier
from ..train.runs import default_out, own_profile, precision_record, quiet_libraries, run_key, source_data, source_run
from ..xlnet.masks import counts, measured, prunable_parameters
from ..xlnet.modeling import check_supported, label_names, load_saved, saved_class
from ..xlnet.structure import XLNetStructure

ITERATE_VERSION = 3   # 2: signed movement scores ranked as given. 3: plans (removed units in original indices)


def threshold(requirement: str, dense_accuracy: float) -> float:
    kind, value = parse_requirement(requirement)
    return value if kind == "absolute" else dense_accuracy - value


def iterate_config(spec: IterSpec, source_key: str, profile, seed: int, data=None) -> dict:
    """The run's cache key fields; ``data`` (``UserData``) adds the user's data and its digest."""
    return {"source": source_key, "profile": profile.name, "seed": seed, "iterate_version": ITERATE_VERSION,
            **{k: getattr(profile, k) for k in ("task", "max_examples", "max_seq_len", "ft_batch", "recovery_lr")},
            **asdict(spec), **(data.key() if data is not None else {})}


# --- running it ---------------------------------------------------------------------------------------

class _Run:
    """What every round needs: the run folder, the data, the evaluator, the starting sizes, the printer."""
    def __init__(self, model_dir: Path, spec: IterSpec, out: Path, profile, seed: int, progress: bool,
                 report: bool = True, data=None):

        self.model_dir, self.spec, self.out, self.profile, self.seed = model_dir, spec, out, profile, seed
        self.progress, self.report = progress, report
        self.cfg = read_json(out / RUN)
        self.records = read_records(out)   # read first: a damaged record is refused before any data is loaded
        self.tok = load_tokenizer(model_dir)
        # ``data``: run_data's (splits, metric, record), read before the run folder was claimed
        self.data, self.glue, self.data_record = data or run_data(profile, seed)
        self.enc = {"train": tokenize_split(self.data["train"], self.tok, profile.max_seq_len)}
        self.evaluator = Evaluator(self.tok, {s: self.data[s] for s in ("validation", "test")},
                                   profile.max_seq_len, self.glue)
        self.clock = time.perf_counter()

    def start(self):
        """The source classifier and, on a fresh run, its round-0 record (the dense accuracy)."""
        model = load_saved(self.model_dir)
        require_classifier(model)
        if not self.records:
            self.commit(self.record(model, round=0, step=0, target=0.0))
        return model

    def evaluate(self, model) -> dict:
        return {k: v for k, v in self.evaluator(model).items() if k.endswith("_accuracy")}

    def record(self, model, **fields) -> dict:
        """Measure, evaluate and append one record (after its checkpoint is on disk)."""
        if not identical_across_ranks(plan_digest(model)):
            raise RuntimeError("the processes disagree on what was pruned (masks or shapes differ across ranks)")
        first = self.records[0] if self.records else None
        start = first["start"] if first else counts(model)
        metrics = self.evaluate(model)
        need = threshold(self.spec.requirement, (first or metrics)["validation_accuracy"])
        now = time.perf_counter()
        seconds, self.clock = now - self.clock, now
        rec = {**fields, **measured(model, start), **self.unit_sparsity(model, first), **metrics, "requirement": need,
               "passed": metrics["validation_accuracy"] >= need, "seconds": seconds,
               "processes": rank_and_world()[1],
               "total_seconds": (self.records[-1]["total_seconds"] if self.records else 0.0) + seconds,
               "config_key": self.cfg["config_key"], "config": self.cfg["config"], "git_commit": git_commit()}
        if not first:
            rec["start"] = start
            s = XLNetStructure(model)
            rec["units"] = {g: s.unit_counts(g) for g in ("head", "neuron")} | {"layer": len(s.layers)}
        return rec

    def unit_sparsity(self, model, first: dict | None) -> dict:
        """For head, neuron and layer runs: the fraction of the starting model's units removed (what
        ``--target`` counts), from the tensors."""
        g = self.spec.granularity
        if g == "weight" or first is None:
            return {"unit_sparsity": 0.0} if g != "weight" else {}
        start = first["units"][g]                    # per layer (heads, neurons) or a count (layers)
        return {"unit_sparsity": 1 - XLNetStructure(model).total_units(g) / (start if g == "layer" else sum(start))}

    def commit(self, rec: dict) -> None:
        append_record(self.out, rec)
        barrier()
        self.records.append(rec)
        if self.report and is_main():
            print(f"round {rec['round']:>2}  step {rec['step']:>5}  sparsity {rec['prunable_sparsity']:.3f} "
                  f"(model {rec['model_sparsity']:.3f})  val {rec['validation_accuracy']:.4f}  "
                  f"test {rec['test_accuracy']:.4f}  {'meets' if rec['passed'] else 'misses'} "
                  f"{rec['requirement']:.4f}  {rec['seconds']:.0f} s", flush=True)


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
    run = _Run(model_dir, spec, out, profile, seed, progress, report, splits)
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


def write_card(run: "_Run", summary: dict) -> Path:
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


def run_rounds(run: "_Run") -> dict:
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
        mover = MovementCallback(prunable_parameters(model)) if spec.method == "movement" else None
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


def _drop_old_rounds(run: _Run) -> None:
    """Keep the checkpoints a resume or the result needs: the latest round and the last one that passed."""
    if not is_main():
        return

    keep = {run.records[-1]["round"]} | {max((r["round"] for r in run.records if r["passed"]), default=0)}
    for folder in run.out.glob("round-*"):
        if folder.name.split("-")[-1].isdigit() and int(folder.name.split("-")[-1]) not in keep:
            shutil.rmtree(folder, ignore_errors=True)


def _scores(run: _Run, model, movement, k: int):
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
        tensors = list(scores.values()) if isinstance(scores, dict) else \
            [scores] if isinstance(scores, torch.Tensor) else list(scores)
        average_across_ranks(tensors, len(inputs["batches"]))
    return scores


def _prune(run: _Run, model, target: float, scores):
    """Cumulative pruning to ``target`` of the *original* prunable weights or units, through a
    :class:`PruningPlan` (weights masked, units cut); returns the units removed, in original indices."""
    spec = run.spec
    if spec.granularity == "weight":
        WeightSparsity(target, spec.scope)(model, scores).apply_masks(model)
        return None
    original = run.records[0]["units"][spec.granularity]
    if spec.granularity == "layer":
        original, current = [original], [len(XLNetStructure(model).layers)]
    else:
        current = XLNetStructure(model).unit_counts(spec.granularity)

    def fraction(n0, n):  # of what remains, so that round(target * n0) of the original units are gone
        return max(0, round(target * n0) - (n0 - n)) / n if n else 0.0

    if spec.scope == "global" or spec.granularity == "layer":
        removed = lowest_units(scores, fraction(sum(original), sum(current)))
    else:
        removed = {li: lowest_units([s], fraction(n0, n)).get(0, []) for li, (s, n0, n)
                   in enumerate(zip(scores, original, current))}
    start = PruningPlan.of(model, weights=False)
    plan = start.without(spec.granularity, removed)
    plan.finalize(model)
    return plan.removed_since(start)


