"""Python environments without the project's ``.venv``, in which saved folders and the core install must work.

Each is a new virtual environment (``python -m venv``) whose ``site-packages`` holds exactly the distributions a
user would get from ``pip install`` of the requirements named: their dependency closure, read from the
installed metadata (``importlib.metadata``: ``Requires-Dist``, extras left out, markers evaluated), linked
from the project's environment, where ``make`` installed them from the pinned wheels. Nothing is downloaded
and nothing else is visible: ``python -I`` there cannot import ``datasets``, xlprune, or anything not linked.
"""
from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from xlprune_lib.config import repo_root

# what a user of a shipped pruned folder has: these and their dependencies
PORTABLE_REQUIREMENTS = ("torch", "transformers", "safetensors")


def closure(requirements) -> list[md.Distribution]:
    """The installed distributions that ``pip install`` of ``requirements`` brings: them and, recursively, their
    requirements without extras whose markers hold here. ``PackageNotFoundError`` if one is not installed."""
    seen, todo, found = set(), [Requirement(r) for r in requirements], []
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        dist = md.distribution(name)
        found.append(dist)
        todo += [Requirement(r) for r in dist.requires or []]
    return found


def linked_venv(target: Path, requirements, paths=()) -> Path:
    """A virtual environment at ``target`` holding :func:`closure` of ``requirements`` (each distribution's
    top-level files and its metadata, linked) and ``paths`` on ``sys.path`` (a ``.pth`` file). Returns its
    interpreter. Building takes a second; an existing one is rebuilt."""
    subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(target)], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(target), "platbase": str(target)}))
    for dist in closure(requirements):
        root = Path(dist.locate_file(""))
        tops = {f.parts[0] for f in dist.files or [] if f.parts and f.parts[0] != ".."}
        for top in tops:
            if (root / top).exists() and not (site / top).exists() and not top.endswith(".pth"):
                os.symlink(root / top, site / top)
    if paths:
        (site / "extra-paths.pth").write_text("".join(f"{p}\n" for p in paths))
    return target / "bin" / "python"


def core_requirements() -> list[str]:
    """The core install's requirements, as ``pyproject.toml`` declares them."""
    import tomllib

    return tomllib.loads((repo_root() / "pyproject.toml").read_text())["project"]["dependencies"]


@pytest.fixture(scope="session")
def fresh_python(tmp_path_factory) -> Path:
    """An environment holding only :data:`PORTABLE_REQUIREMENTS` and their dependencies."""
    return linked_venv(tmp_path_factory.mktemp("portable") / "venv", PORTABLE_REQUIREMENTS)


@pytest.fixture(scope="session")
def core_python(tmp_path_factory) -> Path:
    """An environment with what ``pip install xlprune`` (no extras) brings, and this checkout's package."""
    return linked_venv(tmp_path_factory.mktemp("core") / "venv", core_requirements(), paths=[repo_root()])


def run_fresh(python: Path, code: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``code`` in the fresh environment, isolated (``-I``: neither the working folder nor ``PYTHONPATH`` on
    ``sys.path``) and offline (no hub), with its own module cache for remote code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HF_", "XLPRUNE"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(cwd / "hf-home"))
    proc = subprocess.run([str(python), "-I", "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"fresh environment failed:\n{proc.stderr[-3000:]}")
    return proc
