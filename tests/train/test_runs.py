"""Cached runs (``train/runs.py``): a folder enters a key by its content, a finished run is reused and another
configuration refused, the profile and data a folder was made with, memos, and the precision a run asks for and
gets."""
import json
import shutil

import numpy as np
import pytest
import torch

from conftest import WEIGHTS, replace_weights
from xlprune_lib.config import UserError, get_profile
from xlprune_lib.train import runs


def test_precision_record_requested_and_delivered(monkeypatch):
    from xlprune_lib.train import runs

    base, smoke = get_profile("base"), get_profile("smoke")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu = runs.precision_record(base)
    assert (cpu["requested"], cpu["delivered"]) == ("bf16", "fp32") and "no CUDA GPU" in cpu["note"]
    assert runs.precision_record(smoke) == {"requested": "fp32", "delivered": "fp32", "note": None}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    old_gpu = runs.precision_record(base)
    assert old_gpu["delivered"] == "fp16" and "no bf16" in old_gpu["note"] and "fp16" in old_gpu["note"]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert runs.precision_record(base) == {"requested": "bf16", "delivered": "bf16", "note": None}


def test_precision_notice_is_one_line_once_per_process(monkeypatch, capsys, tmp_path):
    from xlprune_lib.train import runs

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runs, "_NOTED", set())
    for _ in range(3):   # scores, recovery, evaluation: one run builds several argument sets
        args = runs.training_args(get_profile("base"), tmp_path, 0, epochs=1, batch=2, lr=1e-4)
        assert not args.bf16 and not args.fp16
    runs.training_args(get_profile("smoke"), tmp_path, 0, epochs=1, batch=2, lr=1e-4)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("xlprune: warning: profile 'base' asks for bf16") and "fp32" in err[0]


def test_content_key_reads_what_changes_a_result(models):
    """Weights, config.json and tokenizer files change the key; metrics.json, the model card, hidden files
    (temporaries, locks) and sub-folders do not."""
    folder = shutil.copytree(models["old"], models["root"] / "k")
    key = runs.content_key(folder)
    (folder / "metrics.json").write_text(json.dumps({"config_key": "other"}))
    (folder / "README.md").write_text("card")
    (folder / ".k.tmp-1").write_text("temporary")
    (folder / "trainer").mkdir()
    assert runs.content_key(folder) == key
    for name in ("config.json", "tokenizer_config.json", WEIGHTS):
        changed = shutil.copytree(models["old"], models["root"] / f"k-{name}")
        with open(changed / name, "ab") as f:
            f.write(b" ")
        assert runs.content_key(changed) != key, name


def test_source_accuracy_memo_follows_the_weights(models, tmp_path, monkeypatch):
    monkeypatch.setenv("XLPRUNE_CACHE", str(tmp_path / "cache"))
    src, smoke, calls = models["labelled"], get_profile("smoke"), []

    def measure():
        calls.append(1)
        return {"validation_accuracy": len(calls) / 10}

    def accuracy():
        return runs.source_accuracy(src, runs.source_run(src, smoke)[1], smoke, 0, measure)

    assert accuracy() == accuracy() == {"validation_accuracy": 0.1} and len(calls) == 1
    replace_weights(src, models["new"])
    assert accuracy() == {"validation_accuracy": 0.2} and len(calls) == 2


def test_a_folder_without_a_key_is_measured_once_per_content(models, tmp_path, monkeypatch):
    """A folder without a config key is memoized too, by its content (it used to be measured every time)."""
    monkeypatch.setenv("XLPRUNE_CACHE", str(tmp_path / "cache"))
    src, smoke, calls = models["old"], get_profile("smoke"), []
    for _ in range(2):
        runs.source_accuracy(src, runs.source_run(src, smoke)[1], smoke, 0, lambda: calls.append(1) or {"a": 1})
    assert len(calls) == 1


def test_a_finished_run_is_reused_and_another_configuration_refused(tmp_path):
    out, calls = tmp_path / "run", []

    def compute():
        calls.append(1)
        out.mkdir()
        (out / "metrics.json").write_text(json.dumps({"config_key": "k1", "made": len(calls)}))

    assert runs.reuse_or_claim(out, "k1") is None                       # absent: claimed
    assert runs.produce_run(out, "k1", compute) == out and calls == [1]
    assert runs.produce_run(out, "k1", compute) == out and calls == [1]  # finished: not made again
    assert runs.reuse_or_claim(out, "k1") == {"config_key": "k1", "made": 1}
    before = (out / "metrics.json").read_text()
    with pytest.raises(UserError, match="already holds a different run"):
        runs.produce_run(out, "k2", compute)
    assert calls == [1] and (out / "metrics.json").read_text() == before
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        runs.reuse_or_claim(stray, "k1")
    assert [p.name for p in stray.iterdir()] == ["notes.txt"]


def test_run_keys_name_the_kind_and_the_code_version(monkeypatch):
    key = runs.run_key("finetune", {"seed": 0})
    assert key == runs.run_key("finetune", {"seed": 0}) != runs.run_key("pretrain", {"seed": 0})
    assert runs.run_key("finetune", {"seed": 1}) != key
    monkeypatch.setattr(runs, "RUNS_VERSION", runs.RUNS_VERSION + 1)   # older code's runs are not reused
    assert runs.run_key("finetune", {"seed": 0}) != key


def test_the_profile_and_data_a_folder_was_made_with(models, tmp_path):
    """A run's metrics.json, or the run.json of the iterate folder a round belongs to, names its profile; a folder
    from elsewhere has none and needs ``data``; a damaged record is an error, never "no profile"."""
    old = models["old"]
    assert runs.own_profile(old) == "smoke"
    rounds = tmp_path / "it"
    shutil.copytree(old, rounds / "round-1")
    (rounds / "round-1" / "metrics.json").unlink()
    (rounds / "rounds.jsonl").write_text("")
    (rounds / "run.json").write_text(json.dumps({"config": {"profile": "tiny"}}))
    assert runs.own_profile(rounds / "round-1") == "tiny"
    foreign = shutil.copytree(rounds / "round-1", tmp_path / "foreign")
    assert runs.own_profile(foreign) is None
    with pytest.raises(UserError, match="not made by xlprune"):
        runs.source_run(foreign)
    folder, key, profile = runs.source_run(foreign, data="some/data")
    assert folder == foreign and key == runs.content_key(old) and profile.name == runs.FOREIGN_PROFILE
    assert runs.source_run(old)[2].name == "smoke" and runs.source_run(old, get_profile("tiny"))[2].name == "tiny"
    assert runs.source_data(old) is None and runs.source_data(old, "given") == "given"
    (foreign / "metrics.json").write_text(json.dumps({"data": {"source": "/my/data"}}))
    assert runs.source_data(foreign) == "/my/data" and runs.source_data(foreign, "given") == "given"
    (foreign / "metrics.json").write_text("{not json")
    with pytest.raises(UserError, match="is damaged"):
        runs.own_profile(foreign)


def test_memo_stores_plain_json_and_recomputes_a_damaged_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("XLPRUNE_CACHE", str(tmp_path / "cache"))
    calls = []

    def compute():
        calls.append(1)
        return {"rows": np.arange(3), "mean": np.float32(0.5), "t": torch.tensor([1.0, 2.0])}

    want = {"rows": [0, 1, 2], "mean": 0.5, "t": [1.0, 2.0]}
    assert runs.memo("demo", {"grid": [0.5]}, compute) == want
    assert runs.memo("demo", {"grid": [0.5]}, compute) == want and len(calls) == 1
    assert runs.memo("demo", {"grid": [0.7]}, compute) == want and len(calls) == 2     # another config
    [path] = (tmp_path / "cache" / "memo").glob(f"demo-{runs.run_key('demo', {'grid': [0.5]})}.json")
    path.write_text("{half a fi")
    assert runs.memo("demo", {"grid": [0.5]}, compute) == want and len(calls) == 3
    assert runs.memo("none", {}, lambda: calls.append(1)) is None                       # None is a result too
    assert runs.memo("none", {}, lambda: calls.append(1)) is None and len(calls) == 4


def test_training_arguments_and_the_loss_curve(tmp_path):
    smoke = get_profile("smoke")
    args = runs.training_args(smoke, tmp_path, 3, epochs=2, batch=4, lr=1e-3, progress=False, max_steps=5)
    assert (args.seed, args.num_train_epochs, args.max_steps, args.learning_rate) == (3, 2, 5, 1e-3)
    assert args.per_device_train_batch_size == 4 and args.per_device_eval_batch_size == 8
    assert args.save_strategy == "no" and args.disable_tqdm and args.weight_decay == smoke.weight_decay
    history = [{"step": 1, "loss": 2.0}, {"step": 2, "eval_loss": 1.5}, {"step": 3, "loss": 1.0}]
    assert runs.loss_curve(history) == [[1, 2.0], [3, 1.0]]
    assert runs.loss_curve(history, "eval_loss") == [[2, 1.5]]
