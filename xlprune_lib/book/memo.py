"""Chapter measurements cached like runs: accuracy curves, scans and baselines a page computes inline.

A rebuild with cached checkpoints should not redo a chapter's many evaluations. :func:`measured` keys a result
by its kind, the grid that defines it, the model folder it measures (what the folder holds:
``runs.content_key``, not its path or the config key in its ``metrics.json``) and the pruning code's version (``oneshot.PRUNE_VERSION``), so chapters never build cache
keys by hand and a change to the pruning code invalidates what it measured.
"""
from __future__ import annotations

from pathlib import Path

from ..loops.oneshot import PRUNE_VERSION
from ..train.runs import content_key, memo


def measured(kind: str, compute, model_dir: Path | str | None = None, **grid):
    """``compute()`` (JSON-able), stored under ``kind`` and the key above; the same request returns the stored
    result. ``grid``: every setting the result depends on besides the model (profile, seed, sparsities...)."""
    config = {**grid, "prune_version": PRUNE_VERSION}
    if model_dir is not None:
        config["model"] = content_key(model_dir)
    return memo(kind, config, compute)
