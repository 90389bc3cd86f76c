"""Reference results: every table of ``data/results``, one module: the chapters' grids and the scripts' tables.

Chapters 1 to 5 call :func:`save_table` on their main grid (one row per model or measurement, measured
values only): a tidy CSV with a ``.provenance.json`` beside it (the chapter's configuration, git commit,
library versions, machine; for a table of several seeds, each seed's own in ``sources``). ``make results``
(:func:`make_results`, ``python -m xlprune_lib.book results``) executes those chapters on a profile, so
every cached run is reused and missing ones are trained, and copies the tables into ``data/results/``
through :func:`collect`. It reads every table and provenance it involves whole, checks them, merges the
seeds and only then writes, atomically, so a damaged or foreign file is refused with one line
(``UserError``) and nothing already there is lost. Those files are committed; the book's results page draws
its figures from them, and a test checks that the smoke profile still produces tables with the same columns.

Tables that scripts write (:data:`SCRIPT_TABLES`: speed at a published shape, on random weights, so no
profile or seed columns) go through :func:`save_script_table`, which needs the standard library only beside
torch: ``scripts/bench_gpu.py`` runs where the book's extras (pandas, papermill) are not installed, so this
module imports those where they are used.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..config import (DEFAULT_PROFILE, UserError, cache_dir, ensure_dir, repo_root, write_json_atomic,
                      write_text_atomic)
from ..deploy.base_shape import BASE_SHAPE, FRACTIONS, speed_table
from ..measure.report import provenance
from ..measure.stats import add_intervals

# table name -> columns every row must have (more may follow)
TABLES = {
    "01_models": ("model", "validation_accuracy", "test_accuracy", "test_ci_low", "test_ci_high"),
    "02_oneshot_weights": ("method", "requested", "sparsity", "validation_accuracy", "test_accuracy",
                           "test_ci_low", "test_ci_high"),
    "02_ablation": ("ablation", "validation_accuracy", "test_accuracy", "validation_ci_low", "validation_ci_high"),
    "03_l0": ("run", "lambda", "sparsity", "test_accuracy"),
    "04_iterative": ("approach", "sparsity", "validation_accuracy", "test_accuracy", "steps", "seconds"),
    "05_speed": ("method", "prunable_removed", "params_ratio", "flops_ratio", "file_ratio", "sparse_file_ratio",
                 "validation_accuracy", "test_accuracy", "latency_ratio_b1", "latency_ratio_b32"),
}
COMMON = ("profile", "seed")


def results_dir() -> Path:
    return repo_root() / "data" / "results"


def interval_columns(columns) -> tuple:
    """The interval columns that must sit beside the accuracy columns among ``columns``."""
    return tuple(f"{c[:-len('_accuracy')]}_{end}" for c in columns if c.endswith("_accuracy")
                 for end in ("ci_low", "ci_high"))


def read_table(name: str, folder=None):
    """A results table as a DataFrame (from ``data/results`` unless ``folder`` is given). Raises ``UserError``
    when the file is missing or is not a CSV table pandas can parse whole, or when its ``seed`` column (if any)
    holds anything but whole numbers (a merge-conflict marker, a truncated row)."""
    import pandas as pd   # the [book] extra: script tables are written without it

    path = Path(folder or results_dir()) / f"{name}.csv"
    if not path.is_file():
        raise UserError(f"{path} is missing; run `make results` to produce it")
    try:
        frame = pd.read_csv(path)
    except (ValueError, OSError) as exc:      # pandas' parser and empty-file errors are ValueErrors
        raise UserError(f"{path} is not a readable CSV table ({type(exc).__name__}); "
                        "restore it with git or run `make results`") from None
    if "seed" in frame and not pd.api.types.is_integer_dtype(frame["seed"]):
        raise UserError(f"{path}: its seed column holds something other than whole numbers; "
                        "restore it with git or run `make results`")
    return frame


def read_provenance(name: str, folder=None) -> dict:
    """A results table's provenance sidecar (``<name>.provenance.json``). Raises ``UserError`` when it is missing,
    is not JSON, lacks a ``config`` mapping, or has a seed (in ``config`` or in ``sources``, which must be a
    list of mappings) that is not a whole number."""
    path = Path(folder or results_dir()) / f"{name}.provenance.json"
    if not path.is_file():
        raise UserError(f"{path} is missing; run `make results` to produce it")
    try:
        prov = json.loads(path.read_text())
        seeds = [prov["config"].get("seed", 0)] + [s["seed"] for s in prov.get("sources") or []]
        if not all(isinstance(seed, int) or seed is None for seed in seeds):
            raise ValueError(f"seeds {seeds} are not all whole numbers")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{path} is not a results provenance file ({type(exc).__name__}: {exc}); "
                        "restore it with git or run `make results`") from None
    return prov


SOURCE_KEYS = ("git_commit", "versions", "machine")   # what each seed's entry in ``sources`` keeps


def _source(prov: dict) -> dict:
    """One run's entry in a merged table's ``sources``: its seed, commit, library versions and machine."""
    return {"seed": prov["config"].get("seed"), **{k: prov.get(k) for k in SOURCE_KEYS}}


def table_sources(name: str, folder=None) -> list[dict]:
    """Where a results table's rows come from: one dict per seed (``seed``, ``git_commit``, ``versions``,
    ``machine``), from its provenance's ``sources``; a table of one run is its own source. A source recorded
    without versions (tables merged before they were kept) takes them from the table's top level when it
    names the same commit."""
    return _sources(read_provenance(name, folder))


def _sources(prov: dict) -> list[dict]:
    top = {k: prov.get(k) for k in SOURCE_KEYS}
    return [{**top, **s} if s.get("git_commit") == prov.get("git_commit") else s
            for s in prov.get("sources") or [_source(prov)]]


def provenance_summary(prov: dict) -> dict:
    """What a results page shows of a table's provenance (``prov``, as :func:`read_provenance` returns it):
    ``seeds``, ``git commits`` (each commit, 12 digits and "+ uncommitted changes" for a ``-dirty`` one, with
    its seeds, e.g. ``5a9468de6f6e (seed 0); f9f5a91c2d3e (seeds 1, 2)``), ``torch``, ``transformers`` and
    ``machine``, each listing every distinct value among the seeds' sources (a table of one run is its own
    source), so a table whose seeds ran on different code or machines says so."""
    sources = _sources(prov)

    def distinct(value) -> str:
        return "; ".join(dict.fromkeys(str(value(s)) if s.get("versions") and s.get("machine") else "?"
                                       for s in sources))

    def machine(s: dict) -> str:
        return (f"{s['machine']['processor']}, {s['machine']['torch_threads']} threads"
                + (f", {s['machine']['cuda']}" if s["machine"].get("cuda") else ""))

    def commit(c: str, seeds: list) -> str:
        seeds = [s for s in seeds if s is not None]      # script tables (no seed) name their commit alone
        return (f"{c[:12]}{' + uncommitted changes' if c.endswith('-dirty') else ''}"
                + (f" (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})" if seeds else ""))

    by_commit: dict[str, list] = {}
    for s in sources:
        by_commit.setdefault(s.get("git_commit") or "?", []).append(s.get("seed"))
    return {"seeds": ", ".join(str(s["seed"]) for s in sources if s.get("seed") is not None) or "n/a",
            "git commits": "; ".join(commit(c, seeds) for c, seeds in by_commit.items()),
            "torch": distinct(lambda s: s["versions"]["torch"]),
            "transformers": distinct(lambda s: s["versions"]["transformers"]),
            "machine": distinct(machine)}


def check_table(path: Path, frame=None) -> list[str]:
    """The columns of a results CSV, after reading it whole (:func:`read_table`; or of ``frame``, the table
    already read from ``path``) and checking it has the ones its table requires. Raises ``UserError`` for an
    unknown table name, an unreadable file, or a missing column."""
    if path.stem not in TABLES and path.stem not in SCRIPT_TABLES:
        raise UserError(f"{path}: not a results table ({', '.join([*TABLES, *SCRIPT_TABLES])})")
    columns = list((read_table(path.stem, path.parent) if frame is None else frame).columns)
    need = (COMMON + TABLES[path.stem] if path.stem in TABLES else SCRIPT_TABLES[path.stem]) + \
        interval_columns(columns)
    missing = [c for c in need if c not in columns]
    if missing:
        raise UserError(f"{path}: missing columns {missing}")
    return columns


def check_ours(path: Path) -> None:
    """Refuse to replace ``path`` when it exists without a ``.provenance.json`` beside it: then it is not an
    xlprune results table, and ``make results`` must not overwrite someone's file. Raises ``UserError``."""
    if path.exists() and not path.with_suffix(".provenance.json").is_file():
        raise UserError(f"{path} is not an xlprune results table (no provenance beside it); "
                        "nothing was changed: choose another --dest")


def check_addable(dest, name: str, profile: str, columns=None) -> tuple | None:
    """Refuse to add rows of ``profile`` (with ``columns``, when given) to ``dest``'s table ``name``, if that
    table exists and was made on another profile (its provenance's ``config.profile``: chapter 1's table holds
    rows of several models' profiles, and that is fine), has other columns, or cannot be read. Raises
    ``UserError``. Returns the table and its provenance as read and checked, ``(DataFrame, dict)``, or
    ``None`` when ``dest`` has no such table."""
    path = Path(dest) / f"{name}.csv"
    if not path.exists():
        return None
    check_ours(path)
    table, prov = read_table(name, dest), read_provenance(name, dest)
    held, have = prov["config"].get("profile"), check_table(path, table)
    if held is None:
        raise UserError(f"{path.with_suffix('.provenance.json')} names no profile; nothing was changed: "
                        "restore it with git or choose another --dest")
    if held != profile:
        raise UserError(f"{path} holds {held!r} results and this run is on {profile!r}; "
                        "nothing was changed: choose another --dest or run without --add")
    if columns is not None and set(have) != set(columns):
        raise UserError(f"{path} and this run's table have different columns (only there: "
                        f"{sorted(set(have) - set(columns)) or 'none'}; only in this run: "
                        f"{sorted(set(columns) - set(have)) or 'none'}); nothing was changed: "
                        "remake every seed with `make results` or choose another --dest")
    return table, prov


def collect(src, dest=None, names=None, more=(), add: bool = False) -> list[Path]:
    """Copy every table in ``src`` (a ``tables`` folder; or only ``names``) to ``dest`` (``data/results``),
    checked, atomically; the rows of the same table in the folders ``more`` (other seeds) are appended.

    ``src`` must hold every wanted table. A merged table's provenance is ``src``'s run's (configuration; its
    top-level versions and machine are that run's too), plus ``seeds`` (the seeds its rows come from) and
    ``sources`` (each seed's commit, versions and machine, see :func:`table_sources`); its ``git_commit`` is
    ``"mixed"`` when the sources' commits differ. A file of the same name in ``dest`` that is not an xlprune table
    (no ``.provenance.json`` beside it) is refused before anything is written. With ``add``, the rows ``dest``
    already holds for *other* seeds are kept (rows of the seeds collected now are replaced), so seeds can be added
    one run at a time; a ``dest`` table of another profile or other columns, or one that cannot be read, is refused
    (:func:`check_addable`): every table and provenance involved is read whole and merged before the first file is
    written. Raises ``UserError``.
    """
    import pandas as pd   # the [book] extra: script tables are written without it

    src, dest, more = Path(src), Path(dest or results_dir()), [Path(f) for f in more]
    wanted = list(names or TABLES)
    names = [n for n in wanted if (src / f"{n}.csv").is_file()]
    if missing := [n for n in wanted if n not in names]:
        raise UserError(f"{src} lacks the tables {', '.join(missing)}: did every chapter run?")
    ensure_dir(dest, "results folder")
    sources = {name: [f for f in (src, *more) if (f / f"{name}.csv").is_file()] for name in names}
    merged = []
    for name in names:                   # everything is read, checked and merged before anything is written
        folders = sources[name]
        frames = [read_table(name, f) for f in folders]
        columns = [check_table(f / f"{name}.csv", frame) for f, frame in zip(folders, frames)][0]
        check_ours(dest / f"{name}.csv")
        prov = [read_provenance(name, f) for f in folders]
        new, earlier = [_source(p) for p in prov], []
        if add and (dest / f"{name}.csv").exists():
            if (profile := prov[0]["config"].get("profile")) is None:
                raise UserError(f"{folders[0] / f'{name}.provenance.json'} names no profile: not made by "
                                "save_table")
            old, old_prov = check_addable(dest, name, profile, columns)
            seeds = {int(s) for f in frames for s in f["seed"]}
            frames.insert(0, old[~old["seed"].isin(seeds)][list(frames[0].columns)])
            earlier = [s for s in _sources(old_prov) if s["seed"] not in seeds]
        frame = pd.concat(frames, ignore_index=True).sort_values("seed", kind="stable")
        every = sorted(earlier + new, key=lambda s: s["seed"])
        commits = {s.get("git_commit") for s in every}
        merged.append((name, frame, {**prov[0], "rows": len(frame), "seeds": sorted({int(s) for s in frame["seed"]}),
                                     "sources": every, "git_commit": commits.pop() if len(commits) == 1 else "mixed"}))
    written = []
    for name, frame, sidecar in merged:
        write_text_atomic(dest / f"{name}.csv", frame.to_csv(index=False, float_format="%.6g"))
        write_json_atomic(dest / f"{name}.provenance.json", sidecar)
        written.append(dest / f"{name}.csv")
    return written


# script table name -> columns every row must have (more may follow)
SCRIPT_TABLES = {
    "05_speed_gpu": ("device", "model", "dtype", "batch", "seq_len", "median_ms", "latency_ratio", "peak_memory_mb"),
    "05_speed_base_shape": ("shape", "requested", "encoder_removed", "batch", "seq_len", "median_ms", "q1_ms",
                            "q3_ms", "latency_ratio", "repeats", "threads"),
}


def save_script_table(rows: list[dict], name: str, path, config: dict) -> Path:
    """Write the rows of the :data:`SCRIPT_TABLES` table ``name`` to the CSV ``path`` and its provenance beside it
    (``.provenance.json``: ``config``, git commit, versions, machine), atomically. Raises ``ValueError`` for an
    unknown name, no rows, or a row without a required column (then nothing is written)."""
    path = Path(path)
    if name not in SCRIPT_TABLES:
        raise ValueError(f"unknown script table {name!r}; known: {', '.join(SCRIPT_TABLES)}")
    missing = sorted({c for row in rows for c in SCRIPT_TABLES[name] if c not in row},
                     key=SCRIPT_TABLES[name].index)
    if missing or not rows:
        raise ValueError(f"table {name}: {'no rows' if not rows else f'missing columns {missing}'}")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())
    write_json_atomic(path.with_suffix(".provenance.json"), {"table": name, "rows": len(rows), **provenance(config)})
    return path


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


def execute(*args, **kwargs):
    """``build.execute``: run chapters with papermill (the [book] extra, imported when a chapter runs)."""
    from .build import execute as run_chapters   # papermill: a script that only writes a table runs without it
    return run_chapters(*args, **kwargs)


def save_table(rows: list[dict], name: str, output_dir, config: dict, sizes: dict | None = None) -> Path:
    """Write ``rows`` as ``<output_dir>/tables/<name>.csv`` with its provenance, atomically; return the CSV path.

    ``config`` must hold ``profile`` and ``seed`` (they become the first columns, unless the rows carry their
    own) and whatever else defines the grid. Every ``<split>_accuracy`` column must come with its 95% interval
    (``<split>_ci_low``, ``<split>_ci_high``); with ``sizes`` (examples per split) they are computed here from
    the accuracies (``stats.add_intervals``). Raises ``ValueError`` for an unknown table, no rows, or a
    missing column.
    """
    import pandas as pd   # the [book] extra: script tables are written without it


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
