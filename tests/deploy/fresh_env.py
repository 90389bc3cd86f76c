"""A Python environment without xlprune, in which saved folders must still load."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xlprune_lib.config import atomic_dir, repo_root

# what a user of a shipped pruned folder has: these, with the versions constraints.txt pins, and their dependencies
PORTABLE_REQUIREMENTS = ("torch", "transformers", "safetensors")


@pytest.fixture(scope="session")
def fresh_python() -> Path:
    """The interpreter of a virtual environment holding only :data:`PORTABLE_REQUIREMENTS` (pip-installed with
    ``constraints.txt``; the wheels come from pip's cache after the first time). Built once per set of pins
    into ``data/cache/envs`` (a fresh clone builds it in about 40 s)."""
    constraints = repo_root() / "constraints.txt"
    pins = sorted(line for line in constraints.read_text().splitlines() if re.match(r"[A-Za-z0-9]", line))
    key = hashlib.sha256("\n".join([sys.version, *PORTABLE_REQUIREMENTS, *pins]).encode()).hexdigest()[:12]
    target = repo_root() / "data" / "cache" / "envs" / f"portable-{key}"
    python = target / "bin" / "python"
    if not python.exists():
        with atomic_dir(target, replace=True) as tmp:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(tmp)], check=True)
            subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                            "-c", str(constraints), *PORTABLE_REQUIREMENTS], check=True)
        shutil.rmtree(target.parent / "__pycache__", ignore_errors=True)
    return python


def run_fresh(python: Path, code: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``code`` in the fresh environment, isolated (``-I``: neither the working folder nor ``PYTHONPATH`` on
    ``sys.path``) and offline (no hub), with its own module cache for remote code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HF_", "XLPRUNE"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(cwd / "hf-home"))
    proc = subprocess.run([str(python), "-I", "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"fresh environment failed:\n{proc.stderr[-3000:]}")
    return proc
