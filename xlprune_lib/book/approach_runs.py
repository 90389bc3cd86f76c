"""Chapter 4's approaches read back from the reference results instead of trained again.

Issue 14 lets a chapter draw its heaviest grid from the committed reference results (``make results``, with
provenance) while it runs a smaller live slice, as long as the page says which is which. Chapter 4's one-shot
and gradual runs are most of its compute (about 800 of its 900 seconds of training and evaluation on a 2-core
CPU at seed 0); the iterative loop, which the chapter is about, always runs live. :func:`reference_runs` gives
the others in the shape ``iterative.load_run`` gives a live run, read from ``data/results/04_iterative.csv``,
but only when that table holds the same grid: a parameters cell that asks for another target, budget or
number of steps per round gets its runs trained, never someone else's numbers.
"""
from __future__ import annotations

import math

from ..config import UserError
from .results import provenance_summary, read_provenance, read_table

TABLE = "04_iterative"
GRID = ("target", "budget", "round_steps")      # what shapes a one-shot or gradual run (step only shapes the loop)


def reference_runs(names, profile: str, seed: int, grid: dict, requirement: float,
                   folder=None) -> tuple[dict, str | None]:
    """``({name: (records, summary)}, reason)``: the runs of ``names`` recorded in the reference table, or ``{}``
    and the reason (one line) they are not usable here.

    ``grid`` maps each key of :data:`GRID` to the chapter's value; the table's provenance must hold the same.
    ``requirement`` (validation accuracy, a fraction) decides each record's ``passed``, as the live loop does.
    Each record has ``round``, ``step``, ``prunable_sparsity`` (a fraction of the prunable set),
    ``model_sparsity`` (NaN: the table does not keep it), ``validation_accuracy``, ``test_accuracy``,
    ``total_seconds`` (wall time on the machine that made the table) and ``passed``; a summary is
    ``{"final": None, "stop_reason": "reference file"}``. Every run must be there, with its step-0 record: a
    table missing one of them gives ``{}`` and says which.
    """
    try:
        config = read_provenance(TABLE, folder)["config"]
        table = read_table(TABLE, folder)
    except UserError as exc:
        return {}, str(exc)
    different = [k for k in GRID if config.get(k) != grid[k]]
    if different:
        return {}, (f"the reference table {TABLE} was made with another grid ("
                    + ", ".join(f"{k} {config.get(k)} there, {grid[k]} here" for k in different) + ")")
    rows = table[(table.profile == profile) & (table.seed == seed)]
    runs = {}
    for name in names:
        run = rows[rows.approach == name].sort_values("steps")
        if run.empty or run.steps.iloc[0] != 0:
            return {}, f"the reference table {TABLE} has no run '{name}' for profile {profile}, seed {seed}"
        records = [{"round": k, "step": int(r.steps), "prunable_sparsity": float(r.sparsity),
                    "model_sparsity": math.nan, "validation_accuracy": float(r.validation_accuracy),
                    "test_accuracy": float(r.test_accuracy), "total_seconds": float(r.seconds),
                    "passed": bool(r.validation_accuracy >= requirement)}
                   for k, r in enumerate(run.itertuples())]
        runs[name] = records, {"final": None, "stop_reason": "reference file"}
    return runs, None


def sources_text(source: dict, reason: str | None, folder=None) -> str:
    """What the page prints under the runs: each approach and where its numbers come from (``source``:
    ``{name: "this run" | "reference file"}``), why the reference was not used (``reason``), and the reference
    table's commits, one per seed, when it was."""
    lines = [f"{name}: {where}" for name, where in source.items()]
    if reason:
        lines.append(f"trained here because {reason}")
    if "reference file" in source.values():
        commits = provenance_summary(read_provenance(TABLE, folder))["git commits"]
        lines.append(f"reference file data/results/{TABLE}.csv; git commits: {commits}")
    return "\n".join(lines)
