"""Bring your own XLNet and data: folders saved by plain ``transformers`` and ``--data`` folders (csv, jsonl, parquet),
through ``prune``, ``iterate``, ``export`` and ``finetune``; every bad file is one line, and the data's content keys
every cached result."""
import json
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from test_cli import cli, main_error

from xlprune_lib.config import UserError, get_profile
from xlprune_lib.loops.iterative import iterate_config
from xlprune_lib.loops.oneshot import prune_config, prune_run
from xlprune_lib.loops.specs import IterSpec, PruneSpec
from xlprune_lib.train import runs
from xlprune_lib.train.data import VALIDATION_SHARE, UserData
from xlprune_lib.train.finetune import finetune_config

PRUNE = ("--method", "taylor", "--granularity", "head", "--sparsity", "0.5", "--quiet")


def write_split(folder: Path, split: str, rows: list[dict], ext: str = ".csv") -> Path:
    """One split file as a user would write it (pandas through ``datasets``: csv, jsonl, parquet)."""
    from datasets import Dataset

    folder.mkdir(parents=True, exist_ok=True)
    path, ds = folder / f"{split}{ext}", Dataset.from_list(rows)
    {".csv": lambda: ds.to_csv(path, index=False), ".jsonl": lambda: ds.to_json(path, lines=True),
     ".parquet": lambda: ds.to_parquet(path)}[ext]()
    return path


def write_data(folder: Path, labelled: list[dict], ext=".csv", names=False, validation=True,
               sizes=(200, 50, 50)) -> Path:
    """train / validation / test files from the real corpus; labels 0/1 or (``names``) negative/positive."""
    parts, start = {}, 0
    for split, n in zip(("train", "validation", "test"), sizes):
        parts[split], start = labelled[start:start + n], start + n
    for split, part in parts.items():
        if split != "validation" or validation:
            write_split(folder, split, [{"text": r["text"], "label": ("negative", "positive")[r["label"]]
                                         if names else r["label"]} for r in part], ext)
    return folder


@pytest.fixture(scope="module")
def labelled(rows):
    """A few hundred labelled snippets of the real corpus, both classes in every slice."""
    return [{"text": r["text"], "label": int(r["category"] == "fresh")} for r in rows
            if r["category"] in ("fresh", "rotten")][:400]


def _foreign(folder: Path, tokenizer, id2label=None, spiece: Path | None = None) -> Path:
    """A tiny random classifier and its tokenizer, saved by plain ``transformers`` (no xlprune files). ``spiece``:
    the tokenizer is that SentencePiece model alone (``spiece.model``, no ``tokenizer.json``), as published
    XLNet folders hold it."""
    from transformers import AutoTokenizer, XLNetForSequenceClassification

    torch.manual_seed(0)
    extra = {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}} if id2label else {}
    model = XLNetForSequenceClassification(tiny_config(num_labels=2, vocab_size=len(tokenizer), **extra))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if spiece is not None:
        (folder / "spiece.model").write_bytes(spiece.read_bytes())
        (folder / "tokenizer.json").unlink()
        assert len(AutoTokenizer.from_pretrained(folder)) == len(tokenizer)   # read from spiece.model
    return folder


def _fast_tokenizer(texts):
    """A fast tokenizer (``tokenizer.json`` only, no SentencePiece model) with XLNet's conventions."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<unk>", "<s>", "</s>", "<cls>", "<sep>", "<pad>", "<mask>"]      # XLNet's ids 0..6
    tk = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=400, special_tokens=special))
    tk.post_processor = processors.TemplateProcessing(single="$A <sep> <cls>", special_tokens=[("<sep>", 4),
                                                                                               ("<cls>", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", cls_token="<cls>",
                                   sep_token="<sep>", mask_token="<mask>", padding_side="left")


@pytest.fixture(scope="module")
def models(small_tokenizer, labelled, tmp_path_factory):
    root = tmp_path_factory.mktemp("foreign")
    fast = _fast_tokenizer([r["text"] for r in labelled])
    spiece = Path(small_tokenizer.name_or_path) / "spiece.model"
    return {"spm": _foreign(root / "spm", small_tokenizer, spiece=spiece), "fast": _foreign(root / "fast", fast),
            "named": _foreign(root / "named", small_tokenizer, {0: "positive", 1: "negative"})}


@pytest.fixture(scope="module")
def csvs(labelled, tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("data") / "csv", labelled)


# ---------------------------------------------------------------- the three commands on a foreign folder

@pytest.mark.parametrize("kind", ["spm", "fast"])
def test_prune_a_plain_transformers_folder(models, csvs, kind, tmp_path, capsys):
    folder = models[kind]
    assert not (folder / "metrics.json").exists()
    assert (folder / "spiece.model").exists() == (kind == "spm") and (folder / "tokenizer.json").exists() == (kind == "fast")
    out = tmp_path / "pruned"
    proc = cli(capsys, "prune", "--model", str(folder), "--data", str(csvs), *PRUNE, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["profile"] == runs.FOREIGN_PROFILE and metrics["source_profile"] is None
    data = metrics["data"]
    assert data["source"] == str(csvs) and data["kind"] == "folder" and len(data["digest"]) == 64
    assert data["sizes"] == {"train": 200, "validation": 50, "test": 50} and data["validation_from_train"] is None
    assert metrics["labels"] == ["LABEL_0", "LABEL_1"] and metrics["unit_sparsity"] == 0.5
    card = (out / "README.md").read_text()
    assert str(csvs) in card and "made outside xlprune" in card and "(n = 50)" in card
    assert "base_model" not in card      # the foreign model's base is unknown: base's hub model is not claimed


def test_a_foreign_folder_needs_data(models, tmp_path, capsys):
    for command, extra in (("prune", PRUNE), ("iterate", ("--method", "magnitude", "--granularity", "head"))):
        line = main_error(capsys, command, "--model", str(models["spm"]), *extra, "--out", str(tmp_path / "o"))
        assert "give --data" in line and "no metrics.json" in line
    line = main_error(capsys, "export", "--model", str(models["spm"]), "--out", str(tmp_path / "m.onnx"))
    assert "give --data" in line
    # --profile gives training settings, not data: still required
    assert "give --data" in main_error(capsys, "prune", "--model", str(models["spm"]), "--profile", "smoke", *PRUNE,
                                       "--out", str(tmp_path / "o"))
    assert not (tmp_path / "o").exists() and not (tmp_path / "m.onnx").exists()


def test_iterate_a_plain_transformers_folder(models, csvs, tmp_path, capsys):
    out = tmp_path / "it"
    proc = cli(capsys, "iterate", "--model", str(models["fast"]), "--data", str(csvs), "--method", "taylor",
               "--granularity", "head", "--schedule", "constant", "--step", "0.5", "--target", "0.5",
               "--requirement", "0", "--round-steps", "2", "--score-batches", "1", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_round"] == 1 and summary["data"]["digest"] == UserData(csvs).digest
    assert summary["data"]["sizes"]["test"] == 50
    card = (Path(summary["final_model"]) / "README.md").read_text()
    assert str(csvs) in card and "made outside xlprune" in card
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["data_digest"] == UserData(csvs).digest


def _accuracy_by_hand(folder: Path, test_file: Path) -> float:
    """Test accuracy with plain ``transformers``, one unpadded example at a time (no xlprune code)."""
    import pandas as pd
    from transformers import AutoTokenizer, XLNetForSequenceClassification

    tok, model = AutoTokenizer.from_pretrained(folder), XLNetForSequenceClassification.from_pretrained(folder).eval()
    frame = pd.read_csv(test_file)
    with torch.inference_mode():
        pred = [model(**tok(t, return_tensors="pt")).logits.argmax(-1).item() for t in frame["text"]]
    return float((frame["label"].to_numpy() == pred).mean())


def test_export_measures_the_given_test_split(models, csvs, labelled, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    proc = cli(capsys, "export", "--model", str(models["spm"]), "--data", str(csvs), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    record = json.loads(Path(f"{out}.json").read_text())
    assert record["data"]["sizes"]["test"] == 50 and record["data"]["digest"] == UserData(csvs).digest
    by_hand = _accuracy_by_hand(models["spm"], csvs / "test.csv")
    assert abs(record["test"]["torch"]["test_accuracy"] - by_hand) <= 1 / 50 + 1e-9   # padding may flip a tie
    # another test file: another measurement (the data's test split, not the profile's)
    other = write_data(tmp_path / "other", labelled[100:], sizes=(200, 0, 37), validation=False)
    out2 = tmp_path / "m2.onnx"
    assert cli(capsys, "export", "--model", str(models["spm"]), "--data", str(other), "--out", str(out2)).returncode == 0
    assert json.loads(Path(f"{out2}.json").read_text())["data"]["sizes"]["test"] == 37


# ---------------------------------------------------------------- formats, names, carved validation

@pytest.mark.parametrize("ext", [".jsonl", ".parquet"])
def test_jsonl_and_parquet_with_label_names_and_no_validation(labelled, ext, tmp_path):
    folder = write_data(tmp_path / "d", labelled, ext=ext, names=True, validation=False)
    splits, record = UserData(folder).load(seed=0, label_names=["positive", "negative"])   # the model's order
    assert record["validation_from_train"] == VALIDATION_SHARE and record["labels"] == ["positive", "negative"]
    assert len(splits["validation"]) == 20 and len(splits["train"]) == 180 and len(splits["test"]) == 50
    # ids follow the model's names, not the data's order: the first test row's name maps through the model
    first = ("negative", "positive")[labelled[250]["label"]]
    assert splits["test"][0]["label"] == ["positive", "negative"].index(first)
    assert set(splits["train"]["text"]).isdisjoint(splits["validation"]["text"])
    again, _ = UserData(folder).load(seed=0, label_names=["positive", "negative"])
    other, _ = UserData(folder).load(seed=1, label_names=["positive", "negative"])
    assert again["validation"]["text"] == splits["validation"]["text"]          # seeded
    assert other["validation"]["text"] != splits["validation"]["text"]


def test_a_relative_folder_is_recorded_absolute_and_keyed_by_content(labelled, tmp_path, monkeypatch):
    folder = write_data(tmp_path / "d", labelled)
    monkeypatch.chdir(tmp_path)
    data = UserData("d")
    assert data.source == str(folder.resolve())           # a later run from elsewhere finds it again
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in folder.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    assert UserData(copy).key() == data.key()             # the same files elsewhere: the same data
    (copy / "test.csv").rename(copy / "test.jsonl.bak")
    with pytest.raises(UserError, match="unknown extension"):
        UserData(copy)


def test_prune_with_named_labels_records_the_carved_validation(models, labelled, tmp_path, capsys):
    folder = write_data(tmp_path / "d", labelled, ext=".jsonl", names=True, validation=False)
    out = tmp_path / "p"
    proc = cli(capsys, "prune", "--model", str(models["named"]), "--data", str(folder), *PRUNE, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["validation_from_train"] == VALIDATION_SHARE
    assert metrics["data"]["sizes"] == {"train": 180, "validation": 20, "test": 50}
    assert "10% of train" in (out / "README.md").read_text()


def test_finetune_on_own_data_then_prune_uses_it(models, labelled, tmp_path, capsys):
    folder = write_data(tmp_path / "d", labelled, names=True, sizes=(120, 30, 30))
    ft = tmp_path / "ft"
    proc = cli(capsys, "finetune", "--profile", "smoke", "--init", str(models["spm"]), "--data", str(folder),
               "--out", str(ft), "--quiet")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((ft / "metrics.json").read_text())
    assert metrics["data"]["sizes"] == {"train": 120, "validation": 30, "test": 30}
    assert json.loads((ft / "config.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}
    # the fine-tuned folder has its own data: prune uses it without --data
    out = tmp_path / "p"
    assert cli(capsys, "prune", "--model", str(ft), *PRUNE, "--out", str(out)).returncode == 0
    assert json.loads((out / "metrics.json").read_text())["data"]["digest"] == metrics["data"]["digest"]


# ---------------------------------------------------------------- the data's content is in every key

def test_editing_a_file_is_a_new_run(models, labelled, tmp_path):
    folder = write_data(tmp_path / "d", labelled)
    spec = PruneSpec("magnitude", "head", 0.5)
    first = prune_run(models["spm"], spec, None, seed=0, progress=False, data=str(folder))
    assert prune_run(models["spm"], spec, None, seed=0, progress=False, data=str(folder)) == first   # reused
    # the test file only (no training example changes): a key of train alone would reuse the stale result
    text = (folder / "test.csv").read_text().splitlines()
    (folder / "test.csv").write_text("\n".join(text[:-5]) + "\n")
    second = prune_run(models["spm"], spec, None, seed=0, progress=False, data=str(folder))
    assert second != first
    assert json.loads((second / "metrics.json").read_text())["data"]["sizes"]["test"] == 45
    assert json.loads((first / "metrics.json").read_text())["data"]["sizes"]["test"] == 50


def test_every_config_and_the_source_memo_take_the_digest(labelled, tmp_path):
    a, b = write_data(tmp_path / "a", labelled), write_data(tmp_path / "b", labelled)
    (b / "validation.csv").write_text((b / "validation.csv").read_text().replace(",1\n", ",0\n", 1))
    da, db = UserData(a), UserData(b)
    assert da.digest != db.digest and UserData(a).digest == da.digest
    smoke = get_profile("smoke")
    pairs = [(prune_config(PruneSpec("magnitude", "head", 0.5), "s", smoke, 0, d),
              iterate_config(IterSpec("magnitude", "head"), "s", smoke, 0, d),
              finetune_config(smoke, 0, None, d)) for d in (da, db)]
    for x, y in zip(*pairs):
        assert runs.cache_key(x) != runs.cache_key(y)
    calls = []

    def measure():
        calls.append(1)
        return {"validation_accuracy": 0.5}

    for key in (da.key(), da.key(), db.key()):
        runs.source_accuracy(tmp_path / "m", "cached-source", smoke, 0, measure, data_key=key)
    assert len(calls) == 2     # the same data reuses the measurement, other data measures again


# ---------------------------------------------------------------- bad files: one line, exit 2, nothing written

def _bad(folder: Path, labelled, case: str) -> Path:
    rows = [{"text": r["text"], "label": r["label"]} for r in labelled[:60]]
    test = rows[40:]
    if case == "missing column":
        write_split(folder, "train", [{"review": r["text"], "label": r["label"]} for r in rows[:40]])
    elif case == "empty split":
        write_split(folder, "train", rows[:40])
        (folder / "validation.csv").write_text("text,label\n")
    elif case == "one class":
        write_split(folder, "train", [{"text": r["text"], "label": 1} for r in rows[:40]])
    elif case == "nan text":
        write_split(folder, "train", rows[:40])
        (folder / "train.csv").write_text((folder / "train.csv").read_text() + ",1\n")
    elif case == "blank text":
        write_split(folder, "train", rows[:39] + [{"text": "   ", "label": 0}], ".jsonl")
    elif case == "label out of range":
        write_split(folder, "train", rows[:39] + [{"text": "a film", "label": 2}])
    elif case == "names disagree":
        write_split(folder, "train", [{"text": r["text"], "label": ("bad", "good")[r["label"]]} for r in rows[:40]])
        test = [{"text": r["text"], "label": ("bad", "good")[r["label"]]} for r in test]
    elif case == "unknown extension":
        write_split(folder, "train", rows[:40])
        (folder / "validation.tsv").write_text("text\tlabel\n")
    elif case == "two files":
        write_split(folder, "train", rows[:40])
        write_split(folder, "train", rows[:40], ".jsonl")
    elif case == "no test":
        write_split(folder, "train", rows[:40])
        return folder
    elif case == "no train":
        pass
    write_split(folder, "test", test)
    return folder


BAD = {"missing column": "no column 'text'", "empty split": "validation split is empty",
       "one class": "same label", "nan text": "has no text", "blank text": "has no text",
       "label out of range": "has label 2", "names disagree": "not one of the model's labels",
       "unknown extension": "unknown extension", "two files": "two files for the train split",
       "no test": "no test file", "no train": "no train file"}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_data_is_one_line(models, labelled, case, tmp_path, capsys):
    folder = _bad(tmp_path / "d", labelled, case)
    folder.mkdir(exist_ok=True)
    for command, extra in (("prune", PRUNE), ("iterate", ("--method", "magnitude", "--granularity", "head"))):
        out = tmp_path / f"out-{command}"
        line = main_error(capsys, command, "--model", str(models["spm"]), "--data", str(folder), *extra,
                          "--out", str(out))
        assert BAD[case] in line, line
        assert not out.exists()      # iterate too: the data is checked before its folder is claimed


def test_bad_data_for_finetune_and_export(models, labelled, tmp_path, capsys):
    folder = _bad(tmp_path / "d", labelled, "one class")
    assert "same label" in main_error(capsys, "finetune", "--profile", "smoke", "--init", str(models["spm"]),
                                      "--data", str(folder), "--out", str(tmp_path / "ft"))
    named = _bad(tmp_path / "n", labelled, "names disagree")
    assert "LABEL_0, LABEL_1" in main_error(capsys, "export", "--model", str(models["spm"]), "--data", str(named),
                                            "--out", str(tmp_path / "m.onnx"))
    assert "does not exist" in main_error(capsys, "prune", "--model", str(models["spm"]), "--data",
                                          str(tmp_path / "nowhere"), *PRUNE, "--out", str(tmp_path / "o"))
    assert not (tmp_path / "ft").exists() and not (tmp_path / "m.onnx").exists()


# ---------------------------------------------------------------- hub names

def test_hub_name_without_the_hub_fails_fast(monkeypatch, capsys, models, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    start = time.perf_counter()
    line = main_error(capsys, "prune", "--model", str(models["spm"]), "--data", "someone/reviews:plain", *PRUNE,
                      "--out", str(tmp_path / "o"))
    assert "needs the model hub" in line and "someone/reviews:plain" in line
    assert time.perf_counter() - start < 10 and not (tmp_path / "o").exists()


HUB_README = """---
configs:
- config_name: plain
  data_files:
  - split: train
    path: plain/train.csv
  - split: test
    path: plain/test.csv
---
"""


def test_hub_layout_read_through_datasets(labelled, tmp_path):
    """The hub path past ``require_hub``: a local folder laid out as the hub's (config ``plain``, GLUE's
    ``sentence`` column), read by ``datasets.load_dataset``."""
    root = tmp_path / "hub"
    rows = [{"sentence": r["text"], "label": r["label"]} for r in labelled]
    write_split(root / "plain", "train", rows[:100])
    write_split(root / "plain", "test", rows[100:130])
    (root / "README.md").write_text(HUB_README)
    data = UserData("someone/reviews:plain", source=root)
    splits, record = data.load(seed=0, label_names=["LABEL_0", "LABEL_1"])
    assert record["kind"] == "hub" and record["source"] == "someone/reviews:plain"
    assert record["sizes"] == {"train": 90, "validation": 10, "test": 30}
    assert splits["test"]["label"] == [r["label"] for r in labelled[100:130]]
    assert UserData("someone/reviews:plain", source=root).digest == data.digest
    with pytest.raises(UserError, match="cannot load dataset"):
        UserData("someone/reviews:nosuch", source=root)


# ---------------------------------------------------------------- the book's chapters on the user's data

def test_dense_study_on_own_data(labelled, tmp_path):
    """A chapter's ``data`` parameter: the dense run is fine-tuned on the user's files (their label names, their
    digest recorded) and every measurement uses their splits; without it, the profile's task."""
    from xlprune_lib.book.dense_study import DenseStudy

    folder = write_data(tmp_path / "named", labelled, names=True, sizes=(120, 30, 40))
    study = DenseStudy("smoke", 0, data=str(folder))
    metrics = json.loads((study.run_dir / "metrics.json").read_text())
    assert metrics["data"]["digest"] == UserData(folder).digest and metrics["data"]["sizes"]["test"] == 40
    assert json.loads((study.run_dir / "config.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}
    assert study.sizes == {"validation": 30, "test": 40}
    assert list(study.data["test"]["text"]) == [r["text"] for r in labelled[150:190]]
    assert study.grid["data_digest"] == UserData(folder).digest
    default = DenseStudy("smoke", 0)
    assert default.run_dir != study.run_dir and "data_digest" not in default.grid


def test_chapters_through_papermill_on_own_data(labelled, tmp_path):
    """Chapters 1 and 3 with ``data`` set run to the end on the user's files: chapter 1 describes that data and
    trains its comparison on it (no reference rows of the profile's task beside them); chapter 3's runs start
    from the classifier fine-tuned on it."""
    import pandas as pd

    from xlprune_lib.book.build import execute
    from xlprune_lib.book.dense_study import DenseStudy

    folder = write_data(tmp_path / "mine", labelled, names=True, sizes=(120, 30, 40))
    pages = execute("smoke", out_dir=tmp_path / "chapters", only=["01", "03"], output_dir=tmp_path / "figures",
                    chapter_parameters={n: {"data": str(folder)} for n in ("01", "03")}, log=lambda _: None)
    assert [p.name[:2] for p in pages] == ["01", "03"]
    text = {p.name[:2]: "\n".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                                  + "".join(o.get("data", {}).get("text/html", ""))
                                  for c in json.loads(p.read_text())["cells"] if c["cell_type"] == "code"
                                  for o in c.get("outputs", [])) for p in pages}
    assert "the comparison shows only the models trained here on it" in text["01"]
    assert "share 'negative'" in text["01"] and "120" in text["01"]       # the data summary: train has 120
    table = pd.read_csv(tmp_path / "figures" / "tables" / "01_models.csv")
    assert "reference file" not in set(table.get("source", [])) and set(table.profile) == {"smoke"}
    dense = DenseStudy("smoke", 0, data=str(folder))   # the run chapter 1 and 3 trained: cached, not retrained
    # the chapters' dense run is chapter 1's row of the profile's own start (smoke: random-init; minilm: warm-start)
    row = table[table.model == ("warm-start" if get_profile("smoke").warm_start else "random-init")].iloc[0]
    assert row.test_accuracy == pytest.approx(json.loads((dense.run_dir / "metrics.json").read_text())["test_accuracy"])
    l0 = [p for p in (Path(dense.run_dir).parent).glob("prune-smoke-*") if (p / "metrics.json").is_file()
          and json.loads((p / "metrics.json").read_text()).get("data", {}).get("digest") == dense.user.digest
          and json.loads((p / "metrics.json").read_text())["spec"]["method"] == "l0"]
    assert l0, "chapter 3's L0 runs were not made from the classifier on the user's data"
