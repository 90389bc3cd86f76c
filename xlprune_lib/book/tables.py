"""Reading, checking and merging the reference tables of ``data/results``: one CSV per chapter grid, with a
``.provenance.json`` beside it (configuration, git commit, library versions, machine; for a table of several
seeds, each seed's own in ``sources``).

:func:`collect` is how ``make results`` (:mod:`.results`) writes them: it reads every table and provenance it
involves whole, checks them, merges the seeds and only then writes, atomically, so a damaged or foreign file
is refused with one line (``UserError``) and nothing already there is lost.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..config import UserError, ensure_dir, repo_root, write_json_atomic, write_text_atomic
from .script_tables import SCRIPT_TABLES

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
