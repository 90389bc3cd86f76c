"""The `base` profile's success path on a CPU, through stand-ins for `xlnet-base-cased` and GLUE SST-2 (issue 32).

The GPU book job is the only other place the `base` profile runs. Here a small random XLNet LM-head checkpoint
with a cased SentencePiece tokenizer trained on the corpus stands in for `xlnet-base-cased`, and a few hundred
corpus snippets in GLUE's columns (`sentence`, `label`, `idx`; test labels -1) stand in for `nyu-mll/glue`
`sst2`. Both are placed in a Hugging Face cache the way an earlier online run leaves them, and every command
runs with `HF_HUB_OFFLINE=1`: the library's code path is the real one, only the files differ. The profile
itself is not changed: its 3 epochs of batch 32 are seconds on this little data and model.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xlprune_lib.config import get_profile, repo_root

COMMIT = "ceaa69c7bc5e512b5007106a7ccbb7daf24b2c79"   # a snapshot id of xlnet-base-cased (any 40 hex digits do)
SIZES = {"train": 300, "validation": 60, "test": 40}  # the stand-in's splits; GLUE's test labels are -1
SPLIT_FILES = {split: f"sst2/{split}-00000-of-00001.parquet" for split in SIZES}
GLUE_CARD = """---
configs:
- config_name: sst2
  data_files:
""" + "".join(f"  - split: {s}\n    path: sst2/{s}-*\n" for s in SIZES) + """dataset_info:
- config_name: sst2
  features:
  - name: sentence
    dtype: string
  - name: label
    dtype:
      class_label:
        names:
          '0': negative
          '1': positive
  - name: idx
    dtype: int32
---
"""


def _standin_rows(rows) -> dict[str, list[dict]]:
    """Corpus snippets in GLUE SST-2's columns, balanced, by-movie splits; the test split's labels are -1."""
    from xlprune_lib.train.data import LABELS, movie_split

    by = {(s, lab): [] for s in SIZES for lab in LABELS.values()}
    for r in rows:
        if r["category"] in LABELS:
            by[movie_split(r["movie_name"]), LABELS[r["category"]]].append(r["text"])
    out = {}
    for split, n in SIZES.items():
        texts = [t for pair in zip(by[split, 0], by[split, 1]) for t in pair][:n]
        out[split] = [{"sentence": t, "label": -1 if split == "test" else i % 2, "idx": i}
                      for i, t in enumerate(texts)]
    return out


@pytest.fixture(scope="module")
def hub_home(tmp_path_factory, rows) -> Path:
    """``HF_HOME`` holding `xlnet-base-cased` and `nyu-mll/glue` `sst2` stand-ins, as an online run caches them.

    Model: ``hub/models--xlnet-base-cased/snapshots/<commit>/`` with the files the hub repository serves to
    `transformers` (``config.json`` of an ``XLNetLMHeadModel``, weights, ``spiece.model``, ``tokenizer.json``;
    no ``tokenizer_config.json``) and ``refs/main``. Dataset: the parquet files laid out like the hub
    repository (``glue/README.md`` + ``glue/sst2/*.parquet``), prepared by `datasets` into
    ``datasets/nyu-mll___glue/sst2/0.0.0/<hash>/``, where `datasets` looks in offline mode.
    """
    import datasets
    from datasets import ClassLabel, Dataset, Features, Value
    from transformers import XLNetConfig, XLNetLMHeadModel

    from xlprune_lib.train.data import train_tokenizer

    root = tmp_path_factory.mktemp("hf-standin")
    home = root / "hf"
    tok_dir = root / "tokenizer"
    tok = train_tokenizer([r["text"] for r in rows[:3000]], 1000, tok_dir)   # cased: nothing lowercases

    repo = home / "hub" / "models--xlnet-base-cased"
    snap = repo / "snapshots" / COMMIT
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    # the published config's fields, at a small shape
    config = XLNetConfig(vocab_size=len(tok), d_model=64, n_layer=2, n_head=4, d_inner=256, ff_activation="gelu",
                         mem_len=None, reuse_len=None, bi_data=False, clamp_len=-1, same_length=False,
                         pad_token_id=5, bos_token_id=1, eos_token_id=2, architectures=["XLNetLMHeadModel"],
                         task_specific_params={"text-generation": {"do_sample": True, "max_length": 250}})
    torch.manual_seed(0)
    XLNetLMHeadModel(config).save_pretrained(str(snap))
    (snap / "generation_config.json").unlink(missing_ok=True)
    for name in ("spiece.model", "tokenizer.json"):
        shutil.copy(tok_dir / name, snap / name)

    glue = root / "nyu-mll" / "glue"
    (glue / "sst2").mkdir(parents=True)
    (glue / "README.md").write_text(GLUE_CARD)
    features = Features({"sentence": Value("string"), "label": ClassLabel(names=["negative", "positive"]),
                         "idx": Value("int32")})
    for split, records in _standin_rows(rows).items():
        Dataset.from_list(records, features=features).to_parquet(str(glue / SPLIT_FILES[split]))
    builder = datasets.load_dataset_builder(str(glue), "sst2", cache_dir=str(root / "prepare"))
    builder.download_and_prepare(
        output_dir=str(home / "datasets" / "nyu-mll___glue" / "sst2" / "0.0.0" / builder.hash))
    return home


def offline_env(home: Path) -> dict:
    """The environment of a user without network whose Hugging Face cache is ``home``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_CACHE", "HF_DATASETS_CACHE", "TRANSFORMERS_CACHE", "HUGGINGFACE_HUB_CACHE")}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_ENDPOINT="http://127.0.0.1:9",   # nothing listens on the discard port: no request can succeed
               PYTHONPATH=str(repo_root()))
    return env


def xlprune(env, *args, timeout=300) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "xlprune_lib", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=repo_root(), timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return done


def precision_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "bf16" in line]


def metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


@pytest.fixture(scope="module")
def base_runs(hub_home, tmp_path_factory) -> dict:
    """``xlprune finetune --profile base``, then ``prune`` (heads; weights with recovery fine-tuning) on it,
    each one process, offline: ``{"ft", "heads", "weights": folders, "stderr": {command: text}}``."""
    env, root = offline_env(hub_home), tmp_path_factory.mktemp("base-runs")
    out = {"ft": root / "ft", "heads": root / "heads", "weights": root / "weights", "stderr": {}, "env": env}
    out["stderr"]["finetune"] = xlprune(env, "finetune", "--profile", "base", "--out", out["ft"], "--quiet").stderr
    out["stderr"]["heads"] = xlprune(env, "prune", "--model", out["ft"], "--method", "magnitude", "--granularity",
                                     "head", "--sparsity", 0.5, "--out", out["heads"], "--quiet").stderr
    out["stderr"]["weights"] = xlprune(env, "prune", "--model", out["ft"], "--method", "magnitude",
                                       "--granularity", "weight", "--sparsity", 0.5, "--finetune-epochs", 1,
                                       "--out", out["weights"], "--quiet").stderr
    return out


@pytest.mark.slow
def test_base_finetune_starts_from_the_cached_hub_checkpoint(base_runs):
    """The classifier is the stand-in's LM-head checkpoint with a new head (its shape, not the profile's 12 x 768),
    tokenized by its cased SentencePiece model, trained on GLUE's columns with GLUE's validation split as test."""
    from transformers import AutoConfig, AutoTokenizer

    m = metrics(base_runs["ft"])
    assert (m["profile"], m["task"], m["init"]) == ("base", "sst2", "xlnet-base-cased")
    # 5% of train held out as validation; the test split is GLUE's validation (60), never its -1 test (40)
    assert m["sizes"] == {"train": 285, "validation": 15, "test": 60}
    assert 0 < m["majority_baseline"] < 1 and 0 <= m["test_accuracy"] <= 1
    config = AutoConfig.from_pretrained(base_runs["ft"])
    assert config.architectures == ["XLNetForSequenceClassification"] and (config.n_layer, config.d_model) == (2, 64)
    assert config.id2label == {0: "negative", 1: "positive"} and config.use_mems_eval is False
    tok = AutoTokenizer.from_pretrained(base_runs["ft"])
    assert type(tok).__name__.startswith("XLNetTokenizer") and len(tok) == config.vocab_size
    assert tok.tokenize("Great") != tok.tokenize("great")                    # cased
    assert tok.convert_ids_to_tokens(tok("A fine film.")["input_ids"][-2:]) == ["<sep>", "<cls>"]


@pytest.mark.slow
def test_base_bf16_on_a_cpu_is_recorded_and_said(base_runs):
    """bf16 asked; on a CPU fp32 delivered: ``precision`` in the records of finetune and prune (another file),
    and one line on stderr for each command that trains (the head run trains nothing: no line). On a GPU with
    bf16 the same test expects bf16 and no line."""
    from xlprune_lib.train.runs import precision

    delivered = precision(get_profile("base"))     # what this machine gives
    assert torch.cuda.is_available() or delivered == "fp32"
    for run in ("ft", "heads", "weights"):
        record = metrics(base_runs[run])["precision"]
        assert (record["requested"], record["delivered"]) == ("bf16", delivered), run
        assert (record["note"] is None) == (delivered == "bf16")
        if record["note"]:
            assert "bf16" in record["note"] and delivered in record["note"]
    for command, lines in (("finetune", 1), ("weights", 1), ("heads", 0)):
        found = precision_lines(base_runs["stderr"][command])
        assert len(found) == (lines if delivered != "bf16" else 0), (command, base_runs["stderr"][command][-2000:])
        assert all(line.startswith("xlprune: warning:") and delivered in line for line in found)


@pytest.mark.slow
def test_base_pruned_folders_report_export_and_card(base_runs, tmp_path):
    """``report`` and ``export`` on the base runs; the model card describes the model and GLUE's splits."""
    env = base_runs["env"]
    heads, weights = base_runs["heads"], base_runs["weights"]
    assert metrics(heads)["delivery"]["met"] and metrics(weights)["delivery"]["met"]
    report = json.loads(xlprune(env, "report", "--model", heads, "--json").stdout)
    assert report["architecture"] == "PrunedXLNetForSequenceClassification"
    assert [layer["heads"] for layer in report["layers"]] == [2, 2]
    onnx = tmp_path / "weights.onnx"
    xlprune(env, "export", "--model", weights, "--out", onnx, "--quantize", "int8")
    record = json.loads(onnx.with_name(onnx.name + ".json").read_text())
    assert set(record["test"]) == {"torch", "onnx_fp32", "onnx_int8"}
    assert record["verification"]["texts"] == 60                   # GLUE's validation split, labelled
    card = (heads / "README.md").read_text()
    assert "base_model: xlnet-base-cased" in card and "A 2-layer XLNet" in card
    assert "by-movie" not in card and "GLUE's validation split as the test split" in card


@pytest.mark.slow
def test_base_chapter_1_through_papermill(hub_home, monkeypatch, tmp_path):
    """Chapter 1 (the one chapter that trains nothing on `base`) executes with ``profile=base`` offline; its
    comparison table holds only rows of SST-2 (no from-scratch row of the offline corpus beside them)."""
    from huggingface_hub import constants

    from xlprune_lib.book.build import execute

    for key, value in offline_env(hub_home).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)   # this process imported huggingface_hub already
    [page] = execute("base", out_dir=tmp_path / "chapters", only=["01"], output_dir=tmp_path / "figures",
                     log=lambda _: None)
    nb = json.loads(page.read_text())
    text = "\n".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                     for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []))
    assert "starting from the published xlnet-base-cased" in text
    import pandas as pd

    table = pd.read_csv(tmp_path / "figures" / "tables" / "01_models.csv")
    assert sorted(table.model) == ["majority", "tfidf-logreg"] and set(table.profile) == {"base"}
    assert "plm-scratch" not in text and "reference file" not in text
