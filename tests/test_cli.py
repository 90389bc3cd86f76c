"""The `xlprune` command: help for every command, one-line errors with exit code 2, info output."""
import json
import os
import subprocess
import sys

import pytest

from xlprune_lib.xlnet import modeling
from xlprune_lib.measure import report


def run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "xlprune_lib", *args], capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())


def assert_user_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for f in fragments:
        assert f in lines[0]


def cli(capsys, *args) -> subprocess.CompletedProcess:
    """``xlprune ARGS`` in this process, returned like ``run``'s completed process (return code, stdout, stderr),
    without the interpreter start-up and imports (about 5 s) that ``run`` pays per call. It sees what goes through
    ``sys.stdout``/``sys.stderr``, not a warning this process has shown before: a test of everything a user's
    terminal gets uses ``run``, as the entry point's own tests do (help, a usage error, ``info``, ``prune``,
    ``iterate``, ``bench``, the missed-request warning and the hub check)."""
    from xlprune_lib.cli import main

    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out.out, out.err)


def main_error(capsys, *args) -> str:
    """``xlprune ARGS`` in this process (the entry point's ``main``; no interpreter start-up per case): it must
    return 2 with one line on stderr; the line is returned."""
    from xlprune_lib.cli import main

    capsys.readouterr()                  # only this call's output counts
    assert main(list(args)) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_help_through_the_installed_entry_point():
    proc = run("--help")
    assert proc.returncode == 0 and "usage: xlprune" in proc.stdout


@pytest.mark.parametrize("command", ["fetch", "pretrain", "finetune", "info", "report", "prune", "iterate", "bench",
                                     "export"])
def test_help(command, capsys):
    from xlprune_lib.cli import main

    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0 and f"usage: xlprune {command}" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_unknown_profile(command, tmp_path, capsys):
    line = main_error(capsys, command, "--profile", "large", "--out", str(tmp_path / "x"))
    assert "unknown profile 'large'" in line and "smoke, tiny, minilm, base" in line
    assert not (tmp_path / "x").exists()


def test_unknown_command_and_option(capsys):
    # through a real interpreter once (what a user's shell sees), then in this process
    assert_user_error(run("frobnicate"), "invalid choice")
    assert "unrecognized arguments" in main_error(capsys, "info", "--model", "x", "--bogus")


def test_missing_model_dir(tmp_path, capsys):
    assert "does not exist" in main_error(capsys, "info", "--model", str(tmp_path / "nope"))
    assert "does not exist" in main_error(capsys, "finetune", "--profile", "smoke", "--init", str(tmp_path / "nope"))


def test_base_profile_pretrain_is_refused_at_once(capsys):
    assert "xlnet-base-cased" in main_error(capsys, "pretrain", "--profile", "base")


def test_base_profile_without_hub_fails_fast(tmp_path):
    env = os.environ.copy()
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"
    proc = subprocess.run([sys.executable, "-m", "xlprune_lib", "finetune", "--profile", "base", "--out",
                           str(tmp_path / "b")], capture_output=True, text=True, timeout=60, env=env)
    assert_user_error(proc, "needs the model hub")


def test_info_json_matches_the_tensors(tiny_classifier, tmp_path, capsys):
    from xlprune_lib.cli import main

    out = modeling.save_model(tiny_classifier, None, tmp_path / "m")
    proc = run("info", "--model", str(out), "--json")          # once through a real interpreter
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["components"] == report.parameter_breakdown(tiny_classifier)["components"]
    assert got["architecture"] == "XLNetForSequenceClassification"
    assert main(["info", "--model", str(out)]) == 0
    text = capsys.readouterr().out
    for comp in ("embeddings", "attention.q", "attention.r", "relative_biases", "ffn", "layer_norm", "head"):
        assert comp in text


def test_fetch_prints_split_sizes(capsys):
    from xlprune_lib.cli import main

    assert main(["fetch"]) == 0
    assert "train: 9915, validation: 1399, test: 1494" in capsys.readouterr().out
