"""Export a (pruned) XLNet classifier to ONNX, check it against PyTorch, and quantize it to int8.

Export uses ``torch.onnx.export`` with ``dynamo=False`` (the TorchScript-based exporter): the dynamo exporter
fails on XLNet itself, because XLNet turns the integer attention mask into a float one inside the forward
(``1.0 - attention_mask``). Batch and sequence axes are dynamic, so one file serves any batch of any length.

Two details make every model xlprune can produce export, and export well:

* A layer that kept no head (no neuron) would put zero-sized products in the graph, which the exporter
  cannot handle (the process dies with a floating-point exception). Such sublayers compute ``LN(x)``
  (``LN(x + b_2)``) and get a forward that says so (``modeling_xlnet_pruned.fit_zero_width``).
* XLNet's projections are einsums over 3-D weights, ``ibh,hnd->ibnd`` for ``q, k, v, r`` and
  ``ibnd,hnd->ibh`` for ``o``. ONNX Runtime's dynamic quantization only quantizes ``MatMul`` (and ``Gemm``),
  so while exporting, those two einsums are written as ``MatMul`` with the weight reshaped to
  ``(d_model, n_head * d_head)``: the same product, and ``quantize_dynamic`` then covers the attention
  projections as well as the FFN.

Int8 is ONNX Runtime's dynamic quantization (weights int8 per tensor, activations quantized on the fly;
Jacob et al. 2018): no calibration data, and the accuracy it costs is measured on the test split.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from ..config import UserError, atomic_file
from ..xlnet.modeling_xlnet_pruned import fit_zero_width
from ..xlnet.structure import XLNetStructure

OPSET = 17
TOLERANCE = 1e-4      # max |logit difference| between ONNX Runtime (fp32) and PyTorch that counts as verified
PROJECTIONS_IN, PROJECTION_OUT = "ibh,hnd->ibnd", "ibnd,hnd->ibh"
QUANTIZE = ("int8",)  # what --quantize takes (export and bench)


def check_quantize(quantize: str | None) -> None:
    """``UserError`` unless ``quantize`` is ``None`` or one of :data:`QUANTIZE`."""
    if quantize not in (None, *QUANTIZE):
        raise UserError(f"--quantize takes {', '.join(QUANTIZE)}, not {quantize!r}")


class _Logits(nn.Module):
    """The classifier as ONNX sees it: named token tensors in, logits ``(batch, labels)`` out."""

    def __init__(self, model, names):
        super().__init__()
        self.model, self.names = model, tuple(names)

    def forward(self, *tensors):
        return self.model(**dict(zip(self.names, tensors)), use_mems=False).logits


def _einsum_as_matmul(g, equation, tensor_list, path=None):
    """Symbolic of ``aten::einsum`` for the exporter: XLNet's projections as ``MatMul`` (module docstring)."""
    from torch.onnx import symbolic_helper, symbolic_opset12  # noqa: F401  (the exporter's own helpers)

    equation_s = symbolic_helper._parse_arg(equation, "s")
    tensors = symbolic_helper._unpack_list(tensor_list)
    shape = symbolic_helper._get_tensor_sizes(tensors[1]) if len(tensors) == 2 else None
    if equation_s in (PROJECTIONS_IN, PROJECTION_OUT) and shape and all(isinstance(s, int) for s in shape):
        x, w = tensors
        h, n, d = shape

        def const(values):
            return g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))

        w2 = g.op("Reshape", w, const([h, n * d]))
        if equation_s == PROJECTIONS_IN:                  # (i, b, h) @ (h, n*d) -> (i, b, n, d)
            return g.op("Reshape", g.op("MatMul", x, w2), const([0, 0, n, -1]))
        flat = g.op("Reshape", x, const([0, 0, -1]))      # (i, b, n*d) @ (n*d, h) -> (i, b, h)
        return g.op("MatMul", flat, g.op("Transpose", w2, perm_i=[1, 0]))
    return symbolic_opset12.einsum(g, equation, tensor_list, path)


@contextlib.contextmanager
def _projections_as_matmul():
    torch.onnx.register_custom_op_symbolic("aten::einsum", _einsum_as_matmul, OPSET)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::einsum", OPSET)


def input_names(tokenizer) -> list[str]:
    """The tensors the tokenizer gives a model (``input_ids``, ``attention_mask``, ``token_type_ids``...)."""
    return list(tokenizer.model_input_names)


def to_onnx(model, example: dict[str, torch.Tensor], out: Path | str) -> Path:
    """Write ``model`` (any XLNet sequence classifier xlprune can produce) to ``out`` as ONNX, unverified.

    Opset :data:`OPSET`; inputs named as the keys of ``example`` (int64 ``(batch, sequence)`` tensors, used to
    trace), output ``logits`` ``(batch, labels)``; batch and sequence axes dynamic. Zero-width sublayers get
    their shortcut forward first (module docstring). Raises ``UserError`` for a model that is not a sequence
    classifier."""
    if not hasattr(model, "sequence_summary"):
        raise UserError(f"ONNX export takes a sequence classifier, not {type(model).__name__}")
    for layer in XLNetStructure(model).layers:
        fit_zero_width(layer)
    names = list(example)
    dynamic = {**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}}
    was_training = model.training
    # the wrapper in eval mode too: the exporter puts every module back in the wrapper's mode afterwards
    wrapper = _Logits(model, names).eval()
    try:
        with _projections_as_matmul(), torch.no_grad():
            torch.onnx.export(wrapper, tuple(example.values()), str(out), dynamo=False, input_names=names,
                              output_names=["logits"], dynamic_axes=dynamic, opset_version=OPSET)
    finally:
        model.train(was_training)
    return Path(out)


def export_onnx(model, tokenizer, out: Path | str, texts: list[str], tolerance: float = TOLERANCE,
                max_len: int = 128) -> dict:
    """:func:`to_onnx` with the tokenizer's inputs (:func:`input_names`), verified on real text.

    ``texts`` (two or more): the first two trace the graph; all of them, tokenized and padded in batches,
    compare ONNX Runtime with PyTorch (:func:`max_logit_difference`). Returns ``{"max_abs_logit_difference",
    "texts", "tolerance", "verified"}``. ``out`` is replaced only by a verified file (atomically); ``UserError``
    when the model is not a sequence classifier or the difference exceeds ``tolerance``, and ``out`` is left
    as it was.
    """
    out = Path(out)
    example = tokenizer(list(texts[:2]), padding=True, return_tensors="pt")
    with atomic_file(out, suffix=".onnx") as tmp:
        to_onnx(model, {n: example[n] for n in input_names(tokenizer)}, tmp)
        worst = max_logit_difference(model, tmp, tokenizer, texts, max_len=max_len)
        if not worst <= tolerance:
            raise UserError(f"ONNX Runtime's logits differ from PyTorch's by {worst:.2e} > {tolerance:g} on "
                            f"{len(texts)} texts; {out} not written")
    return {"max_abs_logit_difference": worst, "texts": len(texts), "tolerance": tolerance, "verified": True}


def session(path: Path | str, threads: int | None = None):
    """An ONNX Runtime CPU session for ``path`` (``threads``: intra-op threads; ``None``: as torch uses)."""
    import onnxruntime as ort  # noqa: F401  (heavy; only export and bench need it)

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxClassifier(nn.Module):
    """An ONNX Runtime session behind the call signature of a ``transformers`` classifier, so that code that
    evaluates or times torch models (``Evaluator``, ``bench``) runs it unchanged: ``model(**batch).logits``."""

    def __init__(self, path: Path | str, threads: int | None = None):
        super().__init__()
        self.path, self.session = Path(path), session(path, threads)
        self.names = [i.name for i in self.session.get_inputs()]
        self.register_buffer("_device", torch.zeros(0))   # so that callers can ask for the device (CPU)

    def forward(self, **batch):
        feeds = {n: batch[n].cpu().numpy().astype(np.int64) for n in self.names}
        logits = torch.from_numpy(self.session.run(["logits"], feeds)[0])
        return SimpleNamespace(logits=logits)

    def parameters(self, recurse: bool = True):
        yield self._device


def max_logit_difference(model, onnx_path: Path | str, tokenizer, texts: list[str], batch: int = 16,
                         max_len: int = 128) -> float:
    """Max ``|logit_onnx - logit_torch|`` over ``texts``, tokenized and padded in batches of ``batch`` as a
    user would (lengths differ inside a batch, so padding is exercised)."""
    onnx_model, worst = OnnxClassifier(onnx_path), 0.0
    model.eval()
    for i in range(0, len(texts), batch):
        enc = tokenizer(list(texts[i:i + batch]), padding=True, truncation=True, max_length=max_len,
                        return_tensors="pt")
        with torch.no_grad():
            want = model(**enc, use_mems=False).logits
        worst = max(worst, float((onnx_model(**enc).logits - want).abs().max()))
    return worst


def quantize_int8(src: Path | str, out: Path | str) -> Path:
    """ONNX Runtime dynamic quantization of ``src`` (int8 weights of every ``MatMul``) into ``out``, atomically."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: F401  (heavy; export only)

    out = Path(out)
    root = logging.getLogger()    # the quantizer warns on the root logger about the integer token inputs (benign)
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with atomic_file(out, suffix=".onnx") as tmp:
            quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return out
