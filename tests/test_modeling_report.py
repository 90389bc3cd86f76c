"""Models are the real transformers classes; the parameter table is counted from the tensors."""
import json

import pytest
import torch
from conftest import tiny_config

from xlprune_lib.xlnet import modeling
from xlprune_lib.measure import report
from xlprune_lib.config import UserError


def test_breakdown_counts_every_parameter_once(tiny_classifier):
    table = report.parameter_breakdown(tiny_classifier)
    assert table["total"]["params"] == sum(p.numel() for p in tiny_classifier.parameters())
    c = table["components"]
    L, d, H, dh, di, V = 2, 32, 4, 8, 64, 120
    for proj in "qkvor":
        assert c[f"attention.{proj}"]["params"] == L * d * H * dh
    assert c["relative_biases"]["params"] == L * (3 * H * dh + 2 * H * dh)
    assert c["ffn"]["params"] == L * (d * di + di + di * d + d)
    assert c["layer_norm"]["params"] == L * 2 * 2 * d
    assert c["embeddings"]["params"] == V * d + d  # word embedding + mask_emb
    assert c["head"]["params"] == (d * d + d) + (d * 2 + 2)


def test_nonzeros_are_counted_not_assumed(tiny_classifier):
    before = report.parameter_breakdown(tiny_classifier)["components"]["ffn"]
    with torch.no_grad():
        tiny_classifier.transformer.layer[0].ff.layer_1.weight[:10] = 0
    after = report.parameter_breakdown(tiny_classifier)["components"]["ffn"]
    assert after["params"] == before["params"]
    assert before["nonzero"] - after["nonzero"] == 10 * 32


def test_lm_head_tied_weights_counted_once():
    from transformers import XLNetLMHeadModel

    lm = XLNetLMHeadModel(tiny_config())
    table = report.parameter_breakdown(lm)
    assert lm.lm_loss.weight is lm.transformer.word_embedding.weight
    assert table["total"]["params"] == sum(p.numel() for p in lm.parameters())
    assert table["components"]["head"]["params"] == 120  # only the output bias is the LM head's own


def test_unknown_parameter_names_are_not_silently_dropped():
    with pytest.raises(ValueError):
        report.component_of("transformer.layer.0.new_thing.weight")


def test_save_is_safetensors_and_reloads(tiny_classifier, small_tokenizer, tmp_path):
    out = modeling.save_model(tiny_classifier, small_tokenizer, tmp_path / "m", extra_files={"metrics.json": {"a": 1}})
    names = {p.name for p in out.iterdir()}
    assert "model.safetensors" in names and not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    assert json.loads((out / "metrics.json").read_text()) == {"a": 1}
    again = modeling.load_saved(out)
    assert type(again).__name__ == "XLNetForSequenceClassification"
    saved, original = again.state_dict(), tiny_classifier.state_dict()
    assert saved.keys() == original.keys() and all(torch.equal(saved[k], original[k]) for k in saved)
    ids = torch.tensor([[10, 11, 12, 4, 3]])
    with torch.no_grad():  # same weights; the kernels may sum in another order (thread count, memory layout)
        torch.testing.assert_close(again.eval()(ids).logits, tiny_classifier(ids).logits, rtol=1e-5, atol=1e-6)


def test_missing_or_incomplete_model_dir(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        modeling.check_model_dir(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        modeling.check_model_dir(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(UserError, match="no safetensors"):
        modeling.check_model_dir(tmp_path / "empty")


def test_corrupted_weights_are_a_user_error(tiny_classifier, tmp_path):
    out = modeling.save_model(tiny_classifier, None, tmp_path / "m")
    (out / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot load"):
        modeling.load_saved(out)


def test_hub_model_without_network_fails_fast(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(UserError, match="needs the model hub"):
        modeling.load_classifier("xlnet-base-cased", ["negative", "positive"])
