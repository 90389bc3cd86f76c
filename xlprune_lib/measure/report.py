"""Parameter tables and result records with provenance.

Every number here is counted from the model's tensors, never taken from what was requested.
"""
from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

import numpy
import torch
import transformers

from ..config import UserError, read_json, repo_root
from ..xlnet.masks import current_weight
from ..xlnet.structure import XLNetStructure

def parameter_breakdown(model) -> dict:
    """Parameters and nonzeros per component (``XLNetStructure.COMPONENTS``), counted from the tensors.

    Tied weights (the LM head's decoder shares the word embedding) are counted once, as
    ``model.parameters()`` does. Returns ``{"components": {name: {"params", "nonzero"}}, "total": ...}``.
    """
    comps = {c: {"params": 0, "nonzero": 0} for c in XLNetStructure.COMPONENTS}
    for name, p in effective_parameters(model):   # live masks: the masked tensor under its own name
        c = comps[XLNetStructure.component_of(name)]
        c["params"] += p.numel()
        c["nonzero"] += int((p.detach() != 0).sum())
    total = {k: sum(c[k] for c in comps.values()) for k in ("params", "nonzero")}
    return {"components": comps, "total": total}


def format_breakdown(table: dict) -> str:
    total = table["total"]["params"]
    lines = [f"{'component':<18}{'parameters':>14}{'share':>9}{'nonzero':>14}"]
    for name, c in table["components"].items():
        lines.append(f"{name:<18}{c['params']:>14,}{c['params'] / total:>9.1%}{c['nonzero']:>14,}")
    lines.append(f"{'total':<18}{total:>14,}{1:>9.0%}{table['total']['nonzero']:>14,}")
    return "\n".join(lines)


RESULT_PATHS = ("data/results",)   # what `make results` writes: changed there is not changed code


def git_commit() -> str | None:
    """The checked-out commit, with ``-dirty`` when a tracked file other than :data:`RESULT_PATHS` differs
    from it (``make results`` rewriting ``data/results`` does not make its own next run dirty); ``None``
    outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_root(), capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                *(f":(exclude){p}" for p in RESULT_PATHS)], cwd=repo_root(),
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() + ("-dirty" if dirty else "")) if out.returncode == 0 else None


def _version(distribution: str) -> str | None:
    """The installed version of an optional dependency (``None`` without it: the core install)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def provenance(config: dict) -> dict:
    """What a result record carries about where it came from: config, git commit, versions, machine."""
    return {
        "config": config,
        "git_commit": git_commit(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "datasets": _version("datasets"),
                     "numpy": numpy.__version__},
        "machine": {"platform": platform.platform(), "processor": platform.machine(),
                    "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
    }


METRICS = "metrics.json"   # every run folder's record: measurements, config and provenance


def load_metrics(run_dir) -> dict:
    """The ``metrics.json`` of a finished run folder."""
    return read_json(Path(run_dir) / METRICS)


# --- Per-layer report: parameters, nonzeros, heads, neurons, FLOPs per token, sizes -----------------------

LAYER_PARTS = {"attention.q": "attention", "attention.k": "attention", "attention.v": "attention",
               "attention.o": "attention", "attention.r": "attention", "relative_biases": "attention",
               "ffn": "ffn", "layer_norm": "layer_norm"}


def check_seq_len(seq_len: int) -> int:
    if int(seq_len) < 1:
        raise UserError(f"--seq-len must be >= 1, got {seq_len}")
    return int(seq_len)


def effective_parameters(module):
    """``(name, tensor)`` of every parameter as the forward pass sees it, tied weights once.

    A parameter pruned with ``torch.nn.utils.prune`` appears in ``named_parameters`` as ``w_orig``; it is
    reported under its own name ``w`` with the masked tensor ``w_orig * w_mask`` (``masks.current_weight``).
    The masks are buffers, not parameters, so they are never counted.
    """
    seen = set()
    for mod_name, mod in module.named_modules():
        for name, p in mod.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            if name.endswith("_orig") and hasattr(mod, name[:-len("_orig")] + "_mask"):
                name = name[:-len("_orig")]
                p = current_weight(mod, name)
            yield (f"{mod_name}.{name}" if mod_name else name), p.detach()


def _count(tensors) -> dict:
    tensors = list(tensors)
    return {"params": sum(t.numel() for t in tensors), "nonzero": sum(int((t != 0).sum()) for t in tensors)}


def _with_sparsity(c: dict) -> dict:
    return {**c, "sparsity": 1 - c["nonzero"] / c["params"] if c["params"] else 0.0}


def layer_flops(layer, seq_len: int) -> dict:
    """Encoder FLOPs per token of one ``XLNetLayer``, dense and sparse, for ``seq_len`` tokens and no memory.

    Counting as Kaplan et al. 2020 ("Scaling Laws for Neural Language Models", Table 1): a multiply-add is
    2 FLOPs, so a matrix with N weights applied to a token costs 2N. With H heads kept, ``d_head`` and
    ``inner`` FFN neurons kept:

    * q, k, v, o projections: ``2 * d_model * H * d_head`` each;
    * relative position projection r: applied once per sequence to the ``2 * seq_len`` relative positions
      (``klen + qlen``), so per token ``2 * (2 * seq_len) * d_model * H * d_head / seq_len``;
    * attention scores, content term AC and position term BD, and the weighted sum of values:
      ``3 * 2 * seq_len * H * d_head`` (BD counted over the ``seq_len`` keys each query attends to; the
      ``transformers`` code computes it over all ``2 * seq_len`` positions before ``rel_shift``). The segment
      term EF (2 segment classes per head) is tiny and ignored, as are biases, softmax and LayerNorm;
    * FFN: ``2 * d_model * inner * 2``.

    Sparse: the projection and FFN terms use ``2 * nonzero`` weights instead of ``2 * numel``; the attention
    score terms are unchanged.
    """
    attn, ff = layer.rel_attn, layer.ff
    q = current_weight(attn, "q")
    heads, d_head = int(q.shape[1]), int(q.shape[2])
    proj = {n: current_weight(attn, n) for n in ("q", "k", "v", "o")}
    r = current_weight(attn, "r")
    ffn = [current_weight(ff.layer_1, "weight"), current_weight(ff.layer_2, "weight")]
    scores = 3 * 2 * seq_len * heads * d_head

    def total(size):
        return (sum(2 * size(w) for w in proj.values()) + 2 * (2 * seq_len) * size(r) // seq_len
                + sum(2 * size(w) for w in ffn) + scores)

    return {"dense": total(lambda w: w.numel()), "sparse": total(lambda w: int((w != 0).sum()))}


def _layer_entry(layer, seq_len: int) -> dict:
    parts = {p: [] for p in ("attention", "ffn", "layer_norm")}
    for name, t in effective_parameters(layer):
        parts[LAYER_PARTS[XLNetStructure.component_of(name)]].append(t)
    flops = layer_flops(layer, seq_len)
    return {**{p: _count(ts) for p, ts in parts.items()},
            "heads": int(current_weight(layer.rel_attn, "q").shape[1]),
            "neurons": int(layer.ff.layer_1.out_features),
            "flops_per_token": flops["dense"], "flops_per_token_sparse": flops["sparse"]}


def tensor_sizes(model) -> dict:
    """Bytes of the weights a checkpoint stores: dense, and with a bitmap-plus-values sparse encoding.

    Over the effective state (parameters as the forward pass sees them, tied weights once, plus persistent
    buffers other than pruning masks). ``dense_bytes = sum(numel * element_size)``. ``sparse_bytes``: each
    tensor stored either dense or as a bitmap of its nonzero positions (``ceil(numel / 8)`` bytes) followed
    by the ``nnz`` nonzero values (``nnz * element_size``), whichever is smaller; index metadata ignored.
    """
    tensors = [t for _, t in effective_parameters(model)]
    tensors += [b for name, b in model.named_buffers() if not name.endswith("_mask")]
    dense = sparse = 0
    for t in tensors:
        d = t.numel() * t.element_size()
        dense += d
        sparse += min(d, -(-t.numel() // 8) + int((t != 0).sum()) * t.element_size())
    return {"dense_bytes": dense, "sparse_bytes": sparse}


def prunable_target(model, model_fraction: float) -> float:
    """The sparsity of the prunable set (what ``select.WeightSparsity`` asks for) that makes ``model_fraction`` of
    the *whole* model zero, counting the zeros the model already has outside the prunable set. Capped at 0.99:
    a whole-model fraction beyond the prunable set's share cannot be reached by pruning it.

    Fractions in [0, 1]. Raises ``ValueError`` outside that range.
    """
    if not 0.0 <= model_fraction <= 1.0:
        raise ValueError(f"model_fraction must be in [0, 1], got {model_fraction}")
    totals = layer_report(model)["totals"]
    total, prunable = totals["model"]["params"], totals["prunable"]["params"]
    outside = totals["model"]["sparsity"] * total - totals["prunable"]["sparsity"] * prunable
    return min(max(model_fraction * total - outside, 0.0) / prunable, 0.99)


def layer_report(model, seq_len: int = 128) -> dict:
    """Per-layer parameters, nonzeros, heads, neurons and FLOPs per token of any XLNet model, with totals.

    Everything is counted from the tensors (after surgery layers differ; pruned weights are counted as the
    masked tensors, and exact zeros count as pruned). ``totals``: the prunable set of
    ``XLNetStructure.prunable``, the whole model (tied weights once), the parameters outside the layers
    (embeddings, classifier or LM head) and the encoder FLOPs per token (see :func:`layer_flops`; the
    embedding lookup is 0 FLOPs and the classifier head, applied once per sequence, is excluded).
    """
    seq_len = check_seq_len(seq_len)
    layers = [_layer_entry(layer, seq_len) for layer in XLNetStructure(model).layers]
    everything = list(effective_parameters(model))
    layer_ids = {id(layer) for layer in XLNetStructure(model).layers}
    prefixes = tuple(f"{name}." for name, mod in model.named_modules() if id(mod) in layer_ids)
    outside = [t for name, t in everything if not name.startswith(prefixes)]
    totals = {
        "prunable": _with_sparsity(_count(current_weight(m, n) for m, n in XLNetStructure(model).prunable())),
        "model": _with_sparsity(_count(t for _, t in everything)),
        "outside_layers": _count(outside),
        "flops_per_token": sum(layer["flops_per_token"] for layer in layers),
        "flops_per_token_sparse": sum(layer["flops_per_token_sparse"] for layer in layers),
    }
    return {"layers": layers, "totals": totals, "sizes": tensor_sizes(model), "seq_len": seq_len}


def checkpoint_sizes(model_dir) -> dict:
    """Bytes on disk of the model's ``model*.safetensors`` files in a saved folder (total and per file): the
    weights (one file, shards, or the sparse format), not other tensors kept beside them (an ``iterate``
    round's ``state.safetensors`` of masks and movement scores)."""
    files = {p.name: p.stat().st_size for p in sorted(Path(model_dir).glob("model*.safetensors"))}
    return {"file_bytes": sum(files.values()), "files": files}


def format_layer_report(report: dict) -> str:
    """A fixed-width table: one row per layer, then the totals and sizes."""
    lines = [f"{'layer':>5}{'heads':>7}{'neurons':>9}{'attn params':>13}{'nonzero':>11}{'ffn params':>12}"
             f"{'nonzero':>11}{'MFLOPs/tok':>12}{'sparse':>9}"]
    for i, layer in enumerate(report["layers"]):
        a, f = layer["attention"], layer["ffn"]
        lines.append(f"{i:>5}{layer['heads']:>7}{layer['neurons']:>9}{a['params']:>13,}{a['nonzero']:>11,}"
                     f"{f['params']:>12,}{f['nonzero']:>11,}{layer['flops_per_token'] / 1e6:>12.3f}"
                     f"{layer['flops_per_token_sparse'] / 1e6:>9.3f}")
    t, s = report["totals"], report["sizes"]
    for key, label in (("prunable", "prunable set"), ("model", "whole model")):
        lines.append(f"{label:<14}{t[key]['params']:>14,} params {t[key]['nonzero']:>14,} nonzero"
                     f"   sparsity {t[key]['sparsity']:.1%}")
    lines.append(f"{'FLOPs/token':<14}{t['flops_per_token']:>14,} dense  {t['flops_per_token_sparse']:>14,} sparse"
                 f"   (seq_len {report['seq_len']}, encoder only)")
    mb = [f"dense {s['dense_bytes'] / 1e6:.3f} MB", f"sparse {s['sparse_bytes'] / 1e6:.3f} MB"]
    if "file_bytes" in s:
        mb.append(f"files {s['file_bytes'] / 1e6:.3f} MB")
    lines.append(f"{'size':<14}" + ", ".join(mb))
    return "\n".join(lines)
