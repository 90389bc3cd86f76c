"""A Python environment without xlprune, in which saved folders must still load."""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from xlprune_lib.config import atomic_dir, repo_root

# what a user of a shipped pruned folder has: these, with the versions constraints.txt pins, and their dependencies
PORTABLE_REQUIREMENTS = ("torch", "transformers", "safetensors")


def _venv(name: str, requirements: list[str], key_files: tuple[Path, ...] = ()) -> Path:
    """The interpreter of a virtual environment with ``requirements`` pip-installed under ``constraints.txt``
    (wheels from pip's cache after the first time), built once per set of pins into ``data/cache/envs``."""
    constraints = repo_root() / "constraints.txt"
    pins = sorted(line for line in constraints.read_text().splitlines() if re.match(r"[A-Za-z0-9]", line))
    extra = [f.read_text() for f in key_files]
    key = hashlib.sha256("\n".join([sys.version, *requirements, *pins, *extra]).encode()).hexdigest()[:12]
    target = repo_root() / "data" / "cache" / "envs" / f"{name}-{key}"
    python = target / "bin" / "python"
    if not python.exists():
        with atomic_dir(target, replace=True) as tmp:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(tmp)], check=True)
            subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                            "-c", str(constraints), *requirements], check=True)
    return python


@pytest.fixture(scope="session")
def fresh_python() -> Path:
    """An environment holding only :data:`PORTABLE_REQUIREMENTS` and their dependencies (about 40 s to build)."""
    return _venv("portable", list(PORTABLE_REQUIREMENTS))


@pytest.fixture(scope="session")
def core_python() -> Path:
    """An environment with xlprune installed without extras (editable, so it runs this checkout's code): only
    the dependencies ``pyproject.toml`` names for the core install."""
    root = repo_root()
    return _venv(f"core-{hashlib.sha256(str(root).encode()).hexdigest()[:6]}", ["-e", str(root)],
                 key_files=(root / "pyproject.toml",))


def run_fresh(python: Path, code: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``code`` in the fresh environment, isolated (``-I``: neither the working folder nor ``PYTHONPATH`` on
    ``sys.path``) and offline (no hub), with its own module cache for remote code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HF_", "XLPRUNE"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(cwd / "hf-home"))
    proc = subprocess.run([str(python), "-I", "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"fresh environment failed:\n{proc.stderr[-3000:]}")
    return proc
