"""Speed at ``xlnet-base-cased``'s shape, without its weights.

Latency depends on the shapes of the tensors, not on their values, so the speed-up that structured pruning
buys at the size of the published XLNet (Yang et al. 2019: 12 layers, d_model 768, 12 heads, FFN 3072) can be
measured on a randomly initialised model of that shape, with no hub access. Heads and neurons are removed by
an encoder budget (``select.EncoderBudget``, the rule of ``--granularity head+neuron``) on magnitude scores;
which units go barely matters for speed, how many does. All models are timed alternately in one loop
(``bench.latency_sweep``), so the ratios to dense are comparable within one run.
"""
from __future__ import annotations

import torch
from transformers import XLNetConfig, XLNetForSequenceClassification

from ..config import set_seed
from ..prune.importance import score
from ..prune.select import EncoderBudget
from ..xlnet.masks import copy_model
from ..xlnet.structure import XLNetStructure
from .bench import latency_sweep

BASE_SHAPE = {"n_layer": 12, "d_model": 768, "n_head": 12, "d_inner": 3072, "vocab_size": 32000}
FRACTIONS = (0.25, 0.5, 0.75)     # fractions of the encoder's parameters removed


def shaped_models(fractions=FRACTIONS, shape: dict | None = None, seed: int = 0) -> dict:
    """``{"dense": model, 0.25: model, ...}``: a random XLNet classifier of ``shape`` (default
    :data:`BASE_SHAPE`) and copies with ``fraction`` of its encoder parameters removed (heads and neurons)."""
    set_seed(seed)
    config = XLNetConfig(**(shape or BASE_SHAPE), num_labels=2, dropout=0.0, mem_len=None, use_mems_eval=False)
    dense = XLNetForSequenceClassification(config).eval()
    models = {"dense": dense}
    for fraction in fractions:
        model = copy_model(dense)
        EncoderBudget(fraction)(model, score(model, "magnitude", "head+neuron")).apply_surgery(model)
        models[fraction] = model.eval()
    return models


def speed_table(fractions=FRACTIONS, batch: int = 32, seq_len: int = 128, warmup: int = 1, repeats: int = 5,
                shape: dict | None = None, seed: int = 0) -> list[dict]:
    """One row per model: ``requested`` and measured ``encoder_removed`` (fraction of the encoder's parameters,
    counted from the tensors), ``median_ms`` / ``q1_ms`` / ``q3_ms`` per forward pass of ``batch`` sequences of
    ``seq_len`` tokens, ``latency_ratio`` to dense (of the medians, measured in the same loop), the shape,
    and the CPU threads."""
    models = shaped_models(fractions, shape, seed)
    encoder = {k: XLNetStructure(m).encoder_params() for k, m in models.items()}
    shape = shape or BASE_SHAPE
    times = latency_sweep(models, shape["vocab_size"], batch, seq_len, warmup, repeats, seed=seed)
    dense = times["dense"]["median_ms"]
    return [{"shape": "xlnet-base-cased" if shape == BASE_SHAPE else str(shape),
             "requested": 0.0 if k == "dense" else k, "encoder_removed": 1 - encoder[k] / encoder["dense"],
             "batch": batch, "seq_len": seq_len, "median_ms": t["median_ms"], "q1_ms": t["q1_ms"],
             "q3_ms": t["q3_ms"], "latency_ratio": t["median_ms"] / dense, "repeats": repeats,
             "threads": torch.get_num_threads()} for k, t in times.items()]
