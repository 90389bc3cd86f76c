"""The folder of an iterative pruning run: its configuration, one record per round, checkpoints, resume.

``run.json`` holds the configuration key and provenance and is written first; a folder holding another
configuration (or other files) is refused untouched. After each round the checkpoint is written (model in
safetensors with the pruned entries written in as zeros, tokenizer, and ``state.safetensors`` with the weight
masks and any movement scores), and only then is the round's record appended to ``rounds.jsonl`` (the file
is rewritten through a temporary file, so a reader never sees half a line). A round is complete when its
record exists; a killed run restarts after the last complete one.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from .distributed import barrier, is_main
from ..config import UserError, check_output_dir, read_json, read_jsonl, write_json_atomic, write_text_atomic
from ..measure.report import provenance
from ..prune.plan import PruningPlan
from ..xlnet.masks import attach, current_mask, make_permanent, prunable_parameters
from ..xlnet.modeling import load_saved, load_tensors, save_model

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
        names = dict(zip(prunable_parameters(model), PruningPlan.of(model, weights=False).names()))
        tensors.update({f"movement.{names[p]}": s.contiguous() for p, s in (movement or {}).items()})
        if tensors:
            save_file(tensors, str(folder / "state.safetensors"))


@contextlib.contextmanager
def _masks_written(model):
    """Drop the pruning reparametrisation (zeros written into the weights) for the block, then re-attach the
    same masks; yields them."""
    masks = masks_of(model)
    make_permanent(model)
    try:
        yield masks
    finally:
        apply_masks(model, masks)


def load_checkpoint(folder: Path):
    """``(model, movement scores)`` from :func:`save_checkpoint`, the weight masks re-attached to the model."""

    model = load_saved(folder)
    state = (load_tensors(folder / "state.safetensors", hint=f"move {folder.parent} away and start again")
             if (folder / "state.safetensors").is_file() else {})
    masks = {k[len("mask."):]: v for k, v in state.items() if k.startswith("mask.")}
    apply_masks(model, masks)
    names = PruningPlan.of(model, weights=False).names()
    movement = {p: state[f"movement.{n}"] for p, n in zip(prunable_parameters(model), names)
                if f"movement.{n}" in state}
    return model, movement or None


def masks_of(model) -> dict[str, torch.Tensor]:
    """The live weight masks, keyed by the weight's name in the model's plan (``layer.<L>.rel_attn.q``, ``L`` the
    original layer index: ``PruningPlan.names``)."""
    names = PruningPlan.of(model, weights=False).names()
    return {n: current_mask(module, name).to(torch.uint8).contiguous()
            for n, (module, name) in zip(names, prunable_parameters(model)) if hasattr(module, f"{name}_mask")}


def apply_masks(model, masks: dict[str, torch.Tensor]) -> None:
    """Re-attach saved masks (by name, :func:`masks_of`) with ``masks.attach`` (the weights already
    hold zeros where masked). Raises ``UserError`` for a mask whose weight the model does not have."""
    names = PruningPlan.of(model, weights=False).names()
    unknown = set(masks) - set(names)
    if unknown:
        raise UserError(f"saved masks name weights this model does not have: {sorted(unknown)[0]}")
    for n, (module, name) in zip(names, prunable_parameters(model)):
        if n in masks:
            attach(module, name, masks[n].bool())
