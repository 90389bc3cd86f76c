"""Reference results: each chapter's experiment grid as a tidy CSV table with a provenance sidecar.

Chapters 1 to 5 call :func:`save_table` on their main grid (one row per model or measurement, measured
values only). ``make results`` (``python -m xlprune_lib.book results``) executes those chapters on a
profile, so every cached run is reused and missing ones are trained, and copies the tables into
``data/results/``: ``<name>.csv`` plus ``<name>.provenance.json`` (the chapter's configuration, git commit,
library versions, machine). Those files are committed; the book's results page draws its figures from them,
and a test checks that the smoke profile still produces tables with the same columns.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .build import execute
from ..config import DEFAULT_PROFILE, UserError, cache_dir, ensure_dir, repo_root, write_json_atomic, write_text_atomic
from ..deploy.base_shape import BASE_SHAPE, FRACTIONS, speed_table
from ..measure.report import provenance
from ..measure.stats import add_intervals
from .script_tables import SCRIPT_TABLES, save_script_table

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
BASE_SHAPE_BENCH = {"batch": 32, "seq_len": 128, "warmup": 1, "repeats": 5}   # `make results`: xlnet-base-cased
COMMON = ("profile", "seed")
CHAPTERS = ("01", "02", "03", "04", "05")
SEEDS = (0, 1, 2)
HEADLINE = ("02", "04", "05")   # chapters whose grids `make results` repeats at every seed (one-shot curves,
                                # chapter 4's approaches, chapter 5's speed table); the others run at the first
# chapter parameters for `make results`: chapter 1 trains its comparison models instead of reading them
RESULTS_PARAMETERS = {"01": {"live_comparison": True}}


def results_dir() -> Path:
    return repo_root() / "data" / "results"


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


def interval_columns(columns) -> tuple:
    """The interval columns that must sit beside the accuracy columns among ``columns``."""
    return tuple(f"{c[:-len('_accuracy')]}_{end}" for c in columns if c.endswith("_accuracy")
                 for end in ("ci_low", "ci_high"))


def read_table(name: str, folder=None):
    """A results table as a DataFrame (from ``data/results`` unless ``folder`` is given)."""
    path = Path(folder or results_dir()) / f"{name}.csv"
    if not path.is_file():
        raise UserError(f"{path} is missing; run `make results` to produce it")
    return pd.read_csv(path)


def read_provenance(name: str, folder=None) -> dict:
    """A results table's provenance sidecar (``<name>.provenance.json``). Raises ``UserError`` when it is missing,
    is not JSON, or lacks a ``config`` mapping."""
    path = Path(folder or results_dir()) / f"{name}.provenance.json"
    if not path.is_file():
        raise UserError(f"{path} is missing; run `make results` to produce it")
    try:
        prov = json.loads(path.read_text())
        dict(prov["config"])
    except (ValueError, KeyError, TypeError) as exc:
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
    prov = read_provenance(name, folder)
    top = {k: prov.get(k) for k in SOURCE_KEYS}
    return [{**top, **s} if s.get("git_commit") == prov.get("git_commit") else s
            for s in prov.get("sources") or [_source(prov)]]


def provenance_summary(prov: dict) -> dict:
    """What a results page shows of a table's provenance (``prov``, as :func:`read_provenance` returns it):
    ``seeds``, ``git commits`` (each commit, 12 digits and "+ uncommitted changes" for a ``-dirty`` one, with
    its seeds, e.g. ``5a9468de6f6e (seed 0); f9f5a91c2d3e (seeds 1, 2)``), ``torch``, ``transformers`` and
    ``machine``, each listing every distinct value among the seeds' sources (a table of one run is its own
    source), so a table whose seeds ran on different code or machines says so."""
    top = {k: prov.get(k) for k in SOURCE_KEYS}
    sources = [{**top, **s} for s in prov.get("sources") or [_source(prov)]]

    def distinct(value) -> str:
        return "; ".join(dict.fromkeys(str(value(s)) for s in sources))

    by_commit: dict[str, list] = {}
    for s in sources:
        by_commit.setdefault(s.get("git_commit") or "?", []).append(s.get("seed"))
    machine = (lambda s: f"{s['machine']['processor']}, {s['machine']['torch_threads']} threads"
               + (f", {s['machine']['cuda']}" if s["machine"].get("cuda") else ""))
    return {"seeds": ", ".join(str(s.get("seed")) for s in sources),
            "git commits": "; ".join(f"{c[:12]}{' + uncommitted changes' if c.endswith('-dirty') else ''} "
                                     f"(seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})"
                                     for c, seeds in by_commit.items()),
            "torch": distinct(lambda s: s["versions"]["torch"]),
            "transformers": distinct(lambda s: s["versions"]["transformers"]),
            "machine": distinct(machine)}


def check_table(path: Path) -> list[str]:
    """The columns of a results CSV, after checking it has the ones its table requires. Raises ``UserError``
    for an unknown table name, a file that is not a readable CSV, or a missing column."""
    if path.stem not in TABLES and path.stem not in SCRIPT_TABLES:
        raise UserError(f"{path}: not a results table ({', '.join([*TABLES, *SCRIPT_TABLES])})")
    try:
        columns = list(pd.read_csv(path, nrows=1).columns)
    except (ValueError, OSError) as exc:      # pandas' parser and empty-file errors are ValueErrors
        raise UserError(f"{path} is not a readable CSV table ({type(exc).__name__}); "
                        "restore it with git or run `make results`") from None
    need = (COMMON + TABLES[path.stem] if path.stem in TABLES else SCRIPT_TABLES[path.stem]) + \
        interval_columns(columns)
    missing = [c for c in need if c not in columns]
    if missing:
        raise UserError(f"{path}: missing columns {missing}")
    return columns


def check_addable(dest, name: str, profile: str, columns=None) -> None:
    """Refuse to add rows of ``profile`` (with ``columns``, when given) to ``dest``'s table ``name``, if that
    table exists and was made on another profile (its provenance's ``config.profile``: chapter 1's table holds
    rows of several models' profiles, and that is fine), has other columns, or cannot be read. Raises
    ``UserError``; does nothing when ``dest`` has no such table."""
    path = Path(dest) / f"{name}.csv"
    if not path.exists():
        return
    if not path.with_suffix(".provenance.json").is_file():
        raise UserError(f"{path} is not an xlprune results table (no provenance beside it); "
                        "nothing was changed: choose another --dest")
    held, have = read_provenance(name, dest)["config"].get("profile"), check_table(path)
    if held != profile:
        raise UserError(f"{path} holds {held!r} results and this run is on {profile!r}; "
                        "nothing was changed: choose another --dest or run without --add")
    if columns is not None and set(have) != set(columns):
        raise UserError(f"{path} and this run's table have different columns (only there: "
                        f"{sorted(set(have) - set(columns)) or 'none'}; only in this run: "
                        f"{sorted(set(columns) - set(have)) or 'none'}); nothing was changed: "
                        "remake every seed with `make results` or choose another --dest")


def collect(src, dest=None, names=None, more=(), add: bool = False) -> list[Path]:
    """Copy every table in ``src`` (a ``tables`` folder; or only ``names``) to ``dest`` (``data/results``),
    checked, atomically; the rows of the same table in the folders ``more`` (other seeds) are appended.

    ``src`` must hold every wanted table. A merged table's provenance is ``src``'s run's (configuration,
    versions, machine), plus ``seeds`` (the seeds its rows come from) and ``sources`` (each seed's commit,
    versions and machine, see :func:`table_sources`); its ``git_commit`` is ``"mixed"`` when the sources'
    commits differ. A file of the same name in ``dest`` that is not an xlprune table (no ``.provenance.json``
    beside it) is refused before anything is written. With ``add``, the rows ``dest`` already holds for
    *other* seeds are kept (rows of the seeds collected now are replaced), so seeds can be added one run at a
    time; a ``dest`` table of another profile or other columns, or one that cannot be read, is refused
    (:func:`check_addable`), again before anything is written. Raises ``UserError``.
    """
    src, dest, more = Path(src), Path(dest or results_dir()), [Path(f) for f in more]
    wanted = list(names or TABLES)
    names = [n for n in wanted if (src / f"{n}.csv").is_file()]
    if missing := [n for n in wanted if n not in names]:
        raise UserError(f"{src} lacks the tables {', '.join(missing)}: did every chapter run?")
    ensure_dir(dest, "results folder")
    sources = {name: [f for f in (src, *more) if (f / f"{name}.csv").is_file()] for name in names}
    for name in names:                   # everything is checked before anything is written
        columns = [check_table(folder / f"{name}.csv") for folder in sources[name]][0]
        if (dest / f"{name}.csv").exists() and not (dest / f"{name}.provenance.json").is_file():
            raise UserError(f"{dest / f'{name}.csv'} is not an xlprune results table (no provenance beside it); "
                            "nothing was changed: choose another --dest")
        if add:
            check_addable(dest, name, read_provenance(name, sources[name][0])["config"]["profile"], columns)
    written = []
    for name in names:
        folders = sources[name]
        frames = [pd.read_csv(f / f"{name}.csv") for f in folders]
        prov = [read_provenance(name, f) for f in folders]
        new, earlier = [_source(p) for p in prov], []
        if add and (dest / f"{name}.csv").exists():
            seeds = {int(s) for f in frames for s in f["seed"]}
            old = read_table(name, dest)
            frames.insert(0, old[~old["seed"].isin(seeds)][list(frames[0].columns)])
            earlier = [s for s in table_sources(name, dest) if s["seed"] not in seeds]
        frame = pd.concat(frames, ignore_index=True).sort_values("seed", kind="stable")
        every = sorted(earlier + new, key=lambda s: s["seed"])
        commits = {s.get("git_commit") for s in every}
        merged = {**prov[0], "rows": len(frame), "seeds": sorted({int(s) for s in frame["seed"]}),
                  "sources": every, "git_commit": commits.pop() if len(commits) == 1 else "mixed"}
        write_text_atomic(dest / f"{name}.csv", frame.to_csv(index=False, float_format="%.6g"))
        write_json_atomic(dest / f"{name}.provenance.json", merged)
        written.append(dest / f"{name}.csv")
    return written


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
    seed that takes an hour can be added in a session of its own. A ``dest`` table that ``add`` would refuse
    (:func:`check_addable`) is refused before any chapter runs. Raises ``UserError``.
    """
    only = list(only or (HEADLINE if add else CHAPTERS))
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    if bad := [c for c in only if c not in CHAPTERS]:
        raise UserError(f"no results table comes from chapter {bad[0]!r}; chapters: {', '.join(CHAPTERS)}")
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UserError(f"--seeds must be distinct integers >= 0, got {seeds}")
    names = [n for n in TABLES if n[:2] in only]
    if add:
        for name in names:
            check_addable(dest or results_dir(), name, profile)
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
