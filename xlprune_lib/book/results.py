"""Reference results: each chapter's experiment grid as a tidy CSV table with a provenance sidecar.

Chapters 1 to 5 call :func:`save_table` on their main grid (one row per model or measurement, measured
values only). ``make results`` (``python -m xlprune_lib.book results``) executes those chapters on a
profile, so every cached run is reused and missing ones are trained, and copies the tables into
``data/results/``: ``<name>.csv`` plus ``<name>.provenance.json`` (the chapter's configuration, git commit,
library versions, machine) through :func:`.tables.collect`, which also adds seeds to tables already there.
Those files are committed; the book's results page draws its figures from them, and a test checks that the
smoke profile still produces tables with the same columns.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .build import execute
from ..config import DEFAULT_PROFILE, UserError, cache_dir, write_json_atomic, write_text_atomic
from ..deploy.base_shape import BASE_SHAPE, FRACTIONS, speed_table
from ..measure.report import provenance
from ..measure.stats import add_intervals
from .script_tables import SCRIPT_TABLES, save_script_table
# reading, checking and merging live in .tables; pages and chapters import them from here, as they always did
from .tables import (COMMON, TABLES, check_addable, check_ours, check_table, collect, interval_columns,  # noqa: F401
                     provenance_summary, read_provenance, read_table, results_dir, table_sources)

BASE_SHAPE_BENCH = {"batch": 32, "seq_len": 128, "warmup": 1, "repeats": 5}   # `make results`: xlnet-base-cased
CHAPTERS = ("01", "02", "03", "04", "05")
SEEDS = (0, 1, 2)
HEADLINE = ("02", "04", "05")   # chapters whose grids `make results` repeats at every seed (one-shot curves,
                                # chapter 4's approaches, chapter 5's speed table); the others run at the first
# chapter parameters for `make results`: chapter 1 trains its comparison models and chapter 4 its one-shot and
# gradual runs, instead of reading them from data/results
RESULTS_PARAMETERS = {"01": {"live_comparison": True}, "04": {"live_approaches": True}}


def tables_dir(output_dir) -> Path:
    return Path(output_dir) / "tables"


def save_table(rows: list[dict], name: str, output_dir, config: dict, sizes: dict | None = None) -> Path:
    """Write ``rows`` as ``<output_dir>/tables/<name>.csv`` with its provenance, atomically; return the CSV path.

    ``config`` must hold ``profile`` and ``seed`` (they become the first columns, unless the rows carry their
    own) and whatever else defines the grid. Every ``<split>_accuracy`` column must come with its 95% interval
    (``<split>_ci_low``, ``<split>_ci_high``); with ``sizes`` (examples per split) they are computed here from
    the accuracies (``stats.add_intervals``). Raises ``ValueError`` for an unknown table, no rows, or a
    missing column.
    """

    if name not in TABLES:
        raise ValueError(f"unknown results table {name!r}; known: {', '.join(TABLES)}")
    frame = pd.DataFrame(add_intervals(rows, sizes) if sizes else rows)
    missing = [c for c in TABLES[name] + interval_columns(frame.columns) if c not in frame.columns]
    if missing or frame.empty:
        raise ValueError(f"table {name}: {'no rows' if frame.empty else f'missing columns {missing}'}")
    for key in reversed(COMMON):      # rows may name their own (chapter 1 compares models of two profiles)
        frame.insert(0, key, frame.pop(key) if key in frame else config[key])
    folder = tables_dir(output_dir)
    path = folder / f"{name}.csv"
    write_text_atomic(path, frame.to_csv(index=False, float_format="%.6g"))
    write_json_atomic(folder / f"{name}.provenance.json", {"table": name, "rows": len(frame), **provenance(config)})
    return path


def base_shape_results(dest=None, **bench) -> Path:
    """``make results``' speed table at ``xlnet-base-cased``'s shape (``deploy.base_shape.speed_table``: random
    weights, 25/50/75% of the encoder removed, every model timed alternately on this CPU) into
    ``<dest>/05_speed_base_shape.csv`` (``data/results`` by default). ``bench`` overrides
    :data:`BASE_SHAPE_BENCH` (``batch``, ``seq_len``, ``warmup``, ``repeats``)."""
    settings = {**BASE_SHAPE_BENCH, **bench}
    rows = speed_table(**settings)
    return save_script_table(rows, "05_speed_base_shape", Path(dest or results_dir()) / "05_speed_base_shape.csv",
                             {"function": "xlprune_lib.book.results.base_shape_results", **settings,
                              "shape": BASE_SHAPE, "fractions": list(FRACTIONS)})


def seed_dir(profile: str, seed: int, first: bool) -> Path:
    """Where a chapter run writes its figures and tables: the book's folder for the first seed of
    ``make results``, a folder of its own for each further seed."""
    base = cache_dir() / "figures" / profile
    return base if first else base.with_name(f"{profile}-seed{seed}")


def make_results(profile: str = DEFAULT_PROFILE, seeds=SEEDS, dest=None, only=None, add: bool = False) -> list[Path]:
    """``make results``: execute chapters 1-5 (or the chapter numbers in ``only``) on ``profile`` at the first
    of ``seeds``, and the :data:`HEADLINE` chapters among them again at every further seed (cached runs reused),
    then collect their tables: one file per table, with a ``seed`` column.

    The first seed's executed chapters are the book's pages; further seeds write theirs beside their tables
    (:func:`seed_dir`), never over the book. With ``add`` (``make results SEEDS=2 ADD=1``) the tables keep the
    rows they hold for other seeds (:func:`collect`), every seed, the first too, writes its chapters beside
    its tables, and ``only`` defaults to the :data:`HEADLINE` chapters (the others are made at one seed): a
    seed that takes an hour can be added in a session of its own. A ``dest`` file that is not an xlprune
    table, and with ``add`` a ``dest`` table of another profile or one that cannot be read, are refused before
    any chapter runs (:func:`check_ours`, :func:`check_addable`); one whose columns differ from the new rows'
    is refused after they ran, before anything is written. Raises ``UserError``.
    """
    only = list(only or (HEADLINE if add else CHAPTERS))
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    if bad := [c for c in only if c not in CHAPTERS]:
        raise UserError(f"no results table comes from chapter {bad[0]!r}; chapters: {', '.join(CHAPTERS)}")
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UserError(f"--seeds must be distinct integers >= 0, got {seeds}")
    names, target = [n for n in TABLES if n[:2] in only], Path(dest or results_dir())
    for name in names:                  # refuse what collect would, before an hour of chapters
        if add:
            check_addable(target, name, profile)
        else:
            check_ours(target / f"{name}.csv")
    folders = []
    for i, seed in enumerate(seeds):
        chapters = only if i == 0 else [c for c in only if c in HEADLINE]
        if not chapters:
            continue
        book = i == 0 and not add
        out = seed_dir(profile, seed, first=book)
        execute(profile, seed, only=chapters, chapter_parameters=RESULTS_PARAMETERS, output_dir=out,
                out_dir=None if book else out / "chapters")
        folders.append(tables_dir(out))
    return collect(folders[0], dest, names, more=folders[1:], add=add)
