"""The folder of an iterative run (``loops/rounds.py``): claiming it, its records, checkpoints that give back the
same masks and movement scores, and the run context every round shares (records measured against the start)."""
import json

import pytest
import torch

from conftest import tiny_config
from xlprune_lib.config import UserError, get_profile
from xlprune_lib.loops import rounds
from xlprune_lib.loops.rounds import threshold
from xlprune_lib.loops.specs import IterSpec
from xlprune_lib.prune.importance import magnitude
from xlprune_lib.prune.plan import PruningPlan
from xlprune_lib.prune.scores import Scores
from xlprune_lib.prune.select import WeightSparsity
from xlprune_lib.xlnet.masks import counts


@pytest.fixture(scope="module")
def saved(small_tokenizer, tmp_path_factory):
    """A tiny random classifier folder with its tokenizer, made for the smoke profile's data."""
    from transformers import XLNetForSequenceClassification

    from xlprune_lib.xlnet.modeling import classifier_fields, save_model

    torch.manual_seed(0)
    tok = small_tokenizer
    model = XLNetForSequenceClassification(tiny_config(vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                                                       **classifier_fields(["rotten", "fresh"])))
    return save_model(model, tok, tmp_path_factory.mktemp("rounds") / "model",
                      extra_files={"metrics.json": {"profile": "smoke"}})


def _ids(n=3, seq=9):
    return torch.randint(10, 120, (n, seq), generator=torch.Generator().manual_seed(1))


def test_threshold_is_absolute_or_relative_to_dense():
    assert threshold("dense-0.01", 0.80) == pytest.approx(0.79) and threshold("0.7", 0.8) == 0.7


def test_claim_takes_a_new_folder_resumes_its_own_and_refuses_others(tmp_path):
    out = tmp_path / "run"
    rounds.claim(out, "k1", {"profile": "smoke"})
    run = json.loads((out / rounds.RUN).read_text())
    assert run["config_key"] == "k1" and run["config"] == {"profile": "smoke"} and "git_commit" in run
    before = (out / rounds.RUN).read_text()
    rounds.claim(out, "k1", {"profile": "smoke"})                       # the same run: resumed as it is
    assert (out / rounds.RUN).read_text() == before
    with pytest.raises(UserError, match="holds a different run"):
        rounds.claim(out, "k2", {"profile": "smoke"})
    assert (out / rounds.RUN).read_text() == before
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        rounds.claim(stray, "k1", {})
    assert [p.name for p in stray.iterdir()] == ["notes.txt"]


def test_records_are_appended_whole_and_compared_without_the_clock(tmp_path):
    assert rounds.read_records(tmp_path) == []
    first, second = {"round": 0, "seconds": 1.5, "total_seconds": 1.5}, {"round": 1, "seconds": 2.0, "b": [1]}
    rounds.append_record(tmp_path, first)
    rounds.append_record(tmp_path, second)
    assert rounds.read_records(tmp_path) == [first, second]
    assert (tmp_path / rounds.RECORDS).read_text().count("\n") == 2
    assert rounds.same_records([first, second], [{**first, "seconds": 9.0}, {**second, "total_seconds": 3.0}])
    assert not rounds.same_records([first], [{**first, "round": 1}])
    assert not rounds.same_records([first], [first, second])
    (tmp_path / rounds.RECORDS).write_text('{"round": 0}\n{"rou')             # a damaged record
    with pytest.raises(UserError, match="is damaged"):
        rounds.read_records(tmp_path)


def test_a_checkpoint_gives_back_the_masks_and_movement_scores(saved, small_tokenizer, tmp_path):
    """Saved with live masks: the file holds zeros where masked, the reloaded model the same masks (so the same
    trainable entries after a resume) and the same logits; movement scores come back keyed by weight names."""
    from xlprune_lib.xlnet.modeling import load_saved

    model = load_saved(saved).eval()
    WeightSparsity(0.5)(model, magnitude(model)).apply_masks(model)
    masks = rounds.live_weight_masks(model)
    names = PruningPlan.of(model).names()
    assert list(masks) == names and all(m.dtype == torch.uint8 for m in masks.values())
    assert 0.4 < 1 - sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values()) < 0.6
    g = torch.Generator().manual_seed(0)
    movement = {n: torch.randn(masks[n].shape, generator=g) for n in names[:3]}
    with torch.no_grad():
        want = model(input_ids=_ids()).logits
    rounds.save_checkpoint(model, small_tokenizer, tmp_path / "round-1", movement)
    assert rounds.live_weight_masks(model).keys() == masks.keys()       # the masks are back on the model in memory
    again, scores = rounds.load_checkpoint(tmp_path / "round-1")
    back = rounds.live_weight_masks(again)
    assert back.keys() == masks.keys() and all(torch.equal(back[n], masks[n]) for n in masks)
    assert isinstance(scores, Scores) and scores.kind == "weight" and list(scores) == names[:3]
    assert all(torch.equal(scores[n], movement[n]) for n in movement)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(input_ids=_ids()).logits, want)
    rounds.save_checkpoint(again, small_tokenizer, tmp_path / "round-2")
    assert rounds.load_checkpoint(tmp_path / "round-2")[1] is None       # no movement scores saved: none back


def test_masks_for_weights_the_model_lacks_are_refused(saved):
    from xlprune_lib.xlnet.modeling import load_saved

    model = load_saved(saved)
    with pytest.raises(UserError, match="layer.7.rel_attn.q"):
        rounds.reattach_masks(model, {"layer.7.rel_attn.q": torch.ones(2, 2, dtype=torch.uint8)})
    assert rounds.live_weight_masks(model) == {}


def test_run_context_records_against_the_start(saved, tmp_path):
    """Round 0 is the dense model's accuracy and sizes; a later record counts sparsity and removed heads against
    them, its requirement follows the dense accuracy, and committed records are the file's."""
    out, spec = tmp_path / "it", IterSpec("magnitude", granularity="head", requirement="dense-0.01")
    rounds.claim(out, "key", {"profile": "smoke"})
    ctx = rounds.RunContext(saved, spec, out, get_profile("smoke"), 0, progress=False, report=False)
    model = ctx.start()
    [dense] = ctx.records
    assert dense["round"] == 0 and dense["passed"] and dense["start"] == counts(model)
    assert dense["units"] == {"head": [4, 4], "neuron": [64, 64], "layer": 2} and dense["config_key"] == "key"
    assert 0 <= dense["validation_accuracy"] <= 1 and dense["prunable_sparsity"] == 0
    PruningPlan.of(model).without("head", {0: [0, 1], 1: [0, 3]}).apply_surgery(model)
    rec = ctx.record(model, round=1, step=2, target=0.5)
    assert rec["unit_sparsity"] == 0.5 and "start" not in rec and (rec["round"], rec["step"]) == (1, 2)
    assert rec["requirement"] == pytest.approx(dense["validation_accuracy"] - 0.01)
    assert rec["passed"] == (rec["validation_accuracy"] >= rec["requirement"])
    assert rec["prunable_sparsity"] == pytest.approx(1 - counts(model)["prunable_nonzero"] / dense["start"]["prunable"])
    assert 0 < rec["model_sparsity"] < rec["prunable_sparsity"]
    assert rec["total_seconds"] == pytest.approx(dense["total_seconds"] + rec["seconds"])
    ctx.commit(rec)
    assert rounds.same_records(rounds.read_records(out), ctx.records) and len(ctx.records) == 2
    resumed = rounds.RunContext(saved, spec, out, get_profile("smoke"), 0, progress=False, report=False)
    assert resumed.records == ctx.records
    resumed.start()
    assert len(resumed.records) == 2                                     # round 0 is not recorded again
