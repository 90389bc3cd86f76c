"""Chapter 5's measurements (``book/speed_study.py``): what a timing is keyed by (:func:`machine`), the kernel
sweep on tiny shapes, the comparison-table row of a bench result, and the study's cached timings on a tiny
random XLNet. No speed is asserted (a shared machine): only counts, ratios and what was timed."""
import json
import re

import onnxruntime
import pytest
import torch
from conftest import tiny_config
from transformers import XLNetForSequenceClassification

from xlprune_lib.book import speed_study
from xlprune_lib.book.speed_study import SpeedStudy, comparison_row, kernel_sweep, machine
from xlprune_lib.deploy import bench
from xlprune_lib.prune.plan import PruningPlan
from xlprune_lib.train import finetune
from xlprune_lib.xlnet.modeling import save_model

UTC = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d UTC$")


def test_machine_names_what_timings_depend_on():
    m = machine()
    assert set(m) == {"cpu", "threads", "platform", "cuda", "torch", "onnxruntime"}
    assert m["threads"] == torch.get_num_threads() and m["torch"] == torch.__version__
    assert m["onnxruntime"] == onnxruntime.__version__ and m["cpu"]
    assert m["cuda"] == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    json.dumps(m)                                                # it goes into a cache key


def test_machine_reads_the_cpu_model_name(monkeypatch):
    monkeypatch.setattr(speed_study, "_cpuinfo", lambda: ["processor\t: 0", "model name\t: Test CPU 9000 @ 1GHz"])
    assert machine()["cpu"] == "Test CPU 9000 @ 1GHz"
    monkeypatch.setattr(speed_study, "_cpuinfo", lambda: [])     # no /proc/cpuinfo: what platform says
    assert machine()["cpu"]


def test_stamped_records_when_it_measured():
    out = speed_study._stamped(lambda: [1, 2])()
    assert out["result"] == [1, 2] and UTC.match(out["measured_utc"])


def test_kernel_sweep_on_a_tiny_shape():
    rows = kernel_sweep(32, 16, 8, [0.0, 0.5, 0.95], repeats=3, seed=0)
    kernels = ["dense", "dense with zeros", "sparse CSR"]
    assert len(rows) == 9 and sorted({r["kernel"] for r in rows}) == sorted(kernels)
    by = {}
    for r in rows:
        by.setdefault(r["sparsity"], {})[r["kernel"]] = r
    sparsities = sorted(by)
    assert len(sparsities) == 3 and sparsities[0] == 0.0          # nothing dropped at 0
    # the measured zero share of a 16 x 32 weight (512 entries), near what was asked
    assert sparsities[1] == pytest.approx(0.5, abs=0.08) and sparsities[2] == pytest.approx(0.95, abs=0.04)
    for s, group in by.items():
        assert set(group) == set(kernels)
        assert group["dense"]["ratio_to_dense"] == 1.0
        for r in group.values():
            assert r["median_ms"] > 0 and r["ratio_to_dense"] == pytest.approx(r["median_ms"] / group["dense"]["median_ms"])
        assert abs(s * 512 - round(s * 512)) < 1e-6              # counted zeros of 512, not the share requested


def test_kernel_sweep_is_seeded():
    first = [r["sparsity"] for r in kernel_sweep(16, 8, 4, [0.3, 0.7], repeats=1, seed=5)]
    assert first == [r["sparsity"] for r in kernel_sweep(16, 8, 4, [0.3, 0.7], repeats=1, seed=5)]
    assert first != [r["sparsity"] for r in kernel_sweep(16, 8, 4, [0.3, 0.7], repeats=1, seed=6)]


def _side(params_nonzero, file_bytes, sparse_bytes, ms, onnx=None):
    out = {"prunable_nonzero": params_nonzero, "prunable_params": 1000, "file_bytes": file_bytes,
           "sparse_file_bytes": sparse_bytes, "latency": {"1": {"median_ms": ms[0]}, "4": {"median_ms": ms[1]}}}
    if onnx is not None:
        out["onnx_file_bytes"] = onnx
    return out


def _result(runtime="onnxruntime"):
    """A ``bench.bench`` result, by hand: a pruned model at 40% of the prunable weights, and its int8 copy."""
    onnx = runtime == "onnxruntime"
    return {"spec": {"runtime": runtime, "dtype": "fp32", "batch_sizes": [1, 4]},
            "baseline": _side(1000, 4_000_000, 3_000_000, (2.0, 8.0), 5_000_000 if onnx else None),
            "model": _side(400, 2_000_000, 1_000_000, (1.5, 4.0), 2_500_000 if onnx else None),
            bench.INT8: _side(400, 2_000_000, 1_000_000, (1.0, 2.0), 1_000_000),
            "ratios": {"encoder_params": 0.4, "params": 0.5, "nonzero": 0.45, "flops_per_token": 0.42,
                       "file_bytes": 0.5, "sparse_file_bytes": 1 / 3, "latency_b1": 0.75, "latency_b4": 0.5,
                       "peak_memory_b4": 0.6, **({"onnx_file_bytes": 0.5} if onnx else {})},
            "ratios_int8": {"latency_b1": 0.5, "latency_b4": 0.25, "onnx_file_bytes": 0.2}}


def test_comparison_row_of_a_bench_result(tmp_path):
    r = _result()
    measured = {"validation_accuracy": None, "test_accuracy": 0.75}
    fp32 = comparison_row("half", tmp_path, r, accuracy=measured)
    int8 = comparison_row("half", tmp_path, r, bench.INT8, {"test_accuracy": 0.5})
    assert (fp32["runtime"], fp32["dtype"], int8["runtime"], int8["dtype"]) == ("onnxruntime", "fp32",
                                                                                 "onnxruntime", "int8")
    assert fp32["method"] == int8["method"] == "half"
    assert fp32["test_accuracy"] == 0.75 and int8["test_accuracy"] == 0.5
    assert fp32["validation_accuracy"] is None and int8["validation_accuracy"] is None
    # latencies: each entry's own ratios and medians
    assert int8["latency_ratio_b4"] == r["ratios_int8"]["latency_b4"] != fp32["latency_ratio_b4"]
    assert (fp32["latency_ratio_b1"], fp32["latency_ratio_b4"]) == (0.75, 0.5)
    assert (fp32["latency_ms_b1"], fp32["latency_ms_b4"], int8["latency_ms_b4"]) == (1.5, 4.0, 2.0)
    assert int8["onnx_file_mb"] == r[bench.INT8]["onnx_file_bytes"] / 1e6 < fp32["onnx_file_mb"]
    assert (fp32["onnx_file_mb"], fp32["onnx_file_ratio"], int8["onnx_file_ratio"]) == (2.5, 0.5, 0.2)
    # sizes, parameters and FLOPs are the pruned model's whatever the entry
    for row in (fp32, int8):
        assert row["params_ratio"] == r["ratios"]["params"] == 0.5
        assert row["prunable_removed"] == pytest.approx(0.6)          # 1 - 400 / 1000
        assert (row["encoder_removed"], row["nonzero_ratio"], row["flops_ratio"]) == pytest.approx((0.6, 0.45, 0.42))
        assert (row["file_mb"], row["sparse_file_mb"], row["file_ratio"]) == (2.0, 1.0, 0.5)
        assert row["sparse_file_ratio"] == pytest.approx(1 / 3)
    assert fp32["peak_memory_ratio"] == 0.6 and int8["peak_memory_ratio"] is None    # memory: not an int8 entry
    with pytest.raises(KeyError):
        comparison_row("half", tmp_path, _result("torch"), "model_fp16")


def test_comparison_row_reads_the_run_metrics_in_pytorch(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"validation_accuracy": 0.8, "test_accuracy": 0.7}))
    row = comparison_row("heads", tmp_path, _result("torch"))
    assert (row["runtime"], row["dtype"], row["validation_accuracy"], row["test_accuracy"]) == ("torch", "fp32", 0.8, 0.7)
    assert "onnx_file_mb" not in row and row["peak_memory_ratio"] == 0.6
    bare = comparison_row("heads", tmp_path / "no-metrics", _result("torch"))    # a folder without metrics
    assert bare["validation_accuracy"] is None and bare["test_accuracy"] is None


# --- the study's cached timings ----------------------------------------------------------------------------

def forbidden(*args, **kwargs):
    raise AssertionError("a cached timing was measured again")


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XLPRUNE_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = XLNetForSequenceClassification(tiny_config(num_labels=2)).eval()
    folder = save_model(model, None, tmp_path / "dense")
    monkeypatch.setattr(finetune, "dense_run", lambda profile, seed=0, progress=False, data=None: folder)
    return folder


def test_kernels_are_timed_once_per_machine(run_dir, monkeypatch):
    study = SpeedStudy("smoke", 0)
    out = study.kernels(tokens=4, sparsities=[0.0, 0.5], repeats=2)
    assert UTC.match(out["measured_utc"]) and len(out["result"]) == 6
    monkeypatch.setattr(speed_study, "kernel_sweep", forbidden)
    again = SpeedStudy("smoke", 0)
    assert again.kernels(tokens=4, sparsities=[0.0, 0.5], repeats=2) == out       # same time stamp: read back
    with pytest.raises(AssertionError, match="measured again"):
        again.kernels(tokens=4, sparsities=[0.0, 0.5], repeats=3)
    monkeypatch.setattr(speed_study, "machine", lambda: {**machine(), "cpu": "another CPU"})
    with pytest.raises(AssertionError, match="measured again"):                     # another machine times afresh
        again.kernels(tokens=4, sparsities=[0.0, 0.5], repeats=2)


def test_kernels_time_the_profile_ffn_shape(run_dir, monkeypatch):
    shapes = []
    monkeypatch.setattr(speed_study, "kernel_sweep", lambda *a, **k: shapes.append((a, k)) or [])
    study = SpeedStudy("smoke", 3)
    study.kernels(tokens=4, sparsities=(0.5,), repeats=2)
    ((args, kwargs),) = shapes
    assert args == (study.profile.d_model, study.profile.d_inner, 4, [0.5])
    assert kwargs == {"repeats": 2, "seed": 3, "device": "cpu"}


def test_latency_times_dense_masked_and_structured_copies(run_dir, tmp_path, monkeypatch):
    study = SpeedStudy("smoke", 0)
    slim = XLNetForSequenceClassification(tiny_config(num_labels=2)).eval()
    PruningPlan.of(slim).without("head", {0: [0, 1]}).apply_surgery(slim)
    folder = save_model(slim, None, tmp_path / "slim", extra_files={"metrics.json": {"encoder_removed": 0.125}})
    out = study.latency([0.5], {"half heads": folder}, batch_sizes=[1, 2], seq_len=8, repeats=2)
    rows = out["result"]
    assert [(r["model"], r["batch"]) for r in rows] == [(m, b) for b in (1, 2) for m in ("dense", "weights 50%",
                                                                                          "half heads")]
    assert {r["model"]: r["removed"] for r in rows} == {"dense": 0.0, "weights 50%": 0.5, "half heads": 0.125}
    for r in rows:
        dense = next(d for d in rows if d["model"] == "dense" and d["batch"] == r["batch"])
        assert r["latency_ratio"] == pytest.approx(r["median_ms"] / dense["median_ms"]) and r["median_ms"] > 0
    assert all(r["latency_ratio"] == 1.0 for r in rows if r["model"] == "dense")
    assert (study.model.transformer.layer[0].ff.layer_1.weight != 0).all()     # the masks went on copies
    monkeypatch.setattr(bench, "latency_sweep", forbidden)
    assert SpeedStudy("smoke", 0).latency([0.5], {"half heads": folder}, [1, 2], 8, 2) == out
    with pytest.raises(AssertionError, match="measured again"):
        SpeedStudy("smoke", 0).latency([0.5], {"half heads": folder}, [1], 8, 2)


def test_bench_and_export_are_measured_once_per_model_and_settings(run_dir, tmp_path, monkeypatch):
    """``bench`` times the pruned folder against the dense run; ``export`` exports it. Both are cached by what
    the folder holds and the settings (the real bench and export are tested in tests/deploy)."""
    calls = []
    monkeypatch.setattr(bench, "bench", lambda model_dir, base_dir, spec: calls.append(
        ("bench", model_dir, base_dir, spec.repeats)) or {"ratios": {"params": 0.5}})
    monkeypatch.setattr(speed_study, "export_run", lambda model_dir, out, quantize, profile, seed: calls.append(
        ("export", model_dir, out, quantize, profile.name, seed)) or {"test": {"onnx": 0.5}})
    slim = XLNetForSequenceClassification(tiny_config(num_labels=2)).eval()
    PruningPlan.of(slim).without("neuron", {1: list(range(32))}).apply_surgery(slim)
    folder = save_model(slim, None, tmp_path / "slim")
    study = SpeedStudy("smoke", 1)
    spec = bench.BenchSpec(batch_sizes=(1,), seq_len=8, repeats=2)
    first = study.bench(folder, spec)
    assert first["result"] == {"ratios": {"params": 0.5}} and UTC.match(first["measured_utc"])
    assert study.bench(folder, spec) == first
    study.bench(folder, bench.BenchSpec(batch_sizes=(1,), seq_len=8, repeats=3))
    assert calls == [("bench", folder, run_dir, 2), ("bench", folder, run_dir, 3)]
    calls.clear()
    assert study.export(folder, tmp_path / "m.onnx", "int8") == {"test": {"onnx": 0.5}}
    assert study.export(folder, tmp_path / "elsewhere.onnx", "int8") == {"test": {"onnx": 0.5}}   # the record
    study.export(folder, tmp_path / "m.onnx")
    assert calls == [("export", folder, tmp_path / "m.onnx", "int8", "smoke", 1),
                     ("export", folder, tmp_path / "m.onnx", None, "smoke", 1)]
