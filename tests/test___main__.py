"""The ``xlprune`` entry point (``xlprune_lib/__main__.py``): the console script is this guarded ``main``; an
interrupt while ``cli`` is still being imported is the one line and exit code 130; the command's exit code is
returned, and a finished command ignores a late Ctrl-C."""
import shutil
import signal
import sys
import tomllib
from importlib import import_module
from pathlib import Path

from xlprune_lib.__main__ import main


def test_interrupt_while_importing_cli_in_process(monkeypatch, capsys):
    """The entry point's own guard: Ctrl-C during the import of ``cli`` (seconds of torch and transformers)."""
    from xlprune_lib.__main__ import main

    class Interrupting:
        def find_spec(self, name, path=None, target=None):
            if name == "xlprune_lib.cli":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "xlprune_lib.cli", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    assert main(["info", "--model", "x"]) == 130
    assert capsys.readouterr().err == "xlprune: interrupted\n"


def test_the_console_script_is_the_guarded_entry_point():
    root = Path(__file__).resolve().parents[1]
    target = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]["xlprune"]
    module, func = target.split(":")
    assert module == "xlprune_lib.__main__"   # not cli: its imports would be outside the guard
    entry = getattr(import_module(module), func)
    assert callable(entry) and entry(["info", "--model", "/nonexistent/folder"]) == 2
    assert shutil.which("xlprune", path=str(Path(sys.executable).parent)) is not None


def test_main_returns_the_command_exit_code_and_then_ignores_a_late_interrupt(monkeypatch, capsys, tmp_path):
    """With ``argv`` given (a caller in this process), the SIGINT handler is the caller's; as the process's own
    command (``argv=None``: ``sys.argv``), a Ctrl-C after the command finished no longer raises."""
    previous = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        assert main(["info", "--model", str(tmp_path / "missing")]) == 2
        assert "does not exist" in capsys.readouterr().err
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        monkeypatch.setattr(sys, "argv", ["xlprune", "info", "--model", str(tmp_path / "missing")])
        assert main() == 2
        assert "does not exist" in capsys.readouterr().err
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
