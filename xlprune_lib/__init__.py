"""xlprune_lib: pruning XLNet, the library behind the book.

Subpackages, each one concept, each importing only from those before it (docs/architecture.md):
``xlnet`` (the model's structure, loading and saving, surgery, masks, gates), ``measure`` (tables, sizes,
intervals), ``train`` (data, warm start, pretraining, fine-tuning, the run cache), ``prune`` (scores,
threshold rules, the ``PruningPlan``, L0 gates, schedules), ``deploy`` (model cards, ONNX export and int8,
benchmarks, 2:4 on sparse tensor cores), ``loops`` (one-shot, iterative, gradual, distributed pruning), ``book`` (chapter execution,
reference results, figures); ``config`` and ``cli`` (the ``xlprune`` command) at the top.
"""
import os
import sys
import warnings

# tqdm.auto warns once per kernel that ipywidgets is missing; progress bars are off in notebooks anyway.
warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = "0.1.0"

INTERRUPTED = 130   # 128 + SIGINT, what a shell reports for a command ended by Ctrl-C


def interrupted() -> int:
    """Say on stderr that the command was interrupted (one line) and return its exit code, 130.

    It also clears CPython's note of an uncaught KeyboardInterrupt. CPython (3.11, 3.12) sets that note when a
    KeyboardInterrupt ends a string ``exec`` or ``eval``, even if a caller then catches it; ``dataclasses`` and
    ``collections.namedtuple`` build code that way while modules import. A ``python -m`` process with the note set
    kills itself with SIGINT at exit (return code -2) instead of exiting with the code it was given. Every string
    eval begins by clearing the note, so one trivial eval here does it.
    """
    print("xlprune: interrupted", file=sys.stderr)
    exec("pass", {})   # noqa: S102 -- a constant string: clears the note described above
    return INTERRUPTED


def _is_the_command() -> bool:
    """Whether this process is the ``xlprune`` command, which imports this package first: the console script
    (``sys.argv[0]`` is the script), or ``python -m xlprune_lib`` (``sys.argv[0]`` is ``-m`` while Python locates
    the module, and the original command line names it)."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) in ("xlprune", "xlprune.exe"):
        return True
    orig = getattr(sys, "orig_argv", [])
    return argv0 == "-m" and any(a == "-mxlprune_lib" or (a == "-m" and orig[i + 1:i + 2] == ["xlprune_lib"])
                                 for i, a in enumerate(orig))


# Pruned models (layers of different widths) are saved with model type ``xlnet-pruned``; registering it here
# lets ``AutoModelForSequenceClassification.from_pretrained`` and ``pipeline`` load them after ``import xlprune_lib``.
# The import takes seconds (torch, transformers); a Ctrl-C during it ends the command with one line and exit code
# 130, as anywhere else in the command (``__main__.py``); in any other program it stays a KeyboardInterrupt.
try:
    from .xlnet.modeling import register_pruned_xlnet  # noqa: E402

    register_pruned_xlnet()
except KeyboardInterrupt:
    if not _is_the_command():
        raise
    raise SystemExit(interrupted()) from None
