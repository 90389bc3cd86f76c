"""Cached runs: where a training run writes, when it is reused, and the Trainer settings all runs share.

A run is identified by a hash of its configuration (``config.cache_key``). Its folder holds the checkpoint
(safetensors), the tokenizer and ``metrics.json``; ``metrics.json`` is written last, so a folder without it
is not a finished run. Asking for the same configuration again returns the stored metrics; asking to write a
*different* configuration into a folder that holds a finished run is refused, so no result is overwritten.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from transformers import PrinterCallback, TrainingArguments
from transformers.utils import logging as hf_logging

from ..config import Profile, UserError, cache_dir, cache_key, check_output_dir, get_profile, write_text_atomic
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
    try:
        stored = json.loads(metrics.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{metrics} is unreadable ({exc}); move it away or choose another --out") from None
    if stored.get("config_key") != key:
        raise UserError(f"{out} already holds a different run (config {stored.get('config_key')}, "
                        f"this one is {key}); choose another --out")
    return stored


def source_run(model_dir, profile: Profile | None = None) -> tuple[Path, str, Profile]:
    """A saved model folder to start from: ``(folder, the config key it was made with (else its path), the profile
    to use (the given one, else the one it was made with))``."""
    model_dir = check_model_dir(model_dir)
    source = json.loads((model_dir / METRICS).read_text()) if (model_dir / METRICS).is_file() else {}
    profile = profile or get_profile(source.get("profile", "tiny"))
    return model_dir, source.get("config_key") or str(model_dir.resolve()), profile


def source_accuracy(model_dir, source_key: str, profile: Profile, seed: int, measure) -> dict:
    """The accuracy of a source model on the evaluation splits, ``measure()`` run once per source.

    Every pruning run from the same classifier starts by evaluating it; when the folder is a cached run (it
    has a config key, so its weights are fixed) the result is kept with :func:`memo` and later runs reuse it.
    A folder without a key (a model from elsewhere) is measured every time.
    """
    if source_key == str(Path(model_dir).resolve()):
        return measure()
    return memo("source-accuracy", {"model": source_key, "profile": profile.name, "task": profile.task,
                                    "max_examples": profile.max_examples, "max_seq_len": profile.max_seq_len,
                                    "seed": seed}, measure)


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
    ``config`` everything the result depends on (the source model's config key, the grid, ``RUNS_VERSION`` is
    added here). A memo that cannot be read is recomputed; writes are atomic.
    """
    path = cache_dir() / "memo" / f"{kind}-{run_key(kind, config)}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())["result"]
        except (ValueError, KeyError):
            pass
    result = json.loads(json.dumps(compute(), default=_plain))
    # keys in the order computed (not sorted): a cached row has its columns in the order a fresh one has
    write_text_atomic(path, json.dumps({"kind": kind, "config": config, "result": result}, indent=1) + "\n")
    return result
