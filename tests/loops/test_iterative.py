"""The prune -> fine-tune -> evaluate loop: stop rule, gradual callback, resume after a real kill, torchrun."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_cli import assert_user_error, cli, main_error

from xlprune_lib.loops.specs import IterSpec
from xlprune_lib.prune.plan import PruningPlan
from xlprune_lib.xlnet.masks import weight_sparsity
from xlprune_lib.xlnet.modeling import load_saved
from xlprune_lib.loops.rounds import read_records, same_records
from xlprune_lib.xlnet.structure import XLNetStructure


def test_stop_rule_returns_the_last_round_that_met_the_requirement(smoke_runs, tmp_path, monkeypatch):
    """Accuracy is made to fall with sparsity (0.9 - 0.5 s): rounds at 0.2 and 0.4 pass 0.69, 0.6 fails."""
    from xlprune_lib.loops import iterative, rounds

    def falling(self, model):
        acc = 0.9 - 0.5 * weight_sparsity(XLNetStructure(model).prunable())
        return {"validation_accuracy": acc, "test_accuracy": acc}

    monkeypatch.setattr(rounds.RunContext, "evaluate", falling)
    spec = IterSpec("magnitude", target=0.8, schedule="constant", step=0.2, round_steps=2, requirement="0.69")
    out = iterative.iterate(smoke_runs["ft"], spec, tmp_path / "it", seed=0, progress=False)
    records = read_records(out)
    assert [r["round"] for r in records] == [0, 1, 2, 3] and [r["passed"] for r in records] == [True] * 3 + [False]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_round"] == 2 and "round 3 missed" in summary["stop_reason"]
    final = load_saved(summary["final_model"])
    assert weight_sparsity(XLNetStructure(final).prunable()) == pytest.approx(0.4, abs=1e-3)   # counted in the tensors
    assert sorted(p.name for p in out.glob("round-*")) == ["round-2", "round-3"]        # older rounds dropped
    # the final folder has its model card: this run's accuracies (as the evaluator gave them), the delivered sparsity
    card = (Path(summary["final_model"]) / "README.md").read_text()
    assert "rounds of pruning and fine-tuning (constant schedule), over 4 fine-tuning steps" in card
    assert card.count(" 70.0% [") == 2 and card.count(" 90.0% [") == 2    # final and dense (validation, test)
    assert f"delivered {100 * summary['delivery']['delivered']:.1f}%" in card and "asked 80.0%" in card
    assert "plain `transformers` XLNet" in card                          # weights only: no trust_remote_code
    folder = Path(summary["final_model"])
    assert (folder / "state.safetensors").is_file()                       # the round's masks, not the model
    assert f"Weights file: {(folder / 'model.safetensors').stat().st_size / 1e6:.1f} MB" in card
    assert "`rounds.jsonl`" in card and "metrics.json" not in card


def _iterate(out, *args):
    return [sys.executable, "-m", "xlprune_lib", "iterate", *args, "--out", str(out), "--quiet"]


def _kill_after(cmd, out, records: int, timeout=600):
    """Start ``cmd``, SIGKILL it as soon as ``records`` lines are in rounds.jsonl; return the lines seen then."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    path, start = out / "rounds.jsonl", time.time()
    while not (path.is_file() and len(path.read_text().splitlines()) >= records):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() - start < timeout
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return len(path.read_text().splitlines())


def _weights(folder):
    return {k: v.clone() for k, v in load_saved(folder).state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize("args", [
    ["--method", "taylor", "--score-batches", "2", "--target", "0.8", "--schedule", "geometric", "--step", "0.3",
     "--round-steps", "4", "--requirement", "0"],
    ["--method", "movement", "--target", "0.8", "--schedule", "cubic", "--total-steps", "48", "--prune-every", "3",
     "--round-steps", "6", "--requirement", "0"],
], ids=["geometric-taylor", "cubic-movement"])
def test_killed_run_resumes_to_the_same_records(smoke_runs, tmp_path, args):
    args = ["--model", str(smoke_runs["ft"]), *args]
    whole = tmp_path / "whole"
    proc = subprocess.run(_iterate(whole, *args), capture_output=True, text=True, env=os.environ.copy(), timeout=600)
    assert proc.returncode == 0, proc.stderr
    expected = read_records(whole)

    cut = tmp_path / "cut"
    seen = _kill_after(_iterate(cut, *args), cut, records=3)
    assert 3 <= seen < len(expected) and not (cut / "summary.json").exists()   # really interrupted mid-run
    proc = subprocess.run(_iterate(cut, *args), capture_output=True, text=True, env=os.environ.copy(), timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert f"round {seen - 1:>2}" not in proc.stdout and f"round {seen:>2}" in proc.stdout  # resumed after the last
    resumed = read_records(cut)
    assert len(resumed) == len(expected) and same_records(resumed, expected)
    final = [json.loads((d / "summary.json").read_text())["final_model"] for d in (whole, cut)]
    a, b = _weights(final[0]), _weights(final[1])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_different_config_in_the_same_folder_is_refused(smoke_runs, tmp_path, capsys):
    out = tmp_path / "it"
    base = ["--model", str(smoke_runs["ft"]), "--method", "magnitude", "--target", "0.5", "--schedule", "constant",
            "--step", "0.5", "--round-steps", "2", "--requirement", "0"]
    assert subprocess.run(_iterate(out, *base), capture_output=True, env=os.environ.copy()).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    other = [*base[:-2], "--requirement", "0.5"]
    assert_user_error(cli(capsys, "iterate", *other, "--out", str(out), "--quiet"), "holds a different run")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    assert_user_error(cli(capsys, "iterate", *base, "--out", str(stray), "--quiet"), "not empty")
    assert [p.name for p in stray.iterdir()] == ["notes.txt"]


@pytest.mark.slow
def test_heads_removed_round_by_round(smoke_runs, tmp_path, capsys):
    out = tmp_path / "heads"
    proc = cli(capsys, "iterate", "--model", str(smoke_runs["ft"]), "--method", "fisher", "--granularity", "head",
               "--score-batches", "1", "--target", "0.5", "--schedule", "constant", "--step", "0.25",
               "--round-steps", "2", "--requirement", "0", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    records = read_records(out)
    final = load_saved(json.loads((out / "summary.json").read_text())["final_model"])
    assert sum(final.config.heads_per_layer) == 4                       # smoke: 8 heads, half removed in 2 rounds
    card = (Path(json.loads((out / "summary.json").read_text())["final_model"]) / "README.md").read_text()
    assert "- fisher" in card and "- head" in card and "trust_remote_code=True" in card
    assert "Heads per layer: 2, 2" in card and "delivered 50.0%" in card
    assert [sum(len(v) for v in r["removed"]["heads"].values()) for r in records[1:]] == [2, 2]
    # rounds name heads in original indices: together they are exactly what the final model's plan lacks
    both = {}
    for r in records[1:]:
        for layer, heads in r["removed"]["heads"].items():
            both.setdefault(layer, []).extend(heads)
    assert PruningPlan.of(final).removed()["heads"] == {k: sorted(v) for k, v in both.items()}
    attention, ffn = 5 * 64 * 64, 2 * 64 * 256          # per layer: q, k, v, o, r and the two FFN matrices
    assert records[-1]["prunable_sparsity"] == pytest.approx(0.5 * attention / (attention + ffn))
    assert 0 < records[-1]["model_sparsity"] < records[-1]["prunable_sparsity"]


@pytest.mark.parametrize("args, message", [
    (["--method", "magnitude", "--schedule", "linear"], "unknown schedule 'linear'"),
    (["--method", "fisher", "--schedule", "cubic"], "--method magnitude or movement"),
    (["--method", "magnitude", "--target", "1.5"], "--target must be in [0, 1)"),
    (["--method", "magnitude", "--requirement", "good"], "--requirement must be an accuracy"),
    (["--method", "magnitude"], "does not exist"),
])
def test_cli_user_errors(tmp_path, args, message, capsys):
    out = tmp_path / "out"
    assert message in main_error(capsys, "iterate", "--model", str(tmp_path / "missing"), *args, "--out", str(out))
    assert not out.exists()
