"""Issue 16, part 1: a pruned folder loads where xlprune is not installed, through the ``transformers``
convention for custom architectures (``auto_map`` + the modeling file beside the weights), and gives the same
logits; layers with no head, no neuron, and dropped layers included."""
from __future__ import annotations

import ast
import json

import pytest
import torch

from conftest import zero_width_classifier
from deploy.fresh_env import fresh_python, run_fresh  # noqa: F401  (fresh_python: a fixture)
from xlprune_lib.xlnet import modeling_xlnet_pruned as portable
from xlprune_lib.xlnet.modeling import load_saved, save_model

LOAD = """
import json, sys, torch
from transformers import AutoConfig, AutoModelForSequenceClassification
folder, inputs = sys.argv[-2], json.load(open(sys.argv[-1]))
model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
with torch.no_grad():
    logits = model(**{k: torch.tensor(v) for k, v in inputs.items()}).logits
try:
    import xlprune_lib
    xlprune = True
except ImportError:
    xlprune = False
print(json.dumps({"logits": logits.tolist(), "class": type(model).__name__, "xlprune": xlprune,
                  "module": type(model).__module__}))
"""


def _inputs():
    from conftest import padded_batch

    batch = padded_batch([7, 4, 9], [0, 1, 0])
    return {k: v.tolist() for k, v in batch.items() if k != "labels"}


def _logits(model, inputs):
    with torch.no_grad():
        return model(**{k: torch.tensor(v) for k, v in inputs.items()}).logits


def _fresh_load(python, folder, inputs, tmp_path) -> dict:
    (tmp_path / "inputs.json").write_text(json.dumps(inputs))
    code = f"import sys; sys.argv += [{str(folder)!r}, {str(tmp_path / 'inputs.json')!r}]\n" + LOAD
    return json.loads(run_fresh(python, code, tmp_path).stdout.strip().splitlines()[-1])


def test_modeling_file_stands_alone():
    """The shipped file imports only torch, transformers and huggingface_hub (a transformers dependency)."""
    tree = ast.parse(open(portable.__file__).read())
    roots = {(n.module if isinstance(n, ast.ImportFrom) else a.name).split(".")[0]
             for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
             for a in (n.names if isinstance(n, ast.Import) else [None])}
    assert all(isinstance(n, ast.Import) or n.level == 0 for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
    assert roots == {"__future__", "torch", "transformers", "huggingface_hub"}


def test_zero_width_sublayers_compute_their_layer_norm():
    model = zero_width_classifier()
    layers = model.transformer.layer
    assert [len(layers), layers[0].rel_attn.n_head, layers[1].ff.layer_1.out_features] == [3, 0, 0]
    assert type(layers[0].rel_attn) is portable.ZeroHeadAttention
    assert type(layers[1].ff) is portable.ZeroNeuronFeedForward
    assert type(layers[2].rel_attn) is not portable.ZeroHeadAttention
    h = torch.randn(5, 2, 32)
    assert torch.equal(layers[0].rel_attn(h, None, None, None, h, None)[0], layers[0].rel_attn.layer_norm(h))
    ff = layers[1].ff
    assert torch.allclose(ff(h), ff.layer_norm(h + ff.layer_2.bias), atol=1e-6)
    # the zero-width forward equals what the stock classes compute with zero-sized tensors
    from transformers.models.xlnet.modeling_xlnet import XLNetFeedForward, XLNetRelativeAttention

    inputs = _inputs()
    shortcut = _logits(model, inputs)
    layers[0].rel_attn.__class__, layers[1].ff.__class__ = XLNetRelativeAttention, XLNetFeedForward
    assert torch.allclose(_logits(model, inputs), shortcut, atol=1e-6)


def test_saved_pruned_folder_carries_its_code(tmp_path):
    model = zero_width_classifier()
    save_model(model, None, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "xlnet-pruned"
    assert config["auto_map"] == {
        "AutoConfig": "modeling_xlnet_pruned.PrunedXLNetConfig",
        "AutoModel": "modeling_xlnet_pruned.PrunedXLNetModel",
        "AutoModelForCausalLM": "modeling_xlnet_pruned.PrunedXLNetLMHeadModel",
        "AutoModelForSequenceClassification": "modeling_xlnet_pruned.PrunedXLNetForSequenceClassification"}
    assert (tmp_path / "m" / "modeling_xlnet_pruned.py").read_text() == open(portable.__file__).read()
    # with xlprune: the same classes, the zero-width sublayers restored on load
    loaded = load_saved(tmp_path / "m").eval()
    assert type(loaded.transformer.layer[0].rel_attn) is portable.ZeroHeadAttention
    assert torch.equal(_logits(loaded, _inputs()), _logits(model, _inputs()))


@pytest.mark.slow
def test_pruned_folder_loads_without_xlprune(fresh_python, tmp_path):
    """In an environment with only torch, transformers and safetensors: ``trust_remote_code=True`` loads the
    folder's own class and gives the logits xlprune gives; without the flag, loading fails (it does not
    silently build a stock XLNet)."""
    model = zero_width_classifier()
    folder = save_model(model, None, tmp_path / "m")
    inputs = _inputs()
    out = _fresh_load(fresh_python, folder, inputs, tmp_path)
    assert out["xlprune"] is False
    assert out["class"] == "PrunedXLNetForSequenceClassification"
    assert out["module"].startswith("transformers_modules.")   # the folder's copy, not an installed package
    assert torch.allclose(torch.tensor(out["logits"]), _logits(model, inputs), atol=1e-6)

    refused = run_fresh(fresh_python, "import sys\nfrom transformers import AutoModelForSequenceClassification\n"
                        f"AutoModelForSequenceClassification.from_pretrained({str(folder)!r})", tmp_path, check=False)
    assert refused.returncode != 0 and "trust_remote_code=True" in refused.stderr.strip().splitlines()[-1]


PIPELINE = """
import json, sys
from transformers import pipeline
folder, texts = sys.argv[-2], json.load(open(sys.argv[-1]))
classify = pipeline("text-classification", model=folder, trust_remote_code=True, top_k=None)
print(json.dumps([{d["label"]: d["score"] for d in out} for out in classify(texts, batch_size=4)]))
"""


@pytest.mark.slow
def test_pruned_run_serves_a_pipeline_without_xlprune(fresh_python, pruned_run, tmp_path):
    """``xlprune prune``'s folder on the real corpus: the ``text-classification`` pipeline in the fresh
    environment gives the scores it gives with xlprune installed."""
    from transformers import pipeline

    from xlprune_lib.train.data import load_task

    texts = list(load_task("rt", 300, 0)["test"]["text"][:10])
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    code = f"import sys; sys.argv += [{str(pruned_run)!r}, {str(tmp_path / 'texts.json')!r}]\n" + PIPELINE
    fresh = json.loads(run_fresh(fresh_python, code, tmp_path).stdout.strip().splitlines()[-1])
    here = pipeline("text-classification", model=str(pruned_run), top_k=None)(texts, batch_size=4)
    assert len(fresh) == len(texts)
    for got, want in zip(fresh, here):
        assert got.keys() == {"negative", "positive"}
        assert all(abs(got[d["label"]] - d["score"]) < 1e-6 for d in want)
