"""Issue 16, part 3: ONNX export of every shape xlprune produces (layers with no head, no neuron, dropped
layers), verified against PyTorch on real padded text, with dynamic batch and sequence axes; int8 covers the
attention projections as well as the FFN."""
from __future__ import annotations

import pytest
import torch

from conftest import onnx_ops as _ops
from conftest import zero_width_classifier
from xlprune_lib.config import UserError
from xlprune_lib.deploy.onnx import OnnxClassifier, export_onnx, quantize_int8


@pytest.fixture(scope="module")
def texts(rows):
    return [r["text"] for r in rows[:40]]


def test_zero_width_model_exports_and_verifies(small_tokenizer, texts, tmp_path):
    model = zero_width_classifier(vocab_size=len(small_tokenizer))
    check = export_onnx(model, small_tokenizer, tmp_path / "m.onnx", texts)
    assert check["verified"] and check["max_abs_logit_difference"] <= 1e-4 and check["texts"] == 40
    # the projections are MatMul, none an Einsum: q, k, v, r, o of the 2 layers with heads, and the 2 FFN matrices
    # of the 2 layers with neurons; the layer with no head and the one with no neuron have none
    ops = _ops(tmp_path / "m.onnx")
    assert ops["MatMul"] == 2 * 5 + 2 * 2
    # dynamic axes: other batch sizes and lengths than the traced ones
    onnx_model = OnnxClassifier(tmp_path / "m.onnx")
    for n, length in ((1, 3), (7, 50)):
        enc = small_tokenizer(texts[:n], padding=True, truncation=True, max_length=length, return_tensors="pt")
        with torch.no_grad():
            want = model(**enc, use_mems=False).logits
        assert onnx_model(**enc).logits.shape == (n, 2)
        assert torch.allclose(onnx_model(**enc).logits, want, atol=1e-4)


def test_int8_quantizes_every_projection(small_tokenizer, texts, tmp_path):
    model = zero_width_classifier(vocab_size=len(small_tokenizer))
    export_onnx(model, small_tokenizer, tmp_path / "m.onnx", texts)
    quantize_int8(tmp_path / "m.onnx", tmp_path / "m8.onnx")
    fp32_ops, ops = _ops(tmp_path / "m.onnx"), _ops(tmp_path / "m8.onnx")
    # every product with a weight is int8: the 14 projections and FFN matrices, and the summary and logits layers
    assert ops["MatMul"] == ops["Gemm"] == 0
    assert ops["MatMulInteger"] == fp32_ops["MatMul"] + fp32_ops["Gemm"] == 2 * 5 + 2 * 2 + 2
    enc = small_tokenizer(texts[:8], padding=True, return_tensors="pt")
    fp32, int8 = (OnnxClassifier(tmp_path / f).eval()(**enc).logits for f in ("m.onnx", "m8.onnx"))
    assert 0 < float((fp32 - int8).abs().max()) < 0.5 * float(fp32.abs().max())


def test_dense_model_exports(small_tokenizer, texts, tmp_path):
    from transformers import XLNetForSequenceClassification

    from conftest import tiny_config

    torch.manual_seed(1)
    model = XLNetForSequenceClassification(tiny_config(num_labels=2, vocab_size=len(small_tokenizer))).eval()
    assert export_onnx(model, small_tokenizer, tmp_path / "d.onnx", texts)["verified"]


def test_unverified_export_leaves_the_file_as_it_was(small_tokenizer, texts, tmp_path):
    model = zero_width_classifier(vocab_size=len(small_tokenizer))
    out = tmp_path / "m.onnx"
    out.write_bytes(b"earlier file")
    with pytest.raises(UserError, match="differ from PyTorch's"):
        export_onnx(model, small_tokenizer, out, texts, tolerance=1e-12)
    assert out.read_bytes() == b"earlier file" and list(tmp_path.iterdir()) == [out]


def test_export_leaves_the_model_as_it_was(small_tokenizer, tmp_path):
    """With dropout in the model: the export neither leaves it in training mode nor exports dropout."""
    from transformers import XLNetForSequenceClassification

    from conftest import tiny_config
    from xlprune_lib.deploy.onnx import to_onnx

    torch.manual_seed(2)
    model = XLNetForSequenceClassification(tiny_config(num_labels=2, dropout=0.1, summary_last_dropout=0.1)).eval()
    ids = {"input_ids": torch.randint(10, 120, (3, 11)), "attention_mask": torch.ones(3, 11, dtype=torch.long)}
    onnx_model = OnnxClassifier(to_onnx(model, ids, tmp_path / "m.onnx"))
    assert not model.training and not any(m.training for m in model.modules())
    with torch.no_grad():
        assert torch.allclose(onnx_model(**ids).logits, model(**ids, use_mems=False).logits, atol=1e-5)
    model.train()
    to_onnx(model, ids, tmp_path / "m2.onnx")
    assert model.training
