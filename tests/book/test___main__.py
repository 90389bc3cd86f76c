"""``python -m xlprune_lib.book`` (``book/__main__.py``) refuses bad arguments with exit code 2 before any chapter
runs: argparse's usage message for a malformed command line, one ``xlprune: error:`` line for a value the library
refuses. Each case is its own process (the module runs ``main`` when imported); they run side by side."""
import subprocess
import sys

import pytest

from xlprune_lib.config import PROFILES

CASES = {
    "no command": [],
    "bad seed": ["execute", "--seed", "zero"],
    "bad profile": ["execute", "--profile", "nosuch", "--only", "01"],
    "repeated seeds": ["results", "--profile", "smoke", "--seeds", "0", "0", "--only", "02", "--dest", "{dest}"],
    "bad repeats": ["base-shape", "--repeats", "0", "--dest", "{dest}"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``{case: subprocess.CompletedProcess}`` of every case, started together; ``"dest"``: what the ``--dest``
    folder holds afterwards."""
    dest = tmp_path_factory.mktemp("dest")
    procs = {name: subprocess.Popen([sys.executable, "-m", "xlprune_lib.book",
                                     *(a.format(dest=dest) for a in args)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, args in CASES.items()}
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=180)
        out[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    out["dest"] = sorted(p.name for p in dest.iterdir())
    return out


@pytest.mark.parametrize("case, usage, message", [
    ("no command", "usage: python -m xlprune_lib.book [-h] {execute,results,base-shape}",
     "the following arguments are required: command"),
    ("bad seed", "usage: python -m xlprune_lib.book execute [-h]", "argument --seed: invalid int value: 'zero'"),
])
def test_a_malformed_command_line_is_argparse_usage(runs, case, usage, message):
    proc = runs[case]
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and proc.stdout == ""
    assert lines[0].startswith(usage) and lines[-1].endswith(message)


def test_an_unknown_profile_is_one_line(runs):
    bad = runs["bad profile"]
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.count("\n") == 1
    assert bad.stderr.strip() == f"xlprune: error: unknown profile 'nosuch'; valid profiles: {', '.join(PROFILES)}"


def test_repeated_seeds_are_one_line_and_nothing_is_written(runs):
    bad = runs["repeated seeds"]
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("xlprune: error: --seeds must be distinct integers >= 0, got [0, 0]")
    assert runs["dest"] == []                                      # refused before any table or chapter


def test_base_shape_refuses_a_bad_repeats(runs):
    bad = runs["bad repeats"]
    assert bad.returncode == 2 and bad.stderr.strip() == "xlprune: error: --repeats must be >= 1, got 0"
