"""``xlprune bench``: the measurements are counted from tensors and files, ratios are consistent, errors are clear.

Speed itself is not asserted (this is a shared 2-core machine); the benchmark is run by scripts and chapter 5.
"""
import json
import subprocess
import sys

import pytest
import torch

from conftest import tiny_config
from test_cli import main_error
from xlprune_lib.deploy.bench import BenchSpec, bench, parse_batch_sizes, summarize
from xlprune_lib.config import UserError
from xlprune_lib.xlnet.masks import make_permanent
from xlprune_lib.xlnet.modeling import save_model
from xlprune_lib.measure.sparse import save_sparse
from xlprune_lib.prune.importance import magnitude, score
from xlprune_lib.prune.select import EncoderBudget, WeightSparsity


@pytest.fixture
def pair(tmp_path, small_tokenizer):
    """A dense classifier, the same with 90% of its weights zeroed, and one with half its encoder removed."""
    from transformers import XLNetForSequenceClassification

    torch.manual_seed(0)
    cfg = tiny_config(num_labels=2, vocab_size=len(small_tokenizer), d_model=64, n_head=4, d_inner=256)
    dense = XLNetForSequenceClassification(cfg).eval()
    base = save_model(dense, small_tokenizer, tmp_path / "dense")
    masked = XLNetForSequenceClassification(cfg).eval()
    masked.load_state_dict(dense.state_dict())
    WeightSparsity(0.9)(masked, magnitude(masked)).apply_masks(masked)
    make_permanent(masked)
    unstructured = save_model(masked, small_tokenizer, tmp_path / "unstructured")
    sparse = save_sparse(masked, tmp_path / "sparse", small_tokenizer)
    slim = XLNetForSequenceClassification(cfg).eval()
    slim.load_state_dict(dense.state_dict())
    EncoderBudget(0.5)(slim, score(slim, "magnitude", "head+neuron")).apply_surgery(slim)
    structured = save_model(slim, small_tokenizer, tmp_path / "structured")
    return {"dense": base, "unstructured": unstructured, "sparse": sparse, "structured": structured}


def test_bench_counts_from_tensors_and_files(pair):
    spec = BenchSpec(batch_sizes=(1, 4), seq_len=16, warmup=1, repeats=3)
    r = bench(pair["structured"], pair["dense"], spec)
    for side in ("model", "baseline"):
        for bs in ("1", "4"):
            lat = r[side]["latency"][bs]
            assert lat["repeats"] == 3 and lat["min_ms"] <= lat["median_ms"] <= lat["q3_ms"] + 1e-9
            assert lat["throughput"] == pytest.approx(int(bs) / (lat["median_ms"] / 1e3))
        assert list(r[side]["memory"]) == ["4"]                 # peak memory: at the largest batch only
        assert r[side]["memory"]["4"]["peak_bytes"] > 0
    # structured: fewer parameters, a smaller file, fewer FLOPs; ratios are pruned / baseline
    assert r["ratios"]["params"] == pytest.approx(r["model"]["params"] / r["baseline"]["params"])
    assert r["ratios"]["params"] < 1 and r["ratios"]["file_bytes"] < 1 and r["ratios"]["flops_per_token"] < 0.7
    assert r["ratios"]["latency_b4"] == pytest.approx(
        r["model"]["latency"]["4"]["median_ms"] / r["baseline"]["latency"]["4"]["median_ms"])
    assert {"git_commit", "config", "versions", "machine"} <= r.keys()
    assert tuple(r["config"]["bench"]["batch_sizes"]) == (1, 4)


def test_unstructured_zeros_do_not_shrink_the_dense_file_but_the_sparse_format_does(pair):
    r = bench(pair["unstructured"], pair["dense"], BenchSpec(batch_sizes=(2,), seq_len=8, warmup=0, repeats=2,
                                                             memory=False))
    assert r["ratios"]["params"] == 1.0                       # the zeros are still parameters
    assert r["ratios"]["nonzero"] < 0.5
    assert 0.97 < r["ratios"]["file_bytes"] <= 1.0            # ... and still stored
    assert r["ratios"]["sparse_file_bytes"] < 0.6             # unless the bitmask format drops them
    assert r["ratios"]["flops_per_token"] == 1.0 and r["ratios"]["flops_per_token_sparse"] < 0.6
    assert r["model"]["memory"] == {}
    # a sparse checkpoint folder is benchmarked as the same model
    s = bench(pair["sparse"], pair["dense"], BenchSpec(batch_sizes=(2,), seq_len=8, warmup=0, repeats=2,
                                                       memory=False))
    assert s["model"]["nonzero"] == r["model"]["nonzero"] and s["model"]["file_bytes"] < r["model"]["file_bytes"]


def test_summary_statistics():
    s = summarize([0.010, 0.020, 0.030, 0.040, 0.100], batch=8)
    assert s["median_ms"] == pytest.approx(30.0) and s["min_ms"] == pytest.approx(10.0)
    assert s["q1_ms"] <= s["median_ms"] <= s["q3_ms"] and s["throughput"] == pytest.approx(8 / 0.030)


@pytest.mark.parametrize("text", ["", "0", "1,x", "-3", "1,,0"])
def test_bad_batch_sizes(text):
    with pytest.raises(UserError):
        parse_batch_sizes(text)


def test_cli_bench_json_and_errors(pair, tmp_path, capsys):
    from xlprune_lib.cli import main

    args = ["bench", "--model", str(pair["structured"]), "--baseline", str(pair["dense"]), "--batch-sizes", "2",
            "--seq-len", "8", "--repeats", "2", "--warmup", "0", "--no-memory"]
    # through a real interpreter once (what a user's shell sees), then in this process
    done = subprocess.run([sys.executable, "-m", "xlprune_lib", *args, "--json"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ratios"]["params"] < 1
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "latency b=2" in text and "ratio" in text
    for extra, msg in ((["--batch-sizes", "a"], "batch-sizes"), (["--seq-len", "0"], "seq-len"),
                       (["--device", "tpu"], "device"), (["--dtype", "fp16"], "fp16")):
        assert msg in main_error(capsys, *args, *extra)
    assert "does not exist" in main_error(capsys, *args[:4], str(tmp_path / "nope"), *args[5:])   # baseline
    assert "does not exist" in main_error(capsys, *args[:2], str(tmp_path / "nope"), *args[3:])   # model
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((pair["dense"] / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    assert f"{broken / 'model.safetensors'} is damaged" in main_error(capsys, *args[:2], str(broken), *args[3:])


def test_provenance_commit_is_dirty_for_code_changes_but_not_for_results(tmp_path, monkeypatch):
    """`make results` rewrites data/results; its next run must still record a clean commit, while any other
    tracked change marks the commit -dirty."""
    from xlprune_lib.measure import report

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "data" / "results").mkdir(parents=True)
    (tmp_path / "data" / "results" / "01_models.csv").write_text("a\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "init")
    monkeypatch.setattr(report, "repo_root", lambda: tmp_path)
    clean = report.git_commit()
    assert clean and not clean.endswith("-dirty")
    (tmp_path / "data" / "results" / "01_models.csv").write_text("b\n")
    assert report.git_commit() == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert report.git_commit() == clean + "-dirty"


def test_bench_in_onnxruntime_with_int8(pair):
    """``--runtime onnxruntime --quantize int8``: three models timed alternately in one run; the ONNX files and
    their agreement with PyTorch are measured; memory is not (it is a PyTorch measurement)."""
    spec = BenchSpec(batch_sizes=(1, 4), seq_len=16, warmup=1, repeats=3, runtime="onnxruntime", quantize="int8")
    r = bench(pair["structured"], pair["dense"], spec)
    assert {"baseline", "model", "model_int8", "ratios", "ratios_int8"} <= r.keys()
    for side in ("baseline", "model", "model_int8"):
        assert r[side]["latency"]["4"]["repeats"] == 3 and r[side]["memory"] == {}
    assert r["baseline"]["max_abs_logit_difference"] <= 1e-4 and r["model"]["max_abs_logit_difference"] <= 1e-4
    assert r["model_int8"]["max_abs_logit_difference"] > 1e-4   # int8 changes the numbers
    # int8 weights in every MatMul (the word embedding, a lookup, stays fp32 and dominates this tiny model)
    assert r["model_int8"]["onnx_file_bytes"] < 0.5 * r["model"]["onnx_file_bytes"]
    assert r["ratios_int8"]["onnx_file_bytes"] == pytest.approx(
        r["model_int8"]["onnx_file_bytes"] / r["baseline"]["onnx_file_bytes"])
    assert r["ratios_int8"]["latency_b1"] == pytest.approx(
        r["model_int8"]["latency"]["1"]["median_ms"] / r["baseline"]["latency"]["1"]["median_ms"])
    from xlprune_lib.deploy.bench import format_bench

    table = format_bench(r)
    assert "pruned int8" in table and "ONNX file MB" in table and table.startswith("onnxruntime on cpu")


@pytest.mark.parametrize("options, message", [
    (dict(runtime="tensorrt"), "unknown runtime 'tensorrt'"),
    (dict(quantize="int8"), "add --runtime onnxruntime"),
    (dict(runtime="onnxruntime", quantize="int4"), "--quantize takes int8"),
    (dict(runtime="onnxruntime", dtype="bf16"), "--dtype fp32"),
    (dict(semi_structured=True), "--semi-structured runs on an NVIDIA GPU"),
    (dict(semi_structured=True, dtype="bf16"), "use --device cuda"),
])
def test_bench_runtime_options_are_checked(options, message):
    with pytest.raises(UserError, match=message):
        BenchSpec(**options).check()
