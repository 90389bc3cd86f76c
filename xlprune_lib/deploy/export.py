"""``xlprune export``: a saved classifier folder to a verified ONNX file, optionally int8, with its accuracy.

The record written beside the file (``<out>.json``) holds what was measured: the largest logit difference
between ONNX Runtime and PyTorch on real test texts, and the test accuracy (with its 95% bootstrap interval,
``stats.interval``) of the PyTorch model, the fp32 ONNX model and, with ``quantize="int8"``, the int8 one;
plus provenance.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from ..config import Profile, UserError, write_json_atomic
from ..measure.report import provenance
from ..train.data import load_tokenizer, run_data, user_data
from ..train.finetune import Evaluator
from ..train.runs import source_data, source_run
from ..xlnet.modeling import check_supported, label_names, load_saved
from .onnx import OnnxClassifier, check_quantize, export_onnx, quantize_int8

VERIFY_TEXTS = 64   # test texts compared between ONNX Runtime and PyTorch


def export_run(model_dir, out, quantize: str | None = None, profile: Profile | None = None, seed: int = 0,
               data=None) -> dict:
    """Export ``model_dir`` (a saved sequence classifier) to ``out`` (``.onnx``) and measure it.

    The fp32 export is verified first (:func:`onnx.export_onnx`, on :data:`VERIFY_TEXTS` texts of the test split
    of the profile the folder was made with, or of ``data``: the user's data, as in ``oneshot.prune_run``, needed
    for a folder from outside xlprune); with ``quantize="int8"``, ``out`` holds the int8 model and the
    fp32 one is not kept. Returns, and writes to ``<out>.json``, ``{"verification", "test", "quantize",
    "model", "data", ...provenance}``; ``test`` maps ``torch``, ``onnx_fp32`` (and ``onnx_int8``) to
    ``{"test_accuracy", "test_ci_low", "test_ci_high"}``. Raises ``UserError`` for a bad ``quantize`` or ``out``,
    a folder that is not a classifier, or a failed verification (then nothing is written).
    """
    check_quantize(quantize)
    out = Path(out)
    if out.suffix != ".onnx" or out.is_dir():
        raise UserError(f"--out names the .onnx file to write, got {out}")
    check_supported(model_dir, classifier=True, tokenizer=True)   # before any accuracy is measured
    model_dir, _, profile = source_run(model_dir, profile, data)
    user = user_data(source_data(model_dir, data))
    model, tok = load_saved(model_dir), load_tokenizer(model_dir)
    data, metric, data_record = run_data(profile, seed, user, label_names(model.config))
    texts = list(data["test"]["text"][:VERIFY_TEXTS])
    evaluator = Evaluator(tok, {"test": data["test"]}, profile.max_seq_len, metric)

    def test_accuracy(m) -> dict:
        return {k: v for k, v in evaluator(m).items() if k in ("test_accuracy", "test_ci_low", "test_ci_high")}

    record = {"model": str(model_dir), "quantize": quantize, "data": data_record,
              "test": {"torch": test_accuracy(model)}}
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.is_dir() else None) as tmp:
        fp32 = out if quantize is None else Path(tmp) / "fp32.onnx"
        record["verification"] = export_onnx(model, tok, fp32, texts, max_len=profile.max_seq_len)
        record["test"]["onnx_fp32"] = test_accuracy(OnnxClassifier(fp32))
        if quantize == "int8":
            quantize_int8(fp32, out)
            record["test"]["onnx_int8"] = test_accuracy(OnnxClassifier(out))
    record["file_bytes"] = out.stat().st_size
    record.update(provenance({"model": str(model_dir), "quantize": quantize, "profile": profile.name,
                              "seed": seed, **(user.key() if user is not None else {})}))
    write_json_atomic(out.with_name(out.name + ".json"), record)
    return record
