"""``xlprune export`` (``deploy/export.py``): a saved classifier to a verified ONNX file, optionally int8, with the
test accuracy of each model in the record beside it; bad requests are refused before anything is written."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import save_smoke_classifier, onnx_ops as _ops
from conftest import tiny_config
from xlprune_lib.config import UserError
from xlprune_lib.deploy.export import VERIFY_TEXTS, export_run


def test_export_refuses_bad_requests(tiny_classifier, capsys, tmp_path):
    from test_cli import main_error
    from xlprune_lib.xlnet.modeling import save_model

    folder = save_model(tiny_classifier, None, tmp_path / "m")
    capsys.readouterr()   # the save's progress bar
    assert "--quantize takes int8, not 'int4'" in main_error(capsys, "export", "--model", str(folder), "--out",
                                                             str(tmp_path / "m.onnx"), "--quantize", "int4")
    assert "the .onnx file" in main_error(capsys, "export", "--model", str(folder), "--out", str(tmp_path / "x.txt"))
    assert "does not exist" in main_error(capsys, "export", "--model", str(tmp_path / "no"), "--out",
                                          str(tmp_path / "m.onnx"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


@pytest.mark.slow
def test_export_cli_measures_fp32_and_int8(pruned_run, tmp_path, capsys):
    """``xlprune export --quantize int8`` on a pruned run of the real corpus: verified, and the record's
    accuracies are those of the three models on the test split."""
    import json

    from xlprune_lib.cli import main

    out = tmp_path / "m.onnx"
    assert main(["export", "--model", str(pruned_run), "--out", str(out), "--quantize", "int8"]) == 0
    printed = capsys.readouterr().out
    record = json.loads((tmp_path / "m.onnx.json").read_text())
    assert record["verification"]["max_abs_logit_difference"] <= 1e-4 and "verified" in printed
    assert set(record["test"]) == {"torch", "onnx_fp32", "onnx_int8"}
    n = 300   # the smoke profile's test split
    assert abs(record["test"]["onnx_fp32"]["test_accuracy"] - record["test"]["torch"]["test_accuracy"]) <= 1 / n
    assert _ops(out)["MatMulInteger"] > 0 and record["file_bytes"] == out.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.json"]


@pytest.fixture(scope="module")
def classifier(small_tokenizer, tmp_path_factory):
    """A tiny random classifier folder with its tokenizer, made for the smoke profile's data."""
    return save_smoke_classifier(small_tokenizer, tmp_path_factory.mktemp("export") / "model")


def test_export_run_records_what_it_measured(classifier, tmp_path):
    """fp32: the file verified against PyTorch on the test texts, and the test accuracy of both (the same
    predictions up to a rare tie); int8: the quantized file in ``out``, the fp32 one not kept."""
    from xlprune_lib.train.data import split_sizes

    out = tmp_path / "m.onnx"
    record = export_run(classifier, out, seed=0)
    n = split_sizes("rt", 300, 0)["test"]                                # the smoke profile's test split
    assert json.loads((tmp_path / "m.onnx.json").read_text()) == json.loads(json.dumps(record))
    assert record["verification"]["texts"] == min(VERIFY_TEXTS, n)
    assert record["verification"]["max_abs_logit_difference"] <= 1e-4
    assert set(record["test"]) == {"torch", "onnx_fp32"} and record["quantize"] is None
    torch_acc, onnx_acc = (record["test"][k]["test_accuracy"] for k in ("torch", "onnx_fp32"))
    assert abs(torch_acc - onnx_acc) <= 1 / n
    assert record["test"]["torch"]["test_ci_low"] <= torch_acc <= record["test"]["torch"]["test_ci_high"]
    assert record["file_bytes"] == out.stat().st_size and record["model"] == str(classifier)
    assert record["config"]["profile"] == "smoke" and record["data"] == {"task": "rt"} and "git_commit" in record
    assert _ops(out)["MatMulInteger"] == 0
    q = tmp_path / "q" / "m8.onnx"
    q.parent.mkdir()
    record8 = export_run(classifier, q, quantize="int8")
    assert set(record8["test"]) == {"torch", "onnx_fp32", "onnx_int8"} and record8["quantize"] == "int8"
    assert _ops(q)["MatMulInteger"] > 0 and record8["file_bytes"] == q.stat().st_size < record["file_bytes"]
    assert sorted(p.name for p in q.parent.iterdir()) == ["m8.onnx", "m8.onnx.json"]    # no fp32 file left
    assert record8["test"]["torch"] == record["test"]["torch"]


def test_export_run_refuses_before_writing(classifier, small_tokenizer, tmp_path):
    from transformers import XLNetLMHeadModel

    from xlprune_lib.xlnet.modeling import save_model

    for out, kwargs, message in ((tmp_path / "m.onnx", {"quantize": "fp16"}, "--quantize takes int8"),
                                 (tmp_path / "m.pt", {}, "the .onnx file to write"),
                                 (tmp_path, {}, "the .onnx file to write")):
        with pytest.raises(UserError, match=message):
            export_run(classifier, out, **kwargs)
    torch.manual_seed(0)
    lm = save_model(XLNetLMHeadModel(tiny_config(vocab_size=len(small_tokenizer))), small_tokenizer, tmp_path / "lm",
                    extra_files={"metrics.json": {"profile": "smoke"}})
    with pytest.raises(UserError, match="needs a fine-tuned sequence classifier"):
        export_run(lm, tmp_path / "lm.onnx")                                 # a PLM checkpoint: no labels
    assert [p.name for p in tmp_path.iterdir()] == ["lm"]
