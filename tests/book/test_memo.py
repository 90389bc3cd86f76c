"""A chapter's inline measurements (``book/memo.py``): computed once, then read back, keyed by the kind, the grid,
what the model folder holds (not its path) and the pruning code's version."""
import json
import shutil

import pytest

from xlprune_lib.book import memo


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("XLPRUNE_CACHE", str(folder))
    return folder


@pytest.fixture
def model_dir(tmp_path):
    """A stand-in model folder: its key is what its files hold, so any bytes do."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights-v1")
    (folder / "config.json").write_text('{"n_layer": 2}')
    (folder / "metrics.json").write_text('{"config_key": "a"}')
    return folder


class Counter:
    """A compute function that counts its calls and returns a new value each time."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return {"rows": [self.calls, 0.5], "call": self.calls}


def test_the_same_request_returns_the_stored_value_without_computing(cache, model_dir):
    compute = Counter()
    first = memo.measured("demo", compute, model_dir, profile="smoke", sparsities=[0.5, 0.9])
    assert first == {"rows": [1, 0.5], "call": 1} and compute.calls == 1
    again = memo.measured("demo", compute, model_dir, profile="smoke", sparsities=[0.5, 0.9])
    assert again == first and compute.calls == 1
    # one file in <cache>/memo, named by the kind, holding the request and the result
    (entry,) = (cache / "memo").glob("*.json")
    assert entry.name.startswith("demo-") and entry.suffix == ".json"
    stored = json.loads(entry.read_text())
    assert stored["kind"] == "demo" and stored["result"] == first
    assert stored["config"]["profile"] == "smoke" and stored["config"]["prune_version"] == memo.PRUNE_VERSION


def test_a_stored_value_is_returned_even_when_compute_would_fail(cache, model_dir):
    memo.measured("demo", lambda: [1, 2, 3], model_dir, seed=0)

    def forbidden():
        raise AssertionError("computed again")

    assert memo.measured("demo", forbidden, model_dir, seed=0) == [1, 2, 3]
    with pytest.raises(AssertionError, match="computed again"):      # another seed is another measurement
        memo.measured("demo", forbidden, model_dir, seed=1)


def test_kind_and_every_grid_setting_are_in_the_key(cache, model_dir):
    compute = Counter()
    memo.measured("demo", compute, model_dir, seed=0, sparsities=[0.5])
    memo.measured("other", compute, model_dir, seed=0, sparsities=[0.5])
    memo.measured("demo", compute, model_dir, seed=0, sparsities=[0.5, 0.9])
    memo.measured("demo", compute, model_dir, seed=0)
    assert compute.calls == 4
    assert len(list((cache / "memo").glob("*.json"))) == 4
    memo.measured("demo", compute, model_dir, sparsities=[0.5], seed=0)         # keyword order does not matter
    assert compute.calls == 4


def test_the_model_enters_by_content_not_by_path(cache, model_dir, tmp_path):
    compute = Counter()
    assert memo.measured("demo", compute, model_dir, grid=[0.5])["call"] == 1
    copy = shutil.copytree(model_dir, tmp_path / "elsewhere")
    assert memo.measured("demo", compute, copy, grid=[0.5])["call"] == 1       # same files, other path
    (copy / "metrics.json").write_text('{"config_key": "another label"}')     # a record of it, not content
    assert memo.measured("demo", compute, copy, grid=[0.5])["call"] == 1
    (copy / "model.safetensors").write_bytes(b"retrained weights")           # new weights in place
    assert memo.measured("demo", compute, copy, grid=[0.5])["call"] == 2
    assert memo.measured("demo", compute, model_dir, grid=[0.5])["call"] == 1   # the original's entry stays
    assert compute.calls == 2


def test_without_a_model_folder_the_grid_alone_is_the_key(cache, model_dir):
    compute = Counter()
    assert memo.measured("demo", compute, None, task="sst2")["call"] == 1
    assert memo.measured("demo", compute, task="sst2")["call"] == 1
    assert memo.measured("demo", compute, model_dir, task="sst2")["call"] == 2  # with a model: another key
    assert compute.calls == 2


def test_a_new_pruning_code_version_measures_again(cache, model_dir, monkeypatch):
    compute = Counter()
    memo.measured("demo", compute, model_dir, seed=0)
    monkeypatch.setattr(memo, "PRUNE_VERSION", memo.PRUNE_VERSION + 1)
    assert memo.measured("demo", compute, model_dir, seed=0)["call"] == 2
    monkeypatch.undo()
    monkeypatch.setenv("XLPRUNE_CACHE", str(cache))
    assert memo.measured("demo", compute, model_dir, seed=0)["call"] == 1      # the old entry is still there


def test_results_come_back_as_json(cache):
    """The first call already returns what a later one reads: tuples as lists, tensors and NumPy as numbers."""
    import numpy as np
    import torch

    def compute():
        return {"pair": (1, 2), "tensor": torch.tensor([0.5, 0.25]), "scalar": np.float64(0.75)}

    fresh = memo.measured("demo-json", compute, grid=1)
    assert fresh == {"pair": [1, 2], "tensor": [0.5, 0.25], "scalar": 0.75}
    assert memo.measured("demo-json", compute, grid=1) == fresh
    assert type(fresh["scalar"]) is float


def test_a_missing_model_folder_is_a_user_error(cache, tmp_path):
    from xlprune_lib.config import UserError

    with pytest.raises(UserError, match="cannot read"):
        memo.measured("demo", Counter(), tmp_path / "no-such-folder", seed=0)
