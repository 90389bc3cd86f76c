"""Which method when: a decision table read off the reference results (``data/results``).

For each goal a reader may have (a smaller file, a faster model on a CPU or a GPU, the least accuracy lost at a
given sparsity) the row names the choice the measurements support and the evidence: the measured numbers, the
table they come from and the chapter that explains them. Rules:

* a choice must keep test accuracy within ``tolerance`` of dense (mean over seeds) unless the goal is accuracy
  itself; the dense accuracy and the tolerance are printed with it;
* accuracies are compared with their 95% intervals (``*_ci_low`` / ``*_ci_high``, averaged over seeds): every
  candidate whose interval overlaps the best one's is named beside it, because the data cannot tell them apart
  (Blalock et al. 2020 ask for exactly this care).

Nothing here is written by hand: change the reference results and the table changes with them.
"""
from __future__ import annotations

import pandas as pd

from ..measure import stats
from .reference import ONESHOT_NO_FT

CHAPTERS = {"02": "02_importance_metrics", "04": "04_iterative_finetuning", "05": "05_structured_speedup"}


def _by_method(frame: pd.DataFrame, keys) -> pd.DataFrame:
    """Mean over seeds of every numeric column, one row per ``keys``; ``seeds``: how many seeds each row has."""
    grouped = frame.groupby(list(keys), sort=False, dropna=False)
    return grouped.mean(numeric_only=True).assign(seeds=grouped.size()).reset_index()


def _overlapping(frame: pd.DataFrame, best: pd.Series, name: str) -> list[str]:
    """The other rows whose test interval overlaps ``best``'s: not distinguishable from it."""
    other = frame[frame[name] != best[name]]
    return [r[name] for _, r in other.iterrows()
            if not stats.apart((r.test_ci_low, r.test_ci_high), (best.test_ci_low, best.test_ci_high))]


def _acc(row) -> str:
    return f"{row.test_accuracy:.1%} [{row.test_ci_low:.1%}, {row.test_ci_high:.1%}]"


def deployment_rows(speed: pd.DataFrame, tolerance: float = 0.01) -> list[dict]:
    """The smallest file and the fastest CPU model among the chapter-5 rows (``05_speed``) whose mean test accuracy
    stays within ``tolerance`` of dense. File size: the saved safetensors, the sparse bitmask format, or the ONNX
    file, whichever is smallest for that row. Latency: the ratio to dense at the largest batch, same runtime."""
    rows = _by_method(speed, ("method", "runtime", "dtype"))
    rows["variant"] = rows.method + " · " + rows.runtime + " " + rows.dtype
    dense = rows[(rows.method == "dense") & (rows.runtime == "torch")].iloc[0]
    floor = dense.test_accuracy - tolerance
    ok = rows[(rows.test_accuracy >= floor) & (rows.method != "dense")]
    size_cols = [c for c in ("file_ratio", "sparse_file_ratio", "onnx_file_ratio") if c in rows]
    big = max(int(c.rsplit("_b", 1)[1]) for c in rows if c.startswith("latency_ratio_b"))
    out = []
    if len(ok):
        sizes = ok[size_cols].min(axis=1)
        best = ok.loc[sizes.idxmin()]
        fmt = best[size_cols].astype(float).idxmin()
        out.append({"goal": "smallest file on disk", "choice": best.variant,
                    "evidence": f"{sizes.min():.3f}× the dense file ({fmt.replace('_ratio', '').replace('_', ' ')}); "
                                f"test {_acc(best)} against dense {_acc(dense)}",
                    "source": "05_speed", "chapter": CHAPTERS["05"], "seeds": int(best.seeds)})
        fast = ok.loc[ok[f"latency_ratio_b{big}"].idxmin()]
        out.append({"goal": f"fastest on a CPU (batch {big})", "choice": fast.variant,
                    "evidence": f"latency {fast[f'latency_ratio_b{big}']:.3f}× dense in the same runtime; "
                                f"test {_acc(fast)} against dense {_acc(dense)}",
                    "source": "05_speed", "chapter": CHAPTERS["05"], "seeds": int(fast.seeds)})
    else:
        out.append({"goal": "smallest file / fastest on a CPU", "choice": "none within the tolerance",
                    "evidence": f"no pruned row keeps test accuracy ≥ {floor:.1%}", "source": "05_speed",
                    "chapter": CHAPTERS["05"], "seeds": int(dense.seeds)})
    return out


def gpu_row(gpu: pd.DataFrame) -> dict:
    """The fastest model at the largest batch of the GPU table (``05_speed_gpu``: random weights of
    xlnet-base-cased's shape, so latency only; accuracy is not measured there), with its latency ratio at the
    smaller batches too: a model faster at one batch size may be slower at another."""
    big = gpu[gpu.batch == gpu.batch.max()]
    best = big.loc[big.latency_ratio.idxmin()]
    others = ", ".join(f"{r.model} {r.latency_ratio:.2f}×" for r in big.itertuples() if r.model != best.model)
    smaller = gpu[(gpu.model == best.model) & (gpu.batch < best.batch)].sort_values("batch")
    at_smaller = "; at " + ", ".join(f"batch {int(r.batch)} {r.latency_ratio:.2f}×" for r in smaller.itertuples()) \
        if len(smaller) else ""
    return {"goal": f"fastest on a GPU (batch {int(best.batch)}, {best.device})", "choice": best.model,
            "evidence": f"latency {best.latency_ratio:.2f}× dense ({others}){at_smaller}; timing only, random weights",
            "source": "05_speed_gpu", "chapter": CHAPTERS["05"], "seeds": None}   # one script run, no seeds


def oneshot_row(weights: pd.DataFrame, sparsity: float = 0.7) -> dict:
    """The weight score with the best mean test accuracy at ``sparsity`` without fine-tuning (``02_oneshot_weights``),
    the scores it cannot be told apart from, and the random control."""
    at = _by_method(weights[(weights.requested - sparsity).abs() < 1e-9], ("method",))
    best = at.loc[at.test_accuracy.idxmax()]
    tied = _overlapping(at, best, "method")
    random = at[at.method == "random"].iloc[0]
    return {"goal": f"least accuracy lost at {sparsity:.0%} weight sparsity, no fine-tuning",
            "choice": best.method + (f" (not distinguishable from {', '.join(tied)})" if tied else ""),
            "evidence": f"test {_acc(best)}; random pruning {_acc(random)}",
            "source": "02_oneshot_weights", "chapter": CHAPTERS["02"], "seeds": int(best.seeds)}


def finetuned_row(iterative: pd.DataFrame) -> dict:
    """The fine-tuning approach whose kept model has the best mean test accuracy at the common final sparsity
    (``04_iterative``), and those it cannot be told apart from."""
    kept = iterative[(iterative.kept.astype(str) == "True") & (iterative.approach != ONESHOT_NO_FT)]
    target = kept.sparsity.round(2).mode().iloc[0]
    at = _by_method(kept[kept.sparsity.round(2) == target], ("approach",))
    best = at.loc[at.test_accuracy.idxmax()]
    tied = _overlapping(at, best, "approach")
    return {"goal": f"least accuracy lost at {target:.0%} sparsity with a fine-tuning budget",
            "choice": best.approach + (f" (not distinguishable from {', '.join(tied)})" if tied else ""),
            "evidence": f"test {_acc(best)}; " + "; ".join(f"{r.approach} {_acc(r)}" for r in at.itertuples()
                                                             if r.approach != best.approach),
            "source": "04_iterative", "chapter": CHAPTERS["04"], "seeds": int(best.seeds)}


def which_method(tables: dict[str, pd.DataFrame], tolerance: float = 0.01, sparsity: float = 0.7) -> list[dict]:
    """The decision table: one row per goal with ``goal``, ``choice``, ``evidence`` (measured numbers),
    ``source`` (the results table), ``chapter`` (the page that explains it) and ``seeds`` (seeds averaged).

    ``tables`` maps table names to frames (``results.read_table``); ``05_speed_gpu`` is optional (its row has
    ``seeds`` None: one script run).
    """
    rows = deployment_rows(tables["05_speed"], tolerance)
    if "05_speed_gpu" in tables:
        rows.append(gpu_row(tables["05_speed_gpu"]))
    rows += [oneshot_row(tables["02_oneshot_weights"], sparsity), finetuned_row(tables["04_iterative"])]
    return rows
