"""The folder of an iterative pruning run: its configuration, one record per round, checkpoints, resume.

``run.json`` holds the configuration key and provenance and is written first; a folder holding another
configuration (or other files) is refused untouched. After each round the checkpoint is written (model in
safetensors with the pruned entries written in as zeros, tokenizer, and ``state.safetensors`` with the weight
masks and any movement scores), and only then is the round's record appended to ``rounds.jsonl`` (the file
is rewritten through a temporary file, so a reader never sees half a line). A round is complete when its
record exists; a killed run restarts after the last complete one.

:class:`RunContext` is what every round of a run shares, the round-based loop (``iterative.py``) and gradual
pruning (``gradual.py``) alike.
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from .distributed import barrier, identical_across_ranks, is_main, plan_digest, rank_and_world
from .specs import IterSpec, parse_requirement
from ..config import UserError, check_output_dir, read_json, read_jsonl, write_json_atomic, write_text_atomic
from ..measure.report import git_commit, provenance
from ..prune.plan import PruningPlan, named_weights
from ..prune.scores import Scores
from ..train.data import load_tokenizer, run_data
from ..train.finetune import Evaluator, tokenize_split
from ..xlnet.masks import attach, counts, current_mask, make_permanent, sparsity_from
from ..xlnet.modeling import load_saved, load_tensors, require_classifier, save_model
from ..xlnet.structure import XLNetStructure

RECORDS = "rounds.jsonl"
RUN = "run.json"
SUMMARY = "summary.json"
TIMING_KEYS = ("seconds", "total_seconds")   # the only record fields that differ between identical runs


def claim(out: Path, key: str, cfg: dict) -> None:
    """Make ``out`` this run's folder: new or empty folders are claimed (``run.json``), the same run's folder is
    resumed, and anything else is refused without touching it. Every rank looks before rank 0 writes."""
    run = out / RUN
    fresh = not run.is_file()
    if not fresh:
        stored = read_json(run, hint="move the folder away or choose another --out").get("config_key")
        if stored != key:
            raise UserError(f"{out} holds a different run (config {stored}, this one is {key}); nothing was "
                            "changed: choose another --out")
    else:
        check_output_dir(out)   # absent or an empty folder, and writable; a file or foreign folder is refused
    barrier()
    if fresh and is_main():
        write_json_atomic(run, {"config_key": key, **provenance(cfg)})
    barrier()


def read_records(out: Path) -> list[dict]:
    path = out / RECORDS
    if not path.is_file():
        return []
    return read_jsonl(path, hint="move the folder away or choose another --out")


def append_record(out: Path, record: dict) -> None:
    """Rewrite ``rounds.jsonl`` with one more line through a temporary file (a reader never sees half a line)."""
    if not is_main():
        return
    lines = [json.dumps(r, sort_keys=True) for r in read_records(out)] + [json.dumps(record, sort_keys=True)]
    write_text_atomic(out / RECORDS, "\n".join(lines) + "\n")


def same_records(a: list[dict], b: list[dict]) -> bool:
    """Records equal up to wall-clock fields."""
    strip = [[{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rs] for rs in (a, b)]
    return strip[0] == strip[1]


def save_checkpoint(model, tok, folder: Path, movement: dict | None = None) -> None:
    """Write the pruned entries into the weights on every rank (so the model in memory is exactly what a reload
    of the checkpoint gives, and an interrupted, resumed run continues from the same state); rank 0 then saves
    the model (safetensors), the tokenizer, and the weight masks and movement scores in ``state.safetensors``."""

    with _masks_written(model) as masks:
        if not is_main():
            return
        save_model(model, tok, folder, replace=True)   # a resumed round rewrites its own checkpoint
        tensors = {f"mask.{k}": v for k, v in masks.items()}
        tensors.update({f"movement.{n}": s.contiguous() for n, s in (movement or {}).items()})
        if tensors:
            save_file(tensors, str(folder / "state.safetensors"))


@contextlib.contextmanager
def _masks_written(model):
    """Drop the pruning reparametrisation (zeros written into the weights) for the block, then re-attach the
    same masks; yields them."""
    masks = live_weight_masks(model)
    make_permanent(model)
    try:
        yield masks
    finally:
        reattach_masks(model, masks)


def load_checkpoint(folder: Path):
    """``(model, movement scores)`` from :func:`save_checkpoint`, the weight masks re-attached to the model."""

    model = load_saved(folder)
    state = (load_tensors(folder / "state.safetensors", hint=f"move {folder.parent} away and start again")
             if (folder / "state.safetensors").is_file() else {})
    masks = {k[len("mask."):]: v for k, v in state.items() if k.startswith("mask.")}
    reattach_masks(model, masks)
    movement = {n: state[f"movement.{n}"] for n in PruningPlan.of(model, weights=False).names()
                if f"movement.{n}" in state}
    return model, Scores("weight", movement) if movement else None


def live_weight_masks(model) -> dict[str, torch.Tensor]:
    """The live ``torch.nn.utils.prune`` masks as they are (uint8), keyed by the weight's name in the model's
    plan (``layer.<L>.rel_attn.q``, ``L`` the original layer index: ``PruningPlan.names``).

    Not ``PruningPlan.of(model).weights``: that is what the forward pass removes (masks and exact zeros alike),
    while a checkpoint must give back the same masks, and so the same trainable entries, after a resume."""
    return {n: current_mask(module, attr).to(torch.uint8).contiguous()
            for n, module, attr in named_weights(model) if hasattr(module, f"{attr}_mask")}


def reattach_masks(model, masks: dict[str, torch.Tensor]) -> None:
    """Re-attach saved masks (by name, :func:`live_weight_masks`) with ``masks.attach`` (the weights already
    hold zeros where masked). Raises ``UserError`` for a mask whose weight the model does not have."""
    named = named_weights(model)
    unknown = set(masks) - {n for n, _, _ in named}
    if unknown:
        raise UserError(f"saved masks name weights this model does not have: {sorted(unknown)[0]}")
    for n, module, attr in named:
        if n in masks:
            attach(module, attr, masks[n].bool())


# --- the run every round shares -------------------------------------------------------------------------

def threshold(requirement: str, dense_accuracy: float) -> float:
    kind, value = parse_requirement(requirement)
    return value if kind == "absolute" else dense_accuracy - value


class RunContext:
    """What every round of an ``iterate`` run needs, shared by the round-based loop (``iterative.py``) and
    gradual pruning (``gradual.py``): the run folder and its records, the tokenizer, the data and its
    evaluator, the clock, and the printer.

    ``data``: ``run_data``'s ``(splits, metric, record)``, read before the run folder was claimed (default: the
    profile's task). :meth:`start` loads the source classifier and records round 0; :meth:`record` measures a
    model (sparsity against the first record's sizes, accuracy, provenance); :meth:`commit` appends it.
    """
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
        rec = {**fields, **sparsity_from(model, start), **self.unit_sparsity(model, first), **metrics, "requirement": need,
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

