"""Profiles, paths, seeds and the one error type users see.

Four profiles share one code path (see DESIGN.md):

* ``smoke``:  a 2-layer XLNet on a few hundred examples, every code path in about a minute (tests, CI);
* ``minilm``: the default: a 6 x 384 XLNet warm-started from the pretrained MiniLM weights (``warmstart.py``),
  aligned to MiniLM's hidden states (``align.py``) and adapted with XLNet's permutation-LM objective on the
  offline corpus (the published figures, a 2-core CPU);
* ``tiny``:   a 6 x 256 XLNet with its own 8k SentencePiece vocabulary, pretrained here from scratch (chapter 1's
  comparison: what pretraining buys);
* ``base``:  the published ``xlnet-base-cased`` fine-tuned on GLUE SST-2, both from the model hub (one GPU).

Profiles are plain frozen dataclasses (nanoGPT style). ``cache_key`` hashes the fields a result depends on,
so a second run with the same configuration reuses the first one's checkpoint.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import filelock
from huggingface_hub import constants
from transformers import set_seed as hf_set_seed


class UserError(Exception):
    """A mistake the user can fix (bad name, missing file, no network). The CLI prints it on one line, exit 2."""


# the published model each warm start reads its weights from (``Profile.warm_start``; train/warmstart.py)
WARM_START_SOURCES = {"minilm": "sentence-transformers/all-MiniLM-L6-v2"}


@dataclass(frozen=True)
class Profile:
    name: str
    # model shape (ignored when ``hub_model`` is set: the hub config wins)
    n_layer: int
    n_head: int
    d_model: int
    d_inner: int
    vocab_size: int
    hub_model: str | None = None
    warm_start: str | None = None         # "minilm": map the pinned MiniLM weights into XLNet (warmstart.py)
    warm_positions: bool = False          # warm start: fit the relative-position term to BERT's positions
    align_steps: int = 0                  # warm start: steps of hidden-state alignment to the source (align.py)
    align_lr: float = 5e-5                # ... rate of the mapped tensors during alignment
    align_fresh_lr: float = 1e-3          # ... rate of the fresh parts (relative positions, segments)
    # data
    task: str = "rt"                      # see data.TASKS
    max_examples: int | None = None       # per split cap (smoke)
    max_seq_len: int = 64                 # classification inputs
    # permutation-LM pretraining (Yang et al. 2019, sec. 2.3)
    plm_block: int = 64                   # tokens per pretraining sequence (even: the collator needs it)
    plm_epochs: float = 1.0
    plm_batch: int = 32
    plm_lr: float = 1e-3
    plm_fresh_lr: float | None = None     # warm start: rate of the parts that start fresh (None: plm_lr)
    plm_probability: float = 1 / 6       # fraction of tokens predicted, K = 6 in the paper
    plm_max_span: int = 5
    # classification fine-tuning
    ft_epochs: float = 2.0
    ft_batch: int = 32
    ft_lr: float = 5e-4
    recovery_lr: float = 1e-4             # fine-tuning a trained model after pruning (lower: it starts converged)
    distill_alpha: float = 0.0            # > 0: a warm start also learns from the source-BERT teacher (distill.py)
    distill_temperature: float = 2.0
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    dropout: float = 0.1
    precision: str = "fp32"               # fp32 | bf16 | fp16 (bf16/fp16 only on a GPU)
    logging_steps: int = 10
    bench_repeats: int = 15               # timed forward passes per model in the chapter-5 benchmarks

    def model_kwargs(self) -> dict:
        """Keyword arguments for ``transformers.XLNetConfig`` (random-init profiles)."""
        return dict(
            vocab_size=self.vocab_size, d_model=self.d_model, n_layer=self.n_layer, n_head=self.n_head,
            d_inner=self.d_inner, ff_activation="gelu", dropout=self.dropout,
            # XLNet's own defaults for a bidirectional encoder without recurrence memory in fine-tuning.
            mem_len=None, reuse_len=None, bi_data=False, clamp_len=-1, same_length=False,
            pad_token_id=5, bos_token_id=1, eos_token_id=2,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke", n_layer=2, n_head=4, d_model=64, d_inner=256, vocab_size=1000,
        max_examples=300, max_seq_len=48, plm_block=32, plm_epochs=1.0, plm_batch=16,
        ft_epochs=1.0, ft_batch=16, ft_lr=1e-3, recovery_lr=1e-3, logging_steps=2,
        bench_repeats=3,
    ),
    "tiny": Profile(
        name="tiny", n_layer=6, n_head=8, d_model=256, d_inner=1024, vocab_size=8000,
        max_seq_len=64, plm_block=64, plm_epochs=0.5, plm_batch=32, plm_lr=1e-3,
        ft_epochs=2.0, ft_batch=32, ft_lr=5e-4, recovery_lr=1e-4,
    ),
    "minilm": Profile(
        name="minilm", n_layer=6, n_head=12, d_model=384, d_inner=1536, vocab_size=30522, warm_start="minilm",
        warm_positions=False, align_steps=200,
        max_seq_len=64, plm_block=64, plm_epochs=1.0, plm_batch=32, plm_lr=1e-4, plm_fresh_lr=3e-4,
        ft_epochs=1.0, ft_batch=32, ft_lr=1e-4, recovery_lr=5e-5,
    ),
    "base": Profile(
        name="base", n_layer=12, n_head=12, d_model=768, d_inner=3072, vocab_size=32000,
        hub_model="xlnet-base-cased", task="sst2", max_seq_len=128,
        ft_epochs=3.0, ft_batch=32, ft_lr=2e-5, recovery_lr=2e-5, warmup_ratio=0.1, precision="bf16", logging_steps=50,
        bench_repeats=30,
    ),
}
DEFAULT_PROFILE = "minilm"


def option(default=dataclasses.MISSING, *, help: str, flag: str | None = None, parse=None,
           metavar: str | None = None):
    """A spec field that is also a command-line option (after nanoGPT's configurator: the CLI is derived from
    the fields). ``help``: the option's help text; ``flag``: its name if not ``--field-name``; ``parse``: how
    to read the string (default: from the annotation); ``metavar``: the value's name in the usage line. No
    ``default``: the option is required. A boolean defaulting to True becomes ``--no-field`` and ``help``
    describes that flag."""
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag, "parse": parse,
                                                        "metavar": metavar})


def get_profile(name: str) -> Profile:
    """Look a profile up by name; unknown names are a user error listing the valid ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise UserError(f"unknown profile {name!r}; valid profiles: {', '.join(PROFILES)}") from None


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def cache_dir() -> Path:
    """Where fetched data, tokenizers and cached runs live: ``$XLPRUNE_CACHE`` or ``<repo>/data/cache``."""
    env = os.environ.get("XLPRUNE_CACHE")
    return ensure_dir(Path(env) if env else repo_root() / "data" / "cache",
                      "XLPRUNE_CACHE" if env else "the cache folder")


def fs_error(path: Path | str, exc: OSError) -> UserError:
    """A filesystem failure (missing parent, permission, read-only, full disk) as one line naming the path."""
    return UserError(f"cannot write {path}: {exc.strerror or exc}"
                     + (f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""))


def ensure_dir(path: Path | str, what: str = "folder") -> Path:
    """``path`` as an existing folder (created with its parents if needed), or a one-line ``UserError``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fs_error(path, exc) from None
    return path


def check_writable(target: Path | str) -> Path:
    """Fail early, before any work, if ``target`` (a file or folder to be written) cannot be created.

    Its parent folder is created if needed and a probe file is written there and removed, which catches
    missing or read-only mounts and permissions (also for root, where ``os.access`` says yes to everything).
    """
    target = Path(target)
    parent = ensure_dir(target.parent)
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{target.name}.probe-")
    except OSError as exc:
        raise fs_error(target, exc) from None
    try:
        os.close(fd)
    finally:   # removed even when interrupted here
        os.unlink(probe)
    return target


def check_output_dir(out: Path | str, what: str = "--out") -> Path:
    """An output folder that may be written: absent or empty (a folder that holds a result is the caller's to
    judge first). A file, or a folder with files that are not this run's, is refused untouched."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{what} {out} is an existing file, not a folder; nothing was changed: choose another {what}")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"{what} {out} is not empty and holds no result of this run; nothing was changed: "
                        f"choose another {what}")
    return check_writable(out)


def damaged(path: Path | str, reason, hint: str = "") -> UserError:
    """The one-line error for a file that exists but cannot be read as what it should be: "<path> is damaged
    (<reason>)", plus ``hint`` (what to do) when given. ``reason``: an exception (its first line) or text."""
    if isinstance(reason, BaseException):
        reason = (str(reason).strip().splitlines() or [type(reason).__name__])[0]
    return UserError(f"{path} is damaged ({reason})" + (f"; {hint}" if hint else ""))


def read_json(path: Path | str, expect: type | None = dict, hint: str = ""):
    """The JSON value in the file ``path`` (every JSON file xlprune reads from a folder goes through here).

    ``expect``: the type the top-level value must have (default: an object, ``dict``; ``None``: any). A file
    that is truncated, not UTF-8, not JSON or of another type raises ``UserError`` "<path> is damaged
    (<reason>)" (:func:`damaged`, with ``hint``); a missing file "<path> is missing"; another read failure
    (permissions, a folder in its place) "cannot read <path>: ...".
    """
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} is missing" + (f"; {hint}" if hint else "")) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise damaged(path, exc, hint) from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    if expect is not None and not isinstance(value, expect):
        raise damaged(path, f"a JSON {type(value).__name__} where a JSON {expect.__name__} belongs", hint)
    return value


def read_jsonl(path: Path | str, hint: str = "") -> list[dict]:
    """The JSON objects of a JSON-lines file, one per non-blank line; a bad line raises :func:`damaged`
    naming ``path`` and the line number."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise damaged(path, exc, hint) from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise damaged(path, f"line {n}: {exc}", hint) from None
        if not isinstance(value, dict):
            raise damaged(path, f"line {n} is not a JSON object", hint)
        out.append(value)
    return out


def cache_key(payload: dict) -> str:
    """Short stable hash of a JSON-serialisable configuration."""
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


LOCK_TIMEOUT_ENV = "XLPRUNE_LOCK_TIMEOUT"
LOCK_TIMEOUT = 4 * 3600.0     # seconds a run waits for an identical one to finish (a cold minilm run takes ~1 h)
_held = threading.local()     # the lock files this thread holds: a producer nested in one of its own is not blocked


def lock_timeout() -> float:
    """Seconds :func:`cache_lock` waits: ``$XLPRUNE_LOCK_TIMEOUT`` (a number >= 0) or :data:`LOCK_TIMEOUT`.
    Raises ``UserError`` for anything else."""
    raw = os.environ.get(LOCK_TIMEOUT_ENV)
    if raw is None or not raw.strip():
        return LOCK_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value < float("inf"):
        raise UserError(f"{LOCK_TIMEOUT_ENV} must be a number of seconds >= 0, got {raw!r}")
    return value


def lock_path(target: Path | str) -> Path:
    """The lock file of a cache entry: ``<target>.lock``, beside it."""
    target = Path(target)
    return target.with_name(target.name + ".lock")


def _write_holder(fd: int) -> None:
    """Record who holds the lock inside the lock file (read back when a waiter gives up)."""
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200] if sys.argv and sys.argv[0] else "python"
    text = f"pid {os.getpid()} on {socket.gethostname()} since {started} ({command})"
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode(), 0)


@contextlib.contextmanager
def cache_lock(target: Path | str):
    """Hold the lock of the cache entry ``target`` (a run folder or a file) for the block; yields the lock path.

    The one lock of the package's cached producers: two processes asking for the same entry take turns, so one
    computes and the other then finds the result. The lock is an OS file lock (``filelock``, ``flock`` on
    Unix) on :func:`lock_path`: it is released when the block ends, by an exception or ``Ctrl-C``, and by the
    OS when the process dies. The lock file stays (a waiter may hold it open); it holds the holder's pid, host,
    start time and command. A thread that already holds the lock enters at once.

    Waits up to :func:`lock_timeout` seconds; then raises a one-line ``UserError`` naming the lock file and its
    holder. A lock file that cannot be created is a one-line ``UserError`` (:func:`fs_error`).
    """
    path = lock_path(target)
    held = _held.__dict__.setdefault("paths", set())
    key = str(path.resolve())
    if key in held:
        yield path
        return
    timeout = lock_timeout()
    ensure_dir(path.parent)
    lock = filelock.FileLock(str(path), timeout=timeout, on_acquired=_write_holder)
    try:
        lock.acquire()
    except filelock.Timeout:
        try:
            holder = path.read_text().strip() or "an unknown process"
        except OSError:
            holder = "an unknown process"
        raise UserError(f"waited {timeout:g} s for {path}, held by {holder}: another run is computing the same "
                        f"result; wait for it, or raise {LOCK_TIMEOUT_ENV} (seconds)") from None
    except OSError as exc:
        raise fs_error(path, exc) from None
    held.add(key)
    try:
        yield path
    finally:
        held.discard(key)
        lock.release()


def computed_once(target: Path | str, find, compute):
    """``find()`` if it is not ``None`` (a finished cache entry ``target``), else ``compute()`` under
    :func:`cache_lock`, after looking once more: identical requests at once compute once, and the others return
    what the first one made. ``find`` must return ``None`` exactly while the entry is missing or incomplete (it
    may raise ``UserError`` for an entry it refuses: that happens before any wait); ``compute`` writes the entry
    atomically and returns the result."""
    found = find()
    if found is not None:
        return found
    with cache_lock(target):
        found = find()
        return found if found is not None else compute()


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (``transformers.set_seed`` does all three)."""
    random.seed(seed)
    hf_set_seed(seed)


@contextlib.contextmanager
def atomic_dir(target: Path | str, replace: bool = False):
    """Yield a temporary folder beside ``target``; on success it becomes ``target`` in one rename.

    An interrupted or failed write leaves ``target`` as it was (the temporary folder is removed), so a later
    run never trusts half a checkpoint. ``target`` must be absent or an empty folder; with ``replace`` (for
    folders the caller owns, such as a round checkpoint of the same run) an existing folder is replaced. A
    file, or a non-empty folder without ``replace``, is refused untouched (``UserError``); a filesystem error
    (missing or read-only parent, full disk) is a one-line ``UserError`` naming ``target``.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise UserError(f"{target} is an existing file, not a folder; nothing was changed")
    if not replace and target.is_dir() and any(target.iterdir()):
        raise UserError(f"{target} is not empty; nothing was changed: choose another folder or move it away")
    ensure_dir(target.parent)
    try:
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    except OSError as exc:
        raise fs_error(target, exc) from None
    try:
        yield tmp
        if target.exists():              # an empty folder, or one the caller replaces: swap, keep it on failure
            _swap(tmp, target)
        else:
            os.replace(tmp, target)
    except OSError as exc:
        raise fs_error(target, exc) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _swap(new: Path, target: Path) -> None:
    """Replace the folder ``target`` by ``new``; if that fails, put the old one back, and if even that fails keep
    it beside ``target`` and say where (never delete it)."""
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
    try:
        os.replace(target, old / "x")
    except OSError:
        old.rmdir()
        raise
    try:
        os.replace(new, target)
    except OSError as exc:
        try:
            os.replace(old / "x", target)
        except OSError:
            raise UserError(f"cannot write {target}: {exc.strerror or exc}; the previous {target.name} is kept at "
                            f"{old / 'x'}") from None
        old.rmdir()
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: Path | str, suffix: str = ".tmp"):
    """Yield a temporary path beside ``path`` for the caller to write; when the block ends without an exception
    it replaces ``path`` in one rename (never a half-written file), otherwise it is removed and ``path`` is left
    as it was. Failures to create the temporary file or to rename it become one-line ``UserError`` s naming
    ``path`` (errors raised by the block itself pass through unchanged); ``path`` must not be a folder."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a file; nothing was changed")
    ensure_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
        os.close(fd)
    except OSError as exc:
        raise fs_error(path, exc) from None
    try:
        yield Path(tmp)
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise fs_error(path, exc) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text_atomic(path: Path | str, text: str) -> None:
    """Write text through a temporary file and ``os.replace`` (:func:`atomic_file`)."""
    with atomic_file(path) as tmp:
        try:
            tmp.write_text(text)
        except OSError as exc:   # a full disk, say: one line naming the file that was to be written
            raise fs_error(path, exc) from None


def write_json_atomic(path: Path | str, payload) -> None:
    """Write JSON atomically (:func:`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def require_hub(what: str, timeout: float = 5.0) -> None:
    """Fail fast, with one clear line, when the model hub cannot be reached.

    ``transformers`` and ``datasets`` retry for tens of seconds before giving up; a single connection
    attempt tells the same in a few. With ``HF_HUB_OFFLINE=1`` the libraries read their local cache instead,
    so no probe is made.
    """

    if constants.HF_HUB_OFFLINE:
        return
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as exc:
        raise UserError(f"{what} needs the model hub ({url.hostname}), which cannot be reached ({exc}); "
                        f"use an offline profile ('smoke', 'minilm', 'tiny'), or set HF_HUB_OFFLINE=1 with a filled "
                        f"Hugging Face cache") from None
