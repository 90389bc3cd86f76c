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


class SpeedStudy(DenseStudy):
    """The dense run of ``profile`` at ``seed`` and chapter 5's timed measurements against it. Each method returns
    ``{"measured_utc": str, "result": ...}``; times are milliseconds, ratios are model / dense."""

    def _timed(self, kind: str, compute, **more) -> dict:
        return self._measured(kind, _stamped(compute), machine=machine(), **more)

    def kernels(self, tokens: int, sparsities, repeats: int, device: str = "cpu") -> dict:
        """``bench.kernel_sweep`` on the profile's FFN shape (``d_inner`` × ``d_model``) with ``tokens`` rows."""
        p = self.profile
        return self._timed("ch5-kernels", lambda: bench.kernel_sweep(
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
