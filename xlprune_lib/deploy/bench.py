"""Latency, throughput, peak memory, size, parameters and FLOPs of a pruned model against its baseline.

This is a benchmark, not a test: numbers depend on the machine and on what else runs on it. To make the two
models comparable on a noisy, shared machine they are measured in one process, alternately: after a warm-up,
every repetition times one forward pass of each model, in a freshly shuffled order (seeded), so that slow
drift (another job, frequency scaling) hits all models alike, and each timed pass right after an untimed pass
of the same model, so that none inherits another's caches or sleeping threads. Reported: the median and the
inter-quartile range of the per-batch latency, and the throughput ``batch / median``. Compare the *ratios*
pruned / baseline measured in one run; absolute times from different runs are not comparable.

Peak memory, at the largest batch size only (where activations matter). On a GPU: the model's own resident
tensors plus what ``torch.cuda.max_memory_allocated`` shows one forward pass adding (weights + activations;
the other model resident beside it does not count). On a CPU the allocator keeps no such counter, so each
model is loaded in a fresh Python process and the kernel's resident-set high-water mark (``VmHWM``) is read:
reset after loading (``/proc/self/clear_refs``) and read after one forward pass. The figure reported is the
peak above the process's footprint once torch and transformers are imported, i.e. weights plus activations.

With ``--semi-structured`` (CUDA, bf16 or fp16) the pruned model's 2:4 matrices run on the sparse tensor cores
(``semi_structured.py``, Mishra et al. 2021); the largest logit difference that makes on one batch is reported.

Sizes on disk: the model's ``*.safetensors`` files as saved, and the same weights written with the sparse
bitmask format of ``sparse.py`` (smaller only when the weights hold zeros). Parameters, nonzeros and encoder
FLOPs per token are counted from the tensors by ``report.layer_report``.
"""
from __future__ import annotations

import argparse
import functools
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..measure.report import checkpoint_sizes, layer_report, provenance
from ..measure.sparse import SPARSE_FILE, load_model, save_sparse
from .. import validate
from ..config import UserError, option
from .onnx import OnnxClassifier, check_quantize, quantize_int8, to_onnx
from .semi_structured import semi_structured_checked
from ..xlnet.modeling import check_supported
from ..xlnet.structure import XLNetStructure

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
RUNTIMES = ("torch", "onnxruntime")
INT8 = "model_int8"    # the entry of the pruned model quantized to int8


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """``"1,32"`` -> ``(1, 32)``; anything else is a one-line user error."""
    try:
        sizes = tuple(int(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        raise UserError(f"--batch-sizes takes comma-separated integers such as 1,32, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise UserError(f"--batch-sizes takes positive integers, got {text!r}")
    return sizes



@dataclass
class BenchSpec:
    """What to measure: batch sizes, tokens per sequence, repetitions, device and dtype (each field is also an
    option of ``xlprune bench``)."""
    batch_sizes: tuple[int, ...] = option((1, 32), parse=parse_batch_sizes, help="comma-separated, e.g. 1,32")
    seq_len: int = option(64, help="tokens per sequence")
    warmup: int = option(3, help="untimed passes first")
    repeats: int = option(15, help="timed forward passes per model")
    device: str = option("cpu", help="cpu or cuda")
    dtype: str = option("fp32", help=f"{', '.join(DTYPES)} (fp16: GPU only)")
    memory: bool = option(True, help="skip the peak-memory measurement")
    seed: int = option(0, help="seed of the random inputs")
    runtime: str = option("torch", help=f"{' or '.join(RUNTIMES)}: onnxruntime times both models exported to "
                                         "ONNX (onnx.to_onnx), on the CPU in fp32")
    quantize: str | None = option(None, help="int8: also time the pruned model with int8 weights "
                                             "(ONNX Runtime dynamic quantization; --runtime onnxruntime)")
    semi_structured: bool = option(False, help="run the pruned model's 2:4 weights on sparse tensor cores "
                                               "(torch.sparse.to_sparse_semi_structured; --device cuda, bf16 "
                                               "or fp16, a model pruned with --granularity 2:4)")

    def check(self) -> "BenchSpec":
        validate.finite_fields(self)
        if not self.batch_sizes or any(int(b) < 1 for b in self.batch_sizes):
            raise UserError(f"--batch-sizes must be positive integers, got {list(self.batch_sizes)}")
        if self.seq_len < 1 or self.warmup < 0 or self.repeats < 1:
            raise UserError("--seq-len and --repeats must be >= 1, --warmup >= 0")
        if self.dtype not in DTYPES:
            raise UserError(f"unknown dtype {self.dtype!r}; valid: {', '.join(DTYPES)}")
        if self.device not in ("cpu", "cuda"):
            raise UserError(f"unknown device {self.device!r}; valid: cpu, cuda")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is visible to torch")
        if self.device == "cpu" and self.dtype == "fp16":
            raise UserError("fp16 inference is a GPU format; use fp32 or bf16 on a CPU")
        if self.runtime not in RUNTIMES:
            raise UserError(f"unknown runtime {self.runtime!r}; valid: {', '.join(RUNTIMES)}")
        if self.runtime == "onnxruntime" and (self.device, self.dtype) != ("cpu", "fp32"):
            raise UserError("--runtime onnxruntime runs the exported fp32 graph on the CPU: use --device cpu "
                            "--dtype fp32 (and --quantize int8 for int8)")
        check_quantize(self.quantize)
        if self.quantize and self.runtime != "onnxruntime":
            raise UserError("--quantize int8 is ONNX Runtime's dynamic quantization: add --runtime onnxruntime")
        if self.semi_structured and ((self.device, self.runtime) != ("cuda", "torch")
                                     or self.dtype not in ("bf16", "fp16")):
            raise UserError("--semi-structured runs on an NVIDIA GPU's sparse tensor cores: use --device cuda "
                            "with --dtype bf16 or fp16 (PyTorch runtime)")
        return self


def example_inputs(vocab_size: int, batch: int, seq_len: int, seed: int = 0, device: str = "cpu") -> dict:
    """A batch of random token ids (no padding: every model sees the same full-length work)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, max(11, vocab_size), (batch, seq_len), generator=g)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _forward(model, inputs: dict) -> None:
    with torch.inference_mode():
        model(**inputs, use_mems=False)


def alternate(fns: dict, warmup: int, repeats: int, device: str, seed: int = 0) -> dict[str, list[float]]:
    """Seconds per call of every function, all timed in every repetition, in a fresh random order each time.

    The seeded shuffle spreads slow drift over all functions alike. Each timed call directly follows an untimed
    call of the same function, so no function inherits another's state: caches filled by a different model,
    or worker threads that went to sleep during a sparse kernel (measured here: whatever ran after the CSR
    kernel was about 20% slower).
    """
    order = random.Random(seed)
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    times = {name: [] for name in names}
    for _ in range(repeats):
        order.shuffle(names)
        for name in names:
            fns[name]()
            _sync(device)
            start = time.perf_counter()
            fns[name]()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def time_alternating(models: dict, inputs: dict, warmup: int, repeats: int, device: str) -> dict[str, list[float]]:
    """Seconds per forward pass of every model, timed in turn (:func:`alternate`)."""
    return alternate({k: functools.partial(_forward, m, inputs) for k, m in models.items()}, warmup, repeats,
                     device)


def summarize(seconds: list[float], batch: int) -> dict:
    """Median, quartiles and minimum in milliseconds, throughput in sequences per second."""
    q = statistics.quantiles(seconds, n=4) if len(seconds) > 1 else [seconds[0]] * 3
    med = statistics.median(seconds)
    return {"median_ms": med * 1e3, "q1_ms": q[0] * 1e3, "q3_ms": q[2] * 1e3, "min_ms": min(seconds) * 1e3,
            "iqr_ratio": (q[2] - q[0]) / med, "throughput": batch / med, "repeats": len(seconds)}


# --- memory --------------------------------------------------------------------------------------------------

def _rss_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _cpu_peak_child(model_dir: str, batch: int, seq_len: int, dtype: str, seed: int) -> dict:
    """In a fresh process: the resident high-water mark of one forward pass above the imported runtime."""
    import transformers  # noqa: F401  (part of the runtime baseline, not of the model)


    base = _rss_kib("VmRSS")
    model = load_model(model_dir).to(DTYPES[dtype]).eval()
    inputs = example_inputs(model.config.vocab_size, batch, seq_len, seed)
    loaded = _rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    _forward(model, inputs)
    return {"peak_bytes": (_rss_kib("VmHWM") - base) * 1024, "loaded_bytes": (loaded - base) * 1024}


def cpu_peak_memory(model_dir, batch: int, seq_len: int, dtype: str = "fp32", seed: int = 0) -> dict:
    """:func:`_cpu_peak_child` in a subprocess (``python -m xlprune_lib.deploy.bench peak ...``)."""
    if not Path("/proc/self/clear_refs").exists():
        return {"peak_bytes": None, "loaded_bytes": None}
    cmd = [sys.executable, "-m", "xlprune_lib.deploy.bench", "peak", str(model_dir), str(batch), str(seq_len), dtype,
           str(seed)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"peak-memory child failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def resident_bytes(model) -> int:
    """Bytes that ``model``'s own parameters and buffers hold on their device: a semi-structured tensor counts
    its packed values and metadata, a ``meta`` placeholder nothing, a tied tensor once."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) in seen or t.device.type == "meta":
            continue
        seen.add(id(t))
        parts = [getattr(t, a, None) for a in ("packed", "meta", "packed_t", "meta_t")]
        parts = [x for x in parts if isinstance(x, torch.Tensor)] or [t]
        total += sum(x.numel() * x.element_size() for x in parts)
    return total


def cuda_peak_memory(model, inputs: dict) -> dict:
    """Peak GPU memory of one forward pass of ``model`` alone: its own resident tensors (:func:`resident_bytes`)
    plus the most the pass allocated above what was resident before it, so other models on the same GPU do not
    count."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    _forward(model, inputs)
    torch.cuda.synchronize()
    own = resident_bytes(model)
    return {"peak_bytes": own + torch.cuda.max_memory_allocated() - before, "loaded_bytes": own}


# --- sizes, parameters, FLOPs ----------------------------------------------------------------------------

def static_measures(model, model_dir, seq_len: int) -> dict:
    """Parameters, nonzeros, encoder FLOPs per token and bytes on disk (dense file and sparse format)."""
    rep = layer_report(model, seq_len)["totals"]
    with tempfile.TemporaryDirectory() as tmp:
        sparse = Path(tmp) / "sparse"
        save_sparse(model, sparse)
        sparse_bytes = (sparse / SPARSE_FILE).stat().st_size
    return {"params": rep["model"]["params"], "nonzero": rep["model"]["nonzero"],
            "prunable_params": rep["prunable"]["params"], "prunable_nonzero": rep["prunable"]["nonzero"],
            "prunable_sparsity": rep["prunable"]["sparsity"], "encoder_params": XLNetStructure(model).encoder_params(),
            "flops_per_token": rep["flops_per_token"],
            "flops_per_token_sparse": rep["flops_per_token_sparse"],
            "file_bytes": checkpoint_sizes(model_dir)["file_bytes"], "sparse_file_bytes": sparse_bytes}


RATIO_KEYS = ("params", "nonzero", "encoder_params", "flops_per_token", "flops_per_token_sparse", "file_bytes",
              "sparse_file_bytes")


def bench(model_dir, baseline_dir, spec: BenchSpec | None = None) -> dict:
    """Measure ``model_dir`` against ``baseline_dir`` (see the module docstring); return one JSON-able dict.

    Entries ``baseline`` and ``model`` (and ``model_int8`` with ``spec.quantize``), each with its static
    measures, ``latency`` per batch size and ``memory`` (PyTorch only); ``ratios``: model / baseline (and
    ``ratios_int8``). With ``spec.runtime == "onnxruntime"`` every entry also has ``onnx_file_bytes`` and
    ``max_abs_logit_difference`` (ONNX Runtime against PyTorch on the first batch; for int8, what quantization
    changes).
    """
    spec = (spec or BenchSpec()).check()
    dirs = {"model": Path(model_dir), "baseline": Path(baseline_dir)}
    for d in dirs.values():   # both refused before either is loaded
        check_supported(d)
    models = {k: load_model(d).eval() for k, d in dirs.items()}
    vocab = {m.config.vocab_size for m in models.values()}
    if len(vocab) != 1:
        raise UserError(f"the two models have different vocabularies ({sorted(vocab)}): not the same task")
    vocab_size = vocab.pop()
    out = {k: {"path": str(d), **static_measures(models[k], d, spec.seq_len), "latency": {}, "memory": {}}
           for k, d in dirs.items()}
    models = {k: m.to(device=spec.device, dtype=DTYPES[spec.dtype]) for k, m in models.items()}
    if spec.semi_structured:   # converted after the static measures, which read the dense tensors
        out["model"].update(semi_structured_checked(
            models["model"], example_inputs(vocab_size, 2, spec.seq_len, spec.seed, spec.device)))
    with tempfile.TemporaryDirectory() as tmp:
        if spec.runtime == "onnxruntime":
            example = example_inputs(vocab_size, 2, spec.seq_len, spec.seed)   # batch > 1: nothing traced as 1
            models = _onnx_models(models, example, spec, Path(tmp), out)
        for b in spec.batch_sizes:
            inputs = example_inputs(vocab_size, b, spec.seq_len, spec.seed, spec.device)
            times = time_alternating(models, inputs, spec.warmup, spec.repeats, spec.device)
            for k in models:
                out[k]["latency"][str(b)] = summarize(times[k], b)
                if spec.memory and spec.runtime == "torch" and b == max(spec.batch_sizes):
                    out[k]["memory"][str(b)] = (cuda_peak_memory(models[k], inputs) if spec.device == "cuda" else
                                                cpu_peak_memory(dirs[k], b, spec.seq_len, spec.dtype, spec.seed))
    r = {"ratios": ratios(out["model"], out["baseline"], spec)}
    if INT8 in out:
        r["ratios_int8"] = ratios(out[INT8], out["baseline"], spec)
    return {"spec": asdict(spec), "threads": torch.get_num_threads(), **out, **r,
            **provenance({"bench": asdict(spec), "model": str(model_dir), "baseline": str(baseline_dir)})}


def _onnx_models(models: dict, example: dict, spec: BenchSpec, tmp: Path, out: dict) -> dict:
    """ONNX Runtime sessions of the exported models (and of the pruned one quantized to int8), with their file
    sizes and logit differences recorded in ``out``."""
    sessions = {}
    with torch.inference_mode():
        want = {k: m(**example, use_mems=False).logits for k, m in models.items()}
    for k, m in models.items():
        sessions[k] = OnnxClassifier(to_onnx(m, example, tmp / f"{k}.onnx"))
    if spec.quantize:
        sessions[INT8] = OnnxClassifier(quantize_int8(tmp / "model.onnx", tmp / f"{INT8}.onnx"))
        out[INT8] = {**out["model"], "path": f"{out['model']['path']} (int8)", "latency": {}, "memory": {}}
    for k, session in sessions.items():
        got = session(**example).logits
        out[k]["onnx_file_bytes"] = session.path.stat().st_size
        out[k]["max_abs_logit_difference"] = float((got - want["model" if k == INT8 else k]).abs().max())
    return sessions


def ratios(m: dict, b: dict, spec: BenchSpec) -> dict:
    """``m`` / ``b`` (pruned / baseline) for every measure (latency: of the medians; memory: of the peaks)."""

    def div(x, y):
        return x / y if x is not None and y else None

    r = {k: div(m[k], b[k]) for k in RATIO_KEYS}
    if "onnx_file_bytes" in m:
        r["onnx_file_bytes"] = div(m["onnx_file_bytes"], b["onnx_file_bytes"])
    for bs in map(str, spec.batch_sizes):
        r[f"latency_b{bs}"] = div(m["latency"][bs]["median_ms"], b["latency"][bs]["median_ms"])
        r[f"throughput_b{bs}"] = div(m["latency"][bs]["throughput"], b["latency"][bs]["throughput"])
        if bs in m["memory"]:
            r[f"peak_memory_b{bs}"] = div(m["memory"][bs]["peak_bytes"], b["memory"][bs]["peak_bytes"])
    return r


def format_bench(result: dict) -> str:
    """A fixed-width table: baseline, pruned (and pruned int8), and the ratios to the baseline."""
    spec, b = result["spec"], result["baseline"]
    cols = [("pruned", result["model"], result["ratios"])]
    if INT8 in result:
        cols.append(("pruned int8", result[INT8], result["ratios_int8"]))
    lines = [f"{spec.get('runtime', 'torch')} on {spec['device']} ({result['threads']} threads), {spec['dtype']}, "
             f"seq_len {spec['seq_len']}, {spec['repeats']} alternating repetitions after {spec['warmup']} warm-up",
             f"{'':<30}{'baseline':>16}" + "".join(f"{name:>16}{'ratio':>9}" for name, _, _ in cols)]

    def row(label, key, fmt="{:,.0f}", scale=1.0, ratio_key=None):
        cell = (lambda v: "n/a" if v is None else fmt.format(v * scale))
        line = f"{label:<30}{cell(key(b)):>16}"
        for _, m, r in cols:
            ratio = r.get(ratio_key)
            line += f"{cell(key(m)):>16}{'n/a' if ratio is None else f'{ratio:.3f}':>9}"
        lines.append(line)

    for label, k in (("parameters", "params"), ("nonzero parameters", "nonzero"),
                     ("encoder parameters", "encoder_params"), ("encoder FLOPs/token (dense)", "flops_per_token"),
                     ("encoder FLOPs/token (sparse)", "flops_per_token_sparse")):
        row(label, lambda e, k=k: e[k], ratio_key=k)
    row("checkpoint MB", lambda e: e["file_bytes"], "{:,.2f}", 1e-6, "file_bytes")
    row("sparse-format MB", lambda e: e["sparse_file_bytes"], "{:,.2f}", 1e-6, "sparse_file_bytes")
    if "onnx_file_bytes" in b:
        row("ONNX file MB", lambda e: e["onnx_file_bytes"], "{:,.2f}", 1e-6, "onnx_file_bytes")
        row("max |logit - torch|", lambda e: e["max_abs_logit_difference"], "{:.1e}")
    for bs in map(str, spec["batch_sizes"]):
        line = f"{f'latency b={bs} ms (median, IQR)':<30}"
        for e, r in [(b, None)] + [(m, r) for _, m, r in cols]:
            lat = e["latency"][bs]
            line += f"{lat['median_ms']:>9.2f} ±{lat['q3_ms'] - lat['q1_ms']:>5.2f}"
            line += "" if r is None else f"{r[f'latency_b{bs}']:>9.3f}"
        lines.append(line)
        row(f"throughput b={bs} seq/s", lambda e: e["latency"][bs]["throughput"], "{:,.1f}",
            ratio_key=f"throughput_b{bs}")
        if bs in b["memory"]:
            row(f"peak memory b={bs} MB", lambda e: e["memory"].get(bs, {}).get("peak_bytes"), "{:,.1f}", 1e-6,
                f"peak_memory_b{bs}")
    if "semi_structured_weights" in (m := result["model"]):
        lines.append(f"semi-structured 2:4 matrices: {m['semi_structured_weights']}, max |logit difference| against "
                     f"the same weights run dense: {m['max_abs_logit_difference']:.1e}")
    return "\n".join(lines)


def latency_sweep(models: dict, vocab_size: int, batch: int, seq_len: int, warmup: int = 2, repeats: int = 10,
                  device: str = "cpu", seed: int = 0) -> dict[str, dict]:
    """Latency summaries of several in-memory models timed alternately in one loop (see :func:`time_alternating`)."""
    inputs = example_inputs(vocab_size, batch, seq_len, seed, device)
    times = time_alternating(models, inputs, warmup, repeats, device)
    return {k: summarize(v, batch) for k, v in times.items()}


def _main(argv=None) -> int:
    """``python -m xlprune_lib.deploy.bench peak DIR BATCH SEQ_LEN DTYPE SEED``: the child of :func:`cpu_peak_memory`."""
    p = argparse.ArgumentParser(prog="python -m xlprune_lib.deploy.bench")
    p.add_argument("what", choices=["peak"])
    p.add_argument("model_dir")
    p.add_argument("batch", type=int)
    p.add_argument("seq_len", type=int)
    p.add_argument("dtype")
    p.add_argument("seed", type=int)
    a = p.parse_args(argv)
    print(json.dumps(_cpu_peak_child(a.model_dir, a.batch, a.seq_len, a.dtype, a.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
