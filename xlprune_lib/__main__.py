"""The ``xlprune`` command's entry point: ``python -m xlprune_lib`` and the console script (``pyproject.toml``).

An interrupt (Ctrl-C, SIGINT) at any point ends the command with one line, "xlprune: interrupted", and exit
code 130. ``cli.main`` handles one that comes while a command runs; this module handles one that comes while
``cli`` and its libraries (torch, transformers) are still being imported, which takes seconds. The package's
own import is guarded in ``__init__.py`` (``python -m`` imports the package before this module runs).
"""
import signal

from . import interrupted


def main(argv: list[str] | None = None) -> int:
    """Import the command (``cli``) and run it with ``argv`` (``None``: the process's own arguments); an interrupt
    during either gives :func:`interrupted`. Returns the exit code."""
    try:
        from .cli import main as run  # seconds of imports (torch, transformers): an interrupt here is handled too

        code = run(argv)
    except KeyboardInterrupt:
        code = interrupted()
    if argv is None:   # the process is the command and it has finished: a late Ctrl-C must not add a traceback
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
