"""Every path a command writes to or reads from (issue 13, kind 6): nothing of the user's is replaced or deleted,
and filesystem errors end with one line naming the path and exit code 2, no traceback."""
import errno
import os
from pathlib import Path

import pytest

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from xlprune_lib import cli, config  # noqa: E402
from xlprune_lib.book import plots  # noqa: E402
from xlprune_lib.measure import sparse  # noqa: E402
from xlprune_lib.config import UserError  # noqa: E402


@pytest.fixture
def ft(smoke_runs):
    return str(smoke_runs["ft"])


COMMANDS = {
    "pretrain": lambda ft: ["pretrain", "--profile", "smoke", "--quiet"],
    "finetune": lambda ft: ["finetune", "--profile", "smoke", "--quiet"],
    "prune": lambda ft: ["prune", "--model", ft, "--method", "magnitude", "--sparsity", "0.5", "--quiet"],
    "iterate": lambda ft: ["iterate", "--model", ft, "--method", "magnitude", "--target", "0.5", "--schedule",
                           "constant", "--step", "0.5", "--round-steps", "1", "--quiet"],
}


def one_line_error(capsys, code, *fragments):
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("xlprune: error:") and "Traceback" not in err[0], err
    for f in fragments:
        assert f in err[0], err
    return err[0]


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("command", COMMANDS)
def test_out_is_a_users_file(command, ft, tmp_path, capsys):
    mine = tmp_path / "notes.txt"
    mine.write_text("my data")
    code = cli.main([*COMMANDS[command](ft), "--out", str(mine)])
    one_line_error(capsys, code, str(mine), "file")
    assert mine.read_text() == "my data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]     # no temporary left beside it


@pytest.mark.parametrize("command", COMMANDS)
def test_out_is_a_foreign_folder(command, ft, tmp_path, capsys):
    folder = tmp_path / "thesis"
    (folder / "chapter").mkdir(parents=True)
    (folder / "chapter" / "draft.md").write_text("draft")
    (folder / "config.json").write_text("{}")                              # even one that looks like a model
    before = snapshot(folder)
    code = cli.main([*COMMANDS[command](ft), "--out", str(folder)])
    one_line_error(capsys, code, str(folder), "not empty")
    assert snapshot(folder) == before


@pytest.mark.parametrize("where", ["under-a-file", "proc"])
@pytest.mark.parametrize("command", COMMANDS)
def test_out_cannot_be_written(command, where, ft, tmp_path, capsys):
    if where == "under-a-file":
        (tmp_path / "plain").write_text("x")
        out = tmp_path / "plain" / "run"
    else:
        out = "/proc/xlprune-no-such-mount/run"
    code = cli.main([*COMMANDS[command](ft), "--out", str(out)])
    one_line_error(capsys, code, "cannot write" if where == "proc" else "plain")


def test_model_and_baseline_pointing_at_a_file(ft, tmp_path, capsys):
    cfg = os.path.join(ft, "config.json")
    code = cli.main(["prune", "--model", cfg, "--method", "magnitude", "--sparsity", "0.5", "--out",
                     str(tmp_path / "x")])
    one_line_error(capsys, code, cfg, "is a file", "config.json")
    for args in (["info", "--model", cfg], ["bench", "--model", ft, "--baseline", cfg, "--no-memory"]):
        one_line_error(capsys, cli.main(args), "is a file")


def test_cache_pointing_at_a_file(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "cache"
    bad.write_text("not a folder")
    monkeypatch.setenv("XLPRUNE_CACHE", str(bad))
    one_line_error(capsys, cli.main(["finetune", "--profile", "smoke", "--quiet"]), "XLPRUNE_CACHE", str(bad))
    assert bad.read_text() == "not a folder"


def test_library_writers_refuse_users_files(tiny_classifier, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("keep")
    with pytest.raises(UserError, match="not empty"):
        sparse.save_sparse(tiny_classifier, mine)
    (tmp_path / "file").write_text("keep")
    with pytest.raises(UserError, match="is an existing file"):
        sparse.save_sparse(tiny_classifier, tmp_path / "file")
    with pytest.raises(UserError, match="is a file"):
        plots.save(plt.figure(), tmp_path / "file", "figure")
    with pytest.raises(UserError, match="is a folder"):
        config.write_text_atomic(mine, "text")
    assert (mine / "keep.txt").read_text() == "keep" and (tmp_path / "file").read_text() == "keep"


def test_a_full_disk_leaves_nothing_half_written(tmp_path, monkeypatch):
    target = tmp_path / "run"
    with config.atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v1")
    real = os.replace

    def full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(UserError, match="No space left") as info:
        with config.atomic_dir(target, replace=True) as tmp:
            (tmp / "weights").write_text("v2")
    assert str(target) in str(info.value)
    with pytest.raises(UserError, match="No space left"):
        config.write_text_atomic(tmp_path / "table.csv", "a,b\n")
    monkeypatch.setattr(os, "replace", real)
    assert (target / "weights").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_failed_swap_keeps_the_previous_result(tmp_path, monkeypatch):
    target = tmp_path / "run"
    with config.atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v1")
    real = os.replace

    def new_one_fails(src, dst):          # the old folder moves aside, the new one cannot move in
        if ".tmp-" in str(src):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", new_one_fails)
    with pytest.raises(UserError, match="No space left"):
        with config.atomic_dir(target, replace=True) as tmp:
            (tmp / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]

    def nothing_moves_back(src, dst):     # not even the old one: it is kept aside, and the message says where
        if ".tmp-" in str(src) or ".old-" in str(src):
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", nothing_moves_back)
    with pytest.raises(UserError, match="is kept at") as info:
        with config.atomic_dir(target, replace=True) as tmp:
            (tmp / "weights").write_text("v3")
    kept = Path(str(info.value).rsplit("kept at ", 1)[1])
    assert (kept / "weights").read_text() == "v1"
