"""Issue 16, part 2: ``pip install xlprune`` without extras loads, prunes, exports and benchmarks a model; the
commands that train or read the corpus say which extra they need."""
from __future__ import annotations

import json
import subprocess

import pytest

from deploy.fresh_env import core_python, run_fresh  # noqa: F401  (core_python: a fixture)

pytestmark = pytest.mark.slow

CORE = """
import importlib.util, json, sys, tempfile, torch
from pathlib import Path
from transformers import XLNetConfig, XLNetForSequenceClassification
import xlprune_lib
from xlprune_lib.prune.importance import score
from xlprune_lib.prune.select import EncoderBudget
from xlprune_lib.xlnet.modeling import load_saved, save_model
from xlprune_lib.deploy.onnx import OnnxClassifier, to_onnx
missing = [m for m in ("datasets", "pandas", "matplotlib", "sklearn", "papermill", "sentencepiece")
           if importlib.util.find_spec(m) is not None]
torch.manual_seed(0)
model = XLNetForSequenceClassification(XLNetConfig(vocab_size=100, d_model=32, n_layer=2, n_head=4, d_inner=64,
                                                   num_labels=2)).eval()
EncoderBudget(0.5)(model, score(model, "magnitude", "head+neuron")).apply_surgery(model)
out = Path(sys.argv[-1])
loaded = load_saved(save_model(model, None, out / "m")).eval()
ids = {"input_ids": torch.randint(5, 100, (2, 9)), "attention_mask": torch.ones(2, 9, dtype=torch.long)}
onnx = OnnxClassifier(to_onnx(loaded, ids, out / "m.onnx"))
with torch.no_grad():
    diff = float((onnx(**ids).logits - loaded(**ids, use_mems=False).logits).abs().max())
print(json.dumps({"extras_present": missing, "type": loaded.config.model_type, "diff": diff}))
"""


def test_core_install_prunes_saves_and_exports(core_python, tmp_path):
    code = f"import sys; sys.argv += [{str(tmp_path)!r}]\n" + CORE
    out = json.loads(run_fresh(core_python, code, tmp_path).stdout.strip().splitlines()[-1])
    assert out["extras_present"] == []            # the extras' packages really are absent
    assert out["type"] == "xlnet-pruned" and out["diff"] < 1e-4


def test_core_install_commands(core_python, tmp_path):
    def run(*args):   # ``python -m xlprune_lib`` is the entry point (the env was built elsewhere and moved)
        return subprocess.run([str(core_python), "-I", "-m", "xlprune_lib", *args], capture_output=True, text=True,
                              cwd=tmp_path,
                              env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)})

    assert run("--help").returncode == 0
    assert run("prune", "--help").returncode == 0     # the options come from the spec, not from the training code
    refused = run("prune", "--model", str(tmp_path), "--method", "magnitude", "--granularity", "head",
                  "--sparsity", "0.5", "--out", str(tmp_path / "p"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "pip install 'xlprune[train]'" in refused.stderr.strip().splitlines()[-1]
    assert run("fetch").returncode == 2
