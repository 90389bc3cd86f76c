"""Cached runs: where a training run writes, when it is reused, and the Trainer settings all runs share.

A run is identified by a hash of its configuration (``config.cache_key``). Its folder holds the checkpoint
(safetensors), the tokenizer and ``metrics.json``; ``metrics.json`` is written last, so a folder without it
is not a finished run. Asking for the same configuration again returns the stored metrics; asking to write a
*different* configuration into a folder that holds a finished run is refused, so no result is overwritten.

A model folder enters a key by what it holds (:func:`content_key`, a digest of its weights, config and
tokenizer files), never by its path or the label in its ``metrics.json``: a folder whose weights were replaced
is another source. Identical requests at the same time compute once (``config.computed_once``: a file lock
beside the entry, the others wait and reuse the result).
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import torch
from transformers import PrinterCallback, TrainingArguments
from transformers.utils import logging as hf_logging

from ..config import (Profile, UserError, cache_dir, cache_key, check_output_dir, computed_once, get_profile,
                      read_json, write_text_atomic)
from ..measure.report import METRICS
from ..xlnet.modeling import check_model_dir

# Part of every run's key: bump it when a change to the training code changes what a configuration produces,
# so cached runs made by the older code are not reused.
RUNS_VERSION = 3   # 3: saved classifiers carry label names and use_mems_eval=False


def default_out(kind: str, profile: Profile, key: str) -> Path:
    return cache_dir() / "runs" / f"{kind}-{profile.name}-{key}"


def reuse_or_claim(out: Path, key: str) -> dict | None:
    """Return the finished run's metrics if ``out`` holds this configuration; refuse a different one.

    Checked before any work: an ``out`` that is a file, a folder holding files that are not an xlprune result,
    or a location that cannot be written is refused with a one-line ``UserError`` and left untouched.
    """
    out = Path(out)
    metrics = out / METRICS
    if not metrics.is_file():
        check_output_dir(out)
        return None
    stored = read_json(metrics, hint="move it away or choose another --out")
    if stored.get("config_key") != key:
        raise UserError(f"{out} already holds a different run (config {stored.get('config_key')}, "
                        f"this one is {key}); choose another --out")
    return stored


def produce_run(out: Path, key: str, compute) -> Path:
    """``out`` holding the run ``key``: reused when finished (:func:`reuse_or_claim`), else made by ``compute()``
    (which writes ``out`` atomically, ``metrics.json`` included) under the lock of ``out``, so identical runs
    started together train once and the later ones wait and reuse it. A refused ``out`` raises before any wait.
    Returns ``out``."""
    def made():
        compute()
        return out
    return computed_once(out, lambda: out if reuse_or_claim(out, key) is not None else None, made)


# Files of a model folder that record measurements of it and change nothing it computes: left out of its key.
NOT_CONTENT = frozenset({METRICS, "report.json", "README.md"})
_digests: dict[tuple, str] = {}   # (path, inode, size, mtime_ns) -> sha256 of the file, for this process


def _file_digest(path: Path) -> str:
    """sha256 of a file's bytes, remembered per (path, inode, size, mtime) once the file is 2 s old: file times
    tick coarsely, so a file rewritten within the same tick could otherwise keep its old digest (git's "racily
    clean" rule)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _digests:
        return _digests[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if time.time_ns() - st.st_mtime_ns > 2_000_000_000:
        _digests[key] = h.hexdigest()
    return h.hexdigest()


def content_key(folder) -> str:
    """What a model folder holds, as a key: sha256 (first 16 hex digits) over the name and sha256 of each of its
    files (weights, ``config.json``, tokenizer files, ``state.safetensors``), sorted by name.

    Left out: sub-folders, hidden files (temporaries, locks) and :data:`NOT_CONTENT` (``metrics.json`` with its
    ``config_key`` label, the layer report, the model card). A file's digest is computed once per process for
    each (path, inode, size, modification time), so a replaced file is read again. Raises ``UserError`` for a
    folder that cannot be read.
    """
    folder = Path(folder)
    h = hashlib.sha256()
    try:
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or path.name in NOT_CONTENT or not path.is_file():
                continue
            h.update(f"{path.name}\0{_file_digest(path)}\n".encode())
    except OSError as exc:
        raise UserError(f"cannot read {folder}: {exc.strerror or exc}") from None
    return h.hexdigest()[:16]


# The training settings of a folder made outside xlprune (plain ``save_pretrained``) when ``--profile`` is not
# given: ``base``'s, the published recipe for fine-tuning XLNet (recovery rate 2e-5, 128 tokens, batch 32).
FOREIGN_PROFILE = "base"


def own_profile(model_dir) -> str | None:
    """The profile a folder was made with: its ``metrics.json`` (a run of xlprune), or the ``run.json`` of the
    ``iterate`` folder it is a round of; ``None`` for a folder from elsewhere. A damaged file of either is a
    one-line ``UserError`` naming it (``config.read_json``), never read as "no profile"."""
    model_dir = Path(model_dir)
    run = _own_json(model_dir.parent / "run.json") if (model_dir.parent / "rounds.jsonl").is_file() else {}
    config = run.get("config") if isinstance(run.get("config"), dict) else {}
    return _own_json(model_dir / METRICS).get("profile") or config.get("profile") or None


def _own_json(path: Path) -> dict:
    """The JSON object a run folder keeps at ``path`` (``metrics.json``, an iterate folder's ``run.json``); ``{}``
    when the folder has none (a model from elsewhere). A damaged one raises ``UserError`` (``config.read_json``)."""
    return read_json(path, hint="remove it to use the folder as a model from outside xlprune") if path.is_file() else {}


def source_run(model_dir, profile: Profile | None = None, data=None) -> tuple[Path, str, Profile]:
    """A saved model folder to start from: ``(folder, its content key (:func:`content_key`), the profile to use
    (the given one, else the one it was made with, else :data:`FOREIGN_PROFILE`))``. The key follows the weights,
    config and tokenizer files, so a folder retrained or copied over in place is a new source, whatever its
    ``metrics.json`` says.

    A folder from outside xlprune has no data of its own: ``data`` (``--data``) is then required, else a
    one-line ``UserError``."""
    model_dir = check_model_dir(model_dir)
    made_with = own_profile(model_dir)
    if made_with is None and data is None:
        raise UserError(f"{model_dir} was not made by xlprune (no metrics.json), so it has no data of its own: "
                        "give --data (a folder of train/validation/test files, or a hub dataset name)")
    profile = profile or get_profile(made_with or FOREIGN_PROFILE)
    return model_dir, content_key(model_dir), profile


def source_data(model_dir, data=None):
    """The data a run on ``model_dir`` uses: ``data`` (``--data``) when given, else the data the folder was
    fine-tuned on when that was a user's (its ``metrics.json`` records it), else ``None`` (the profile's task)."""
    recorded = _own_json(Path(model_dir) / METRICS).get("data")
    return data if data is not None else recorded.get("source") if isinstance(recorded, dict) else None


def source_accuracy(model_dir, source_key: str, profile: Profile, seed: int, measure, data_key=None) -> dict:
    """The accuracy of a source model on the evaluation splits, ``measure()`` run once per source content.

    Every pruning run from the same classifier starts by evaluating it; the result is kept with :func:`memo`
    under the folder's content key (``source_key``, from :func:`source_run`) and the data settings, so later
    runs from the same weights reuse it and a folder with other weights is measured again. ``data_key``: the
    user's data (``UserData.key``), part of the memo's key; ``None`` for the profile's task.
    """
    return memo("source-accuracy", {"model": source_key, "profile": profile.name, "task": profile.task,
                                    "max_examples": profile.max_examples, "max_seq_len": profile.max_seq_len,
                                    "seed": seed, **(data_key or {})}, measure)


def run_key(kind: str, config: dict) -> str:
    return cache_key({"kind": kind, "runs_version": RUNS_VERSION, **config})


def precision(profile: Profile) -> str:
    """The precision a run really uses: fp32 on a CPU; on a GPU the profile's, bf16 falling back to fp16 where
    the GPU lacks bf16 (before Ampere)."""
    if not torch.cuda.is_available() or profile.precision == "fp32":
        return "fp32"
    if profile.precision == "bf16" and not torch.cuda.is_bf16_supported():
        return "fp16"
    return profile.precision


def precision_record(profile: Profile) -> dict:
    """What a run's ``metrics.json`` says about precision: ``{"requested", "delivered", "note"}``.

    ``requested`` is the profile's setting, ``delivered`` what :func:`precision` gives on this machine;
    ``note`` (``None`` when they agree) says both and why they differ, in one line.
    """
    requested, delivered = profile.precision, precision(profile)
    note = None
    if delivered != requested:
        why = "this machine has no CUDA GPU" if not torch.cuda.is_available() else "this GPU has no bf16"
        note = (f"profile {profile.name!r} asks for {requested} training; {why}, so it trains in {delivered} "
                f"(recorded in metrics.json as precision)")
    return {"requested": requested, "delivered": delivered, "note": note}


_NOTED: set[str] = set()   # precision notes already printed by this process


def notify_precision(profile: Profile) -> dict:
    """:func:`precision_record`, with its note printed once per process on stderr (one line)."""
    record = precision_record(profile)
    if record["note"] and record["note"] not in _NOTED:
        _NOTED.add(record["note"])
        print(f"xlprune: warning: {record['note']}", file=sys.stderr)
    return record


def training_args(profile: Profile, out: Path, seed: int, *, epochs: float, batch: int, lr: float,
                  progress: bool = True, **extra):
    """``TrainingArguments`` shared by pretraining and fine-tuning; ``extra`` adds or overrides settings.

    Checkpoints are saved by us at the end, except where ``extra`` turns the Trainer's own saving on (gradual
    pruning resumes from those).
    """
    on_gpu = torch.cuda.is_available()
    mixed = notify_precision(profile)["delivered"]
    kwargs = dict(
        output_dir=str(out), seed=seed, data_seed=seed, num_train_epochs=epochs,
        per_device_train_batch_size=batch, per_device_eval_batch_size=batch * 2, learning_rate=lr,
        weight_decay=profile.weight_decay, warmup_steps=profile.warmup_ratio, lr_scheduler_type="linear",
        logging_steps=profile.logging_steps, logging_first_step=True, save_strategy="no", report_to="none",
        bf16=mixed == "bf16", fp16=mixed == "fp16",
        dataloader_num_workers=0, disable_tqdm=not progress, use_cpu=not on_gpu,
    )
    return TrainingArguments(**{**kwargs, **extra})


def loss_curve(log_history: list[dict], key: str = "loss") -> list[list[float]]:
    """``[[step, value], ...]`` for one logged quantity of ``Trainer.state.log_history``."""
    return [[h["step"], h[key]] for h in log_history if key in h]


def quiet_libraries() -> None:
    """Silence transformers' and datasets' progress bars and warnings (notebooks, tests)."""
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        import datasets  # the [train] extra; the core install has no dataset progress bars to silence
    except ImportError:
        return
    datasets.disable_progress_bars()


def quiet_trainer(trainer, progress: bool):
    """Without progress output, drop the Trainer's printed log lines (they stay in ``state.log_history``)."""
    if not progress:

        trainer.remove_callback(PrinterCallback)
        quiet_libraries()
    return trainer


def _plain(value):
    """``json`` hook: NumPy and torch scalars as Python numbers, their arrays and tensors as (nested) lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def memo(kind: str, config: dict, compute):
    """The JSON-able result of ``compute()``, cached like a run: keyed by ``kind`` and ``config``.

    For measurements a chapter computes inline (accuracy curves over many pruned copies, sensitivity scans):
    the same request returns the stored rows, so a rebuild with cached checkpoints does not redo them. Put in
    ``config`` everything the result depends on (the source model's :func:`content_key`, the grid,
    ``RUNS_VERSION`` is added here). A memo that cannot be read is recomputed; writes are atomic; the same memo
    asked for by two processes at once is computed once (``config.computed_once``).
    """
    path = cache_dir() / "memo" / f"{kind}-{run_key(kind, config)}.json"

    def stored():   # (result,) or None: a stored result may itself be None
        try:
            return (json.loads(path.read_text())["result"],)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def fresh():
        result = json.loads(json.dumps(compute(), default=_plain))
        # keys in the order computed (not sorted): a cached row has its columns in the order a fresh one has
        write_text_atomic(path, json.dumps({"kind": kind, "config": config, "result": result}, indent=1) + "\n")
        return (result,)

    return computed_once(path, stored, fresh)[0]
