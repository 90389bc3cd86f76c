"""What the *Reference results* page reads off the committed tables (``data/results``), one seed column each.

The page only draws and prints; the selection and averaging live here so that they are tested:

* :func:`split_speed`: chapter 5's speed table split into its PyTorch rows and its ONNX Runtime rows;
* :func:`sparsity_points`: every measured (sparsity, test accuracy) point, one-shot without fine-tuning apart
  from the methods that fine-tune (chapters 3 to 5);
* :func:`highest_sparsity_within`: per approach, the highest sparsity whose validation accuracy stays within a
  tolerance of the dense model of the same seed, and in how many seeds such a point exists.

Sparsities are fractions of the prunable set (attention projections and FFN matrices), accuracies fractions
in [0, 1].
"""
from __future__ import annotations

import pandas as pd

ONESHOT_NO_FT = "one-shot, no fine-tuning"     # chapter 4's name for chapter 2's magnitude curve


def dense_by_seed(weights: pd.DataFrame) -> pd.DataFrame:
    """The dense model of each seed (the 0-sparsity magnitude row of ``02_oneshot_weights``), indexed by seed."""
    return weights[(weights.requested == 0) & (weights.method == "magnitude")].set_index("seed")


def split_speed(speed: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(torch, deployed)``: the rows of ``05_speed`` timed in PyTorch, and those timed in ONNX Runtime (against
    the dense model exported and timed the same way). Tables made before the deployment section have no
    ``runtime`` column: every row is PyTorch fp32."""
    if "runtime" not in speed:
        speed = speed.assign(runtime="torch", dtype="fp32")
    return speed[speed.runtime == "torch"], speed[speed.runtime != "torch"]


def sparsity_points(tables: dict[str, pd.DataFrame]) -> tuple[list[dict], list[dict]]:
    """``(oneshot, finetuned)`` rows ``{"method", "sparsity", "test_accuracy", "test_ci_low", "test_ci_high",
    "seed"}``.

    ``oneshot``: chapter 2's weight curves (every score, no fine-tuning, including each seed's dense point).
    ``finetuned``: chapter 4's approaches after pruning began (step 0 is the dense model itself), chapter 3's
    L0 runs, and chapter 5's structured models (heads and neurons, or layers, removed; PyTorch rows), with the
    share of the prunable set they removed as their sparsity.
    """
    kept = ["test_accuracy", "test_ci_low", "test_ci_high", "seed"]

    def points(frame, method, sparsity):
        return [{"method": m, "sparsity": s, **r} for m, s, r in
                zip(method, frame[sparsity], frame[kept].to_dict("records"))]

    weights = tables["02_oneshot_weights"]
    oneshot = points(weights, weights.method, "sparsity")
    it = tables["04_iterative"]
    tuned = it[(it.approach != ONESHOT_NO_FT) & (it.steps > 0)]
    finetuned = points(tuned, tuned.approach, "sparsity")
    l0 = tables["03_l0"]
    finetuned += points(l0, "L0 " + l0.granularity, "sparsity")
    torch_rows, _ = split_speed(tables["05_speed"])
    for prefix, name in (("heads+neurons", "heads + neurons removed (chapter 5)"),
                         ("layers", "layers removed (chapter 5)")):
        rows = torch_rows[torch_rows.method.str.startswith(prefix)]
        finetuned += points(rows, [name] * len(rows), "prunable_removed")
    return oneshot, finetuned


def highest_sparsity_within(tables: dict[str, pd.DataFrame], tolerance: float = 0.01) -> list[dict]:
    """For every approach of chapter 4 (after pruning began) and every score of chapter 2 (one-shot, no
    fine-tuning): the highest measured sparsity whose validation accuracy is at least the same seed's dense
    validation accuracy minus ``tolerance`` (a fraction: 0.01 is one point).

    One row per approach: ``seeds meeting it`` (``"k of n"``), ``highest sparsity (mean)`` and ``test (mean)``
    over the seeds that meet it (``None`` when none does), and the ``range`` of those sparsities. Chapter 4's
    ``one-shot, no fine-tuning`` curve is chapter 2's magnitude curve (same model, score and grid), listed once.
    Raises ``ValueError`` if a seed of the tables has no dense row.
    """
    weights, it = tables["02_oneshot_weights"], tables["04_iterative"]
    dense = dense_by_seed(weights)
    candidates = [(a, part[part.steps > 0]) for a, part in it.groupby("approach", sort=False) if a != ONESHOT_NO_FT]
    candidates += [(f"{m} score, one-shot, no fine-tuning (chapter 2)", part)
                   for m, part in weights[weights.requested > 0].groupby("method", sort=False)]
    rows = []
    for name, part in candidates:
        found = []
        for seed, runs in part.groupby("seed"):
            if seed not in dense.index:
                raise ValueError(f"02_oneshot_weights has no dense row (magnitude, requested 0) for seed {seed}")
            ok = runs[runs.validation_accuracy >= dense.loc[seed, "validation_accuracy"] - tolerance]
            # the highest sparsity; of several rows there (a gradual run held at its target), the last step
            found.append(ok[ok.sparsity == ok.sparsity.max()].iloc[-1] if len(ok) else None)
        hits = [f for f in found if f is not None]
        rows.append({"approach": name, "seeds meeting it": f"{len(hits)} of {len(found)}",
                     "highest sparsity (mean)": sum(h.sparsity for h in hits) / len(hits) if hits else None,
                     "range": f"{min(h.sparsity for h in hits):.1%} to {max(h.sparsity for h in hits):.1%}"
                     if hits else "",
                     "test (mean)": sum(h.test_accuracy for h in hits) / len(hits) if hits else None})
    return rows
