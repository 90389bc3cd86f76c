import json

import pytest

from xlprune_lib.config import PROFILES, UserError, atomic_dir, cache_key, get_profile, write_json_atomic


def test_profiles_match_design():
    s, t, b, m = PROFILES["smoke"], PROFILES["tiny"], PROFILES["base"], PROFILES["minilm"]
    assert (s.n_layer, s.d_model) == (2, 64)
    assert (m.n_layer, m.n_head, m.d_model, m.d_inner, m.vocab_size, m.warm_start) == (6, 12, 384, 1536, 30522,
                                                                                        "minilm")
    assert (t.n_layer, t.n_head, t.d_model, t.d_inner, t.vocab_size) == (6, 8, 256, 1024, 8000)
    assert b.hub_model == "xlnet-base-cased" and b.task == "sst2"
    for p in PROFILES.values():
        assert p.d_model % p.n_head == 0 and p.plm_block % 2 == 0


def test_unknown_profile_lists_valid_names():
    with pytest.raises(UserError, match="smoke, tiny, minilm, base"):
        get_profile("huge")


def test_cache_key_is_stable_and_sensitive():
    a = cache_key({"x": 1, "y": [1, 2]})
    assert a == cache_key({"y": [1, 2], "x": 1})
    assert a != cache_key({"x": 2, "y": [1, 2]})


def test_atomic_dir_keeps_old_result_when_write_fails(tmp_path):
    target = tmp_path / "run"
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target, replace=True) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("killed mid-write")
    assert (target / "weights").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary left behind
    with pytest.raises(UserError, match="not empty"):   # replacing is the caller's explicit choice
        with atomic_dir(target) as tmp:
            (tmp / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v1"
    with atomic_dir(target, replace=True) as tmp:
        (tmp / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2"


def test_write_json_atomic(tmp_path):
    path = tmp_path / "a" / "m.json"
    write_json_atomic(path, {"b": 1})
    assert json.loads(path.read_text()) == {"b": 1}
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object.__new__(type("X", (), {"__str__": None}))})
    assert json.loads(path.read_text()) == {"b": 1}
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]


def test_atomic_file_replaces_only_on_success(tmp_path):
    """``config.atomic_file`` (all single-file writes: text, JSON, ONNX): the old file survives a failed block,
    a successful one replaces it in one rename, no temporary file is left, and a folder is refused."""
    from xlprune_lib.config import atomic_file, write_text_atomic

    target = tmp_path / "sub" / "model.onnx"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_file(target, suffix=".onnx") as tmp:
            tmp.write_text("half")
            raise RuntimeError("export failed")
    assert target.read_text() == "old"
    with atomic_file(target, suffix=".onnx") as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".onnx"
        tmp.write_text("new")
    assert target.read_text() == "new" and sorted(p.name for p in target.parent.iterdir()) == ["model.onnx"]
    with pytest.raises(UserError, match="is a folder, not a file"):
        with atomic_file(tmp_path / "sub"):
            pass
    with pytest.raises(FileNotFoundError):                  # the block's own errors pass through unchanged
        with atomic_file(target):
            (tmp_path / "missing" / "x").read_text()
    assert target.read_text() == "new"
