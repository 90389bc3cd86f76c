"""Sparse storage for unstructured-pruned models: a bitmask and the nonzero values, in safetensors.

A weight-pruned checkpoint written the usual way is exactly as large as the dense one, because the zeros are
stored. Here every tensor whose zeros make it worthwhile is stored as a packed bitmask (one bit per entry,
``numpy.packbits``) plus its nonzero values in order; the others are stored dense. Shapes, dtypes and the
tensors shared by several names (tied embeddings) go into the safetensors metadata. :func:`load_sparse`
rebuilds the model from ``config.json`` and restores every tensor bit-for-bit. No pickle anywhere.

A bitmask costs ``n / 8`` bytes, so a tensor of ``b``-byte values pays off once more than ``1 / (8 b)`` of it
is zero (3.1% for fp32); CSR-style int32 indices would need more than half of it zero.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import XLNetForSequenceClassification

from ..config import UserError, atomic_dir, damaged
from ..xlnet.masks import effective_state_dict
from ..xlnet.modeling import check_saveable, consumer_ready, load_saved, saved_class

SPARSE_FILE = "model.sparse.safetensors"


def encode(tensor: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """``{"mask": packed bits, "values": nonzeros}`` when that is smaller than ``tensor``, else ``None``."""
    flat = tensor.detach().reshape(-1).contiguous()
    nonzero = flat != 0
    n, nnz = flat.numel(), int(nonzero.sum())
    if n == 0 or (n + 7) // 8 + nnz * flat.element_size() >= n * flat.element_size():
        return None
    bits = torch.from_numpy(np.packbits(nonzero.cpu().numpy()))
    return {"mask": bits, "values": flat[nonzero].clone()}


def decode(mask: torch.Tensor, values: torch.Tensor, shape) -> torch.Tensor:
    """The dense tensor of :func:`encode`'s output (zeros where the mask bit is 0)."""
    n = int(np.prod(shape)) if len(shape) else 1
    keep = torch.from_numpy(np.unpackbits(mask.numpy(), count=n).astype(bool))
    out = torch.zeros(n, dtype=values.dtype)
    out[keep] = values
    return out.reshape(shape)


def save_sparse(model, out: Path | str, tokenizer=None) -> Path:
    """Write ``config.json``, the tokenizer and ``model.sparse.safetensors`` into ``out`` (atomically).

    A model with live ``torch.nn.utils.prune`` masks is stored as its masked tensors, byte for byte what the
    same model made permanent gives; a gated model is refused (``modeling.check_saveable``).
    """

    out = Path(out)
    check_saveable(model)
    tensors, meta, seen = {}, {}, {}
    for name, t in effective_state_dict(model).items():   # live masks: the masked tensors
        key = (t.data_ptr(), t.shape, t.dtype) if t.numel() else None
        if key in seen:                       # a tied tensor: stored once, restored under both names
            meta[name] = {"alias": seen[key]}
            continue
        if key is not None:
            seen[key] = name
        packed = encode(t)
        meta[name] = {"shape": list(t.shape), "sparse": packed is not None}
        if packed is None:
            tensors[name] = t.detach().contiguous().cpu()
        else:
            tensors[f"{name}::mask"], tensors[f"{name}::values"] = packed["mask"], packed["values"].cpu()
    with atomic_dir(out) as tmp:
        config = copy.deepcopy(model.config)
        config.architectures = [type(model).__name__]
        if isinstance(model, XLNetForSequenceClassification):
            config.use_mems_eval = False   # batched consumers need outputs without mems (modeling.classifier_fields)
        config.save_pretrained(str(tmp))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        save_file(tensors, str(tmp / SPARSE_FILE), metadata={"xlprune_sparse": json.dumps(meta)})
    return out


def load_sparse(folder: Path | str):
    """The model saved by :func:`save_sparse`, every tensor restored exactly, in eval mode."""

    folder = Path(folder)
    path = folder / SPARSE_FILE
    if not path.is_file() or not (folder / "config.json").is_file():
        raise UserError(f"{folder} is not a sparse checkpoint (needs config.json and {SPARSE_FILE})")
    cls, config = saved_class(folder)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["xlprune_sparse"])
            raw = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for truncated or foreign files
        raise damaged(path, exc) from None
    state = {}
    for name, m in meta.items():
        if "alias" not in m:
            state[name] = (decode(raw[f"{name}::mask"], raw[f"{name}::values"], m["shape"]) if m["sparse"]
                           else raw[name])
    for name, m in meta.items():
        if "alias" in m:
            state[name] = state[m["alias"]]
    model = cls(config)
    model.load_state_dict(state, strict=True)
    return consumer_ready(model).eval()


def load_model(folder: Path | str):
    """Any saved model folder: a sparse checkpoint through :func:`load_sparse`, else ``modeling.load_saved``."""
    folder = Path(folder)
    if (folder / SPARSE_FILE).is_file() and not (folder / "model.safetensors").is_file():
        return load_sparse(folder)
    return load_saved(folder).eval()
