"""Chapter 5's measurements, cached per machine: kernel and model timings, benchmarks, ONNX exports.

A benchmark measures a cached model on one machine; measured once, it is kept like a run, keyed by the models
(what their folders hold, ``runs.content_key``), the benchmark's settings, the pruning code's version and the machine (:func:`machine`), so
a rebuild of the book on the same machine redraws chapter 5 from the first measurement instead of timing every
model again, and another machine measures afresh. Each cached timing carries the UTC time it was measured
(``measured_utc``), which the chapter prints. To re-time, delete ``<cache>/memo`` entries of kind
``ch5-*`` or run ``xlprune bench``.
"""
from __future__ import annotations

import copy
import platform
import statistics
import warnings
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import onnxruntime
import torch

from ..deploy import bench
from ..deploy.export import export_run
from ..measure.report import load_metrics
from ..train.runs import content_key
from ..prune.importance import magnitude
from ..prune.select import WeightSparsity
from ..xlnet.masks import make_permanent
from ..xlnet.modeling import load_saved
from .dense_study import DenseStudy


def machine() -> dict:
    """What the timings depend on besides the models: CPU model, torch threads, GPU, platform, and the torch and
    ONNX Runtime versions."""
    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")),
               platform.processor() or platform.machine())
    return {"cpu": cpu, "threads": torch.get_num_threads(), "platform": platform.platform(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__}


def _cpuinfo() -> list[str]:
    path = Path("/proc/cpuinfo")
    return path.read_text().splitlines() if path.is_file() else []


def _stamped(compute):
    """``compute()`` with the UTC time of the measurement."""
    def run():
        return {"measured_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "result": compute()}
    return run


# --- chapter 5's own measurements: why zeros are not speed, and its comparison table -----------------

def kernel_sweep(d_in: int, d_out: int, tokens: int, sparsities, repeats: int = 20, seed: int = 0,
                 device: str = "cpu") -> list[dict]:
    """Time ``x @ W.T`` for a ``(d_out, d_in)`` weight at each sparsity: dense kernel vs CSR sparse kernel.

    The dense matrix with zeros in it runs the same dense GEMM (every zero is still loaded and multiplied);
    ``torch.sparse`` CSR only touches the nonzeros, but pays for indices and irregular memory access, so it
    wins only at very high sparsity. Magnitude-style random sparsity patterns, ``tokens`` rows of input.
    Times are medians in milliseconds, the three kernels timed in a random order every repetition.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, d_in, generator=g).to(device)
    w = torch.randn(d_out, d_in, generator=g).to(device)
    rows = []
    with torch.inference_mode():
        for s in sparsities:
            ws = w * (torch.rand(d_out, d_in, generator=g) >= s).to(device)
            with warnings.catch_warnings():  # "sparse CSR support is in beta": known, and what we measure
                warnings.simplefilter("ignore", UserWarning)
                csr = ws.to_sparse_csr()
            kernels = {"dense": lambda: x @ w.T, "dense with zeros": lambda: x @ ws.T,
                       "sparse CSR": lambda: (csr @ x.T).T}
            times = bench.alternate(kernels, 1, repeats, device, seed)
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            rows += [{"sparsity": float(1 - int((ws != 0).sum()) / ws.numel()), "kernel": k, "median_ms": v,
                      "ratio_to_dense": v / med["dense"]} for k, v in med.items()]
    return rows




def comparison_row(name: str, run_dir, result: dict, entry: str = "model", accuracy: dict | None = None) -> dict:
    """One row of the chapter-5 table for the ``entry`` of a ``bench.bench`` result: ``"model"``, or ``bench.INT8``
    (the pruned model quantized to int8, timed with ``--quantize int8``; its ratios are ``ratios_int8``).

    ``runtime`` and ``dtype`` say what was timed (``dtype`` ``"int8"`` for the quantized entry); latency ratios
    are against the baseline timed in the same runtime and run. Accuracies (``validation_accuracy``,
    ``test_accuracy``) come from ``accuracy`` when given (what this runtime measured, e.g. ``export_run``'s
    ``test`` entries), else from the run's ``metrics.json`` (PyTorch). Sizes: the saved folder's files, and with
    ONNX Runtime the ``.onnx`` file (``onnx_file_mb``, ``onnx_file_ratio``). Raises ``KeyError`` for an ``entry``
    the result does not hold.
    """
    metrics = accuracy if accuracy is not None else (
        load_metrics(run_dir) if (Path(run_dir) / "metrics.json").is_file() else {})
    m, spec, b = result[entry], result["spec"], result["baseline"]
    r = result["ratios" if entry == "model" else "ratios_int8"]
    base = result["ratios"]   # parameters, FLOPs and the saved files are the pruned model's in every runtime
    row = {"method": name, "runtime": spec["runtime"], "dtype": "int8" if entry == bench.INT8 else spec["dtype"],
           "validation_accuracy": metrics.get("validation_accuracy"), "test_accuracy": metrics.get("test_accuracy"),
           # zero or removed, against the baseline's prunable set: masks and surgery on one scale
           "prunable_removed": 1 - m["prunable_nonzero"] / b["prunable_params"],
           "encoder_removed": 1 - base["encoder_params"], "params_ratio": base["params"],
           "nonzero_ratio": base["nonzero"], "flops_ratio": base["flops_per_token"],
           "file_mb": m["file_bytes"] / 1e6, "sparse_file_mb": m["sparse_file_bytes"] / 1e6,
           "file_ratio": base["file_bytes"], "sparse_file_ratio": base["sparse_file_bytes"]}
    if "onnx_file_bytes" in m:
        row["onnx_file_mb"], row["onnx_file_ratio"] = m["onnx_file_bytes"] / 1e6, r["onnx_file_bytes"]
    for bs in map(str, spec["batch_sizes"]):
        row[f"latency_ratio_b{bs}"] = r[f"latency_b{bs}"]
        row[f"latency_ms_b{bs}"] = m["latency"][bs]["median_ms"]
    big = str(max(spec["batch_sizes"]))
    row["peak_memory_ratio"] = r.get(f"peak_memory_b{big}")
    return row


class SpeedStudy(DenseStudy):
    """The dense run of ``profile`` at ``seed`` and chapter 5's timed measurements against it. Each method returns
    ``{"measured_utc": str, "result": ...}``; times are milliseconds, ratios are model / dense."""

    def _timed(self, kind: str, compute, **more) -> dict:
        return self._measured(kind, _stamped(compute), machine=machine(), **more)

    def kernels(self, tokens: int, sparsities, repeats: int, device: str = "cpu") -> dict:
        """``kernel_sweep`` on the profile's FFN shape (``d_inner`` × ``d_model``) with ``tokens`` rows."""
        p = self.profile
        return self._timed("ch5-kernels", lambda: kernel_sweep(
            p.d_model, p.d_inner, tokens, list(sparsities), repeats=repeats, seed=self.seed, device=device),
            tokens=tokens, sparsities=list(sparsities), repeats=repeats, device=device)

    def latency(self, unstructured, structured: dict, batch_sizes, seq_len: int, repeats: int, device: str = "cpu",
                dtype: str = "fp32") -> dict:
        """The dense model, magnitude-masked copies at each weight sparsity of ``unstructured`` (masks made
        permanent: zeros in dense tensors) and the saved models of ``structured`` (``{name: run folder}``), all
        timed alternately in one loop per batch size (``bench.latency_sweep``).

        ``result``: one row per model and batch size with ``model``, ``batch``, ``median_ms``, ``iqr_ratio``,
        ``latency_ratio`` (to dense, same loop) and ``removed`` (weight sparsity, or the share of the encoder's
        parameters the run removed: ``encoder_removed`` of its metrics).
        """
        def compute():
            models, removed = {"dense": copy.deepcopy(self.model)}, {"dense": 0.0}   # .to() below is in place
            for s in unstructured:
                m = copy.deepcopy(self.model)
                WeightSparsity(s)(m, magnitude(m)).apply_masks(m)
                make_permanent(m)
                models[f"weights {s:.0%}"], removed[f"weights {s:.0%}"] = m, s
            for name, out in structured.items():
                models[name], removed[name] = load_saved(out).eval(), load_metrics(out)["encoder_removed"]
            models = {k: m.to(device=device, dtype=bench.DTYPES[dtype]) for k, m in models.items()}
            rows = []
            for b in batch_sizes:
                sweep = bench.latency_sweep(models, self.model.config.vocab_size, b, seq_len, repeats=repeats,
                                            seed=self.seed, device=device)
                rows += [{"model": name, "removed": removed[name], "batch": b, "median_ms": lat["median_ms"],
                          "iqr_ratio": lat["iqr_ratio"], "latency_ratio": lat["median_ms"] / sweep["dense"]["median_ms"]}
                         for name, lat in sweep.items()]
            return rows
        keys = {name: content_key(out) for name, out in structured.items()}
        return self._timed("ch5-latency", compute, unstructured=list(unstructured), structured=keys,
                           batch_sizes=list(batch_sizes), seq_len=seq_len, repeats=repeats, device=device, dtype=dtype)

    def bench(self, model_dir, spec: bench.BenchSpec) -> dict:
        """``bench.bench(model_dir, dense run, spec)``: sizes, parameters, FLOPs, latency and peak memory against
        the dense model, measured together in one process."""
        return self._timed("ch5-bench", lambda: bench.bench(model_dir, self.run_dir, spec),
                           pruned=content_key(model_dir), spec=asdict(spec))

    def export(self, model_dir, out, quantize: str | None = None) -> dict:
        """``export_run``: ``model_dir`` exported to ``out`` (ONNX, verified against PyTorch) and its test accuracy
        in PyTorch and ONNX Runtime (fp32, and int8 with ``quantize="int8"``). The record is cached (the file is
        written when it is first measured)."""
        return self._measured("ch5-export", lambda: export_run(model_dir, out, quantize, self.profile, self.seed),
                              pruned=content_key(model_dir), quantize=quantize)
