"""Benchmark on a CUDA GPU: dense vs structured 50% vs 2:4 at xlnet-base-cased's shape, in bf16.

Random weights of ``xlnet-base-cased``'s shape (``deploy.base_shape``: speed depends on shapes, not values):
the dense model, the same with 50% of its encoder parameters removed (heads and neurons, ``EncoderBudget``), and
the same with 2:4 semi-structured sparsity (``select.NM``; Mishra et al. 2021). For 2:4 every prunable matrix
(``q, k, v, o, r`` and the FFN) is converted with ``torch.sparse.to_sparse_semi_structured``
(``deploy.semi_structured``, the code of ``xlprune bench --semi-structured``) so that its products run on the
sparse tensor cores; the largest logit difference this makes against the same weights run dense is printed
and recorded. Per batch
size the three models are timed alternately (``bench.alternate``), then each one's peak memory is read
(``bench.cuda_peak_memory``: its own tensors plus what one forward pass adds). Rows go to a CSV with the device named, and a
``.provenance.json`` beside it.

    python scripts/bench_gpu.py --out data/results/05_speed_gpu.csv

Without a CUDA device it stops with one line and exit code 2. Tests never run it.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from xlprune_lib.book.results import save_script_table
from xlprune_lib.config import UserError
from xlprune_lib.deploy.base_shape import BASE_SHAPE, shaped_models
from xlprune_lib.deploy.semi_structured import semi_structured_checked
from xlprune_lib.deploy.bench import alternate, cuda_peak_memory, example_inputs, parse_batch_sizes, summarize
from xlprune_lib.prune.importance import score
from xlprune_lib.prune.select import NM
from xlprune_lib.xlnet.masks import copy_model, make_permanent
from xlprune_lib.xlnet.structure import XLNetStructure


def two_of_four(model):
    """2:4 masks on the prunable set (magnitude scores), made permanent. Returns ``model``."""
    NM(2, 4)(model, score(model, "magnitude", "weight")).apply_masks(model)
    make_permanent(model)
    return model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("data/results/05_speed_gpu.csv"))
    p.add_argument("--batch-sizes", type=parse_batch_sizes, default=(1, 32, 128))
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=30)
    a = p.parse_args(argv)
    try:
        if not torch.cuda.is_available():
            raise UserError("no CUDA device is visible to torch: this benchmark needs a GPU")
        rows = measure(a)
    except UserError as exc:
        print(f"bench_gpu: error: {exc}", file=sys.stderr)
        return 2
    save_script_table(rows, "05_speed_gpu", a.out, {"script": "scripts/bench_gpu.py", "shape": BASE_SHAPE,
                                                    **{k: v for k, v in vars(a).items() if k != "out"}})
    for r in rows:
        print(f"{r['model']:<14} b={r['batch']:<4} {r['median_ms']:9.3f} ms  x{r['latency_ratio']:.3f}  "
              f"{r['throughput']:10.1f} seq/s  peak {r['peak_memory_mb']:9.1f} MB")
    print(f"wrote {a.out}")
    return 0


def measure(a) -> list[dict]:
    device = torch.cuda.get_device_name(0)
    models = shaped_models((0.5,))
    dense, structured = models["dense"], models[0.5]
    named = {"dense": dense, "structured-50%": structured, "2:4": two_of_four(copy_model(dense))}
    encoder = {k: XLNetStructure(m).encoder_params() for k, m in named.items()}
    named = {k: m.to(device="cuda", dtype=torch.bfloat16).eval() for k, m in named.items()}
    # every prunable matrix (q, k, v, o, r and the FFN) on the sparse tensor cores, checked against dense
    check = semi_structured_checked(named["2:4"], example_inputs(BASE_SHAPE["vocab_size"], 2, a.seq_len, 0, "cuda"))
    converted, moved = check["semi_structured_weights"], check["max_abs_logit_difference"]
    print(f"2:4: {converted} matrices on sparse tensor cores; max |logit difference| against the same weights "
          f"run dense: {moved:.2e}")
    rows = []
    for batch in a.batch_sizes:
        inputs = example_inputs(BASE_SHAPE["vocab_size"], batch, a.seq_len, 0, "cuda")

        def forward(model):
            with torch.inference_mode():
                model(**inputs, use_mems=False)

        times = alternate({k: (lambda m=m: forward(m)) for k, m in named.items()}, a.warmup, a.repeats, "cuda")
        dense_ms = statistics.median(times["dense"]) * 1e3
        for k, model in named.items():
            t = summarize(times[k], batch)
            peak = cuda_peak_memory(model, inputs)["peak_bytes"]
            rows.append({"device": device, "model": k, "dtype": "bf16", "batch": batch, "seq_len": a.seq_len,
                         "median_ms": t["median_ms"], "q1_ms": t["q1_ms"], "q3_ms": t["q3_ms"],
                         "latency_ratio": t["median_ms"] / dense_ms, "throughput": t["throughput"],
                         "peak_memory_mb": peak / 1e6, "encoder_params": encoder[k],
                         "semi_structured_weights": converted if k == "2:4" else 0,
                         "max_abs_logit_difference": moved if k == "2:4" else 0.0, "repeats": a.repeats})
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
