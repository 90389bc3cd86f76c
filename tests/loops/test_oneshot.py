"""`xlprune prune` on the smoke classifier (real corpus): measured sparsity, saved models, one-line errors."""
import json

import pytest
import torch
from test_cli import assert_user_error, cli, main_error, run

from xlprune_lib.prune.plan import PruningPlan
from xlprune_lib.prune.select import NM

from xlprune_lib.xlnet.modeling import load_saved
from xlprune_lib.xlnet.structure import XLNetStructure

pytestmark = pytest.mark.slow


def _metrics(out):
    return json.loads((out / "metrics.json").read_text())


def test_weight_pruning_writes_zeros_and_measures_them(smoke_runs, tmp_path):
    out = tmp_path / "w"
    proc = run("prune", "--model", str(smoke_runs["ft"]), "--method", "taylor", "--sparsity", "0.6",
               "--out", str(out), "--score-batches", "2", "--quiet", timeout=600)
    assert proc.returncode == 0, proc.stderr
    m = _metrics(out)
    model = load_saved(out)
    zeros = sum(int((getattr(mod, n) == 0).sum()) for mod, n in XLNetStructure(model).prunable())
    total = sum(getattr(mod, n).numel() for mod, n in XLNetStructure(model).prunable())
    assert m["prunable_sparsity"] == pytest.approx(zeros / total) and abs(zeros / total - 0.6) < 1e-3
    assert 0 <= m["test_accuracy"] <= 1 and m["dense"]["test_accuracy"] == pytest.approx(
        _metrics(smoke_runs["ft"])["test_accuracy"])
    rep = json.loads((out / "report.json").read_text())
    assert rep["totals"]["prunable"]["nonzero"] == total - zeros
    assert m["git_commit"] and m["config"]["method"] == "taylor"


def test_head_pruning_saves_a_smaller_model(smoke_runs, tmp_path, capsys):
    out = tmp_path / "h"
    proc = cli(capsys, "prune", "--model", str(smoke_runs["ft"]), "--method", "fisher", "--granularity", "head",
               "--sparsity", "0.5", "--out", str(out), "--score-batches", "1", "--finetune-epochs", "0.5",
               "--quiet")
    assert proc.returncode == 0, proc.stderr
    model, m = load_saved(out), _metrics(out)
    assert sum(model.config.heads_per_layer) == 4            # smoke: 2 layers x 4 heads, half removed
    assert sum(len(v) for v in m["removed"]["heads"].values()) == 4
    assert model.config.pruning_plan["heads"] == [[h for h in range(4) if h not in m["removed"]["heads"].get(str(L), [])]
                                                  for L in range(2)]   # the saved config names the heads kept
    assert "after_finetune" in m and m["test_accuracy"] == m["after_finetune"]["test_accuracy"]
    with torch.no_grad():
        model(input_ids=torch.tensor([[10, 11, 12, 4, 3]]))


def test_movement_pruning_of_neurons(smoke_runs, tmp_path, capsys):
    out = tmp_path / "m"
    proc = cli(capsys, "prune", "--model", str(smoke_runs["ft"]), "--method", "movement", "--granularity", "neuron",
               "--sparsity", "0.25", "--scope", "local", "--score-steps", "3", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert load_saved(out).config.inner_per_layer == [192, 192]   # smoke d_inner 256, a quarter per layer


BAD = [
    (["--method", "taylor", "--sparsity", "1.0"], "sparsity must be in [0, 1)"),
    (["--method", "taylor", "--sparsity", "-0.1"], "sparsity must be in [0, 1)"),
    (["--method", "snip", "--sparsity", "0.5"], "unknown method 'snip'"),
    (["--method", "taylor", "--granularity", "block", "--sparsity", "0.5"], "unknown granularity"),
    (["--method", "taylor", "--sparsity", "half"], "invalid float value"),
    (["--method", "taylor", "--scope", "layerwise", "--sparsity", "0.5"], "unknown scope"),
    (["--method", "movement", "--score-steps", "0", "--sparsity", "0.5"], "--score-steps"),
    (["--method", "taylor"], "--sparsity is required"),
    (["--method", "l0", "--granularity", "head", "--lambda", "-1"], "lambda must be >= 0"),
    (["--method", "l0", "--granularity", "head", "--lambda", "1", "--sparsity", "0.5"], "not both"),
    (["--method", "l0", "--granularity", "head"], "not both / neither"),
    (["--method", "l0", "--granularity", "layer", "--sparsity", "0.5"], "L0 gates exist for"),
    (["--method", "l0", "--granularity", "neuron", "--sparsity", "1.2"], "sparsity must be in [0, 1)"),
    (["--method", "taylor", "--granularity", "2:4", "--sparsity", "0.3"], "a sparsity of 0.5; got --sparsity 0.3"),
    (["--method", "taylor", "--granularity", "4:2"], "needs 0 < n < m, got 4:2"),
    (["--method", "l0", "--granularity", "2:4", "--sparsity", "0.5"], "L0 gates exist for"),
]


@pytest.mark.parametrize("args,fragment", BAD)
def test_prune_refuses_bad_input(smoke_runs, tmp_path, capsys, args, fragment):
    assert fragment in main_error(capsys, "prune", "--model", str(smoke_runs["ft"]), "--out", str(tmp_path / "x"),
                                  *args)
    assert not (tmp_path / "x").exists()


def test_prune_refuses_a_model_it_cannot_score(smoke_runs, tmp_path, capsys):
    out = str(tmp_path / "x")
    assert_user_error(cli(capsys, "prune", "--model", str(smoke_runs["pre"]), "--method", "fisher",
                          "--sparsity", "0.5", "--out", out),
                      "XLNetForSequenceClassification")     # a PLM checkpoint: no labels
    assert_user_error(cli(capsys, "prune", "--model", str(tmp_path / "nope"), "--method", "magnitude",
                          "--sparsity", "0.5", "--out", out), "does not exist")
    assert not (tmp_path / "x").exists()


def test_prune_never_overwrites_another_result(smoke_runs, tmp_path, capsys):
    out = tmp_path / "keep"
    args = ["prune", "--model", str(smoke_runs["ft"]), "--method", "magnitude", "--out", str(out), "--quiet"]
    assert cli(capsys, *args, "--sparsity", "0.3").returncode == 0
    before = (out / "metrics.json").read_text()
    assert_user_error(cli(capsys, *args, "--sparsity", "0.7"), "already holds a different run")
    assert (out / "metrics.json").read_text() == before


def test_l0_pruning_of_heads_and_neurons(smoke_runs, tmp_path, capsys):
    """Trained gates, finalized by surgery: the saved model is smaller and its report counts what went."""
    out = tmp_path / "l0"
    proc = cli(capsys, "prune", "--model", str(smoke_runs["ft"]), "--method", "l0", "--granularity", "head+neuron",
               "--lambda", "5", "--finetune-epochs", "1", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    m, model = _metrics(out), load_saved(out)
    assert m["l0_history"] and {"expected_l0", "expected_sparsity", "lambda"} <= set(m["l0_history"][-1])
    heads, neurons = PruningPlan.of(model).widths()     # the plain class when no unit went, xlnet-pruned if any
    kept = sum(heads) * 5 * 64 * 16 + sum(neurons) * 2 * 64
    assert m["prunable_nonzero_after"] <= kept and m["prunable_sparsity"] == pytest.approx(
        1 - m["prunable_nonzero_after"] / m["prunable_params_before"])
    rep = json.loads((out / "report.json").read_text())
    assert [layer["heads"] for layer in rep["layers"]] == heads


def test_n_of_m_pruning_from_the_command_line(smoke_runs, tmp_path, capsys):
    """``--granularity 2:4`` with any score: exactly 2 nonzeros in every 4 consecutive inputs, the sparsity
    implied (0.5) and delivered, counted from the saved tensors."""
    out = tmp_path / "nm"
    proc = cli(capsys, "prune", "--model", str(smoke_runs["ft"]), "--method", "taylor", "--granularity", "2:4",
               "--score-batches", "2", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    m = _metrics(out)
    assert m["spec"]["sparsity"] == 0.5 and m["delivery"]["met"]
    assert m["nm_groups"]["over_n"] == 0 and m["nm_groups"]["groups"] > 0
    model = load_saved(out)                       # recounted from the saved tensors
    assert NM(2, 4).groups(model) == m["nm_groups"]
    zeros = sum(int((getattr(mod, n) == 0).sum()) for mod, n in XLNetStructure(model).prunable())
    total = sum(getattr(mod, n).numel() for mod, n in XLNetStructure(model).prunable())
    assert zeros / total == pytest.approx(0.5) == m["prunable_sparsity"]
