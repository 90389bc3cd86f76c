"""Models are the real transformers classes; saving is safetensors; bad folders and no network are one-line errors."""
import json

import pytest
import torch

from xlprune_lib.xlnet import modeling
from xlprune_lib.config import UserError


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
    with pytest.raises(UserError, match=r"model.safetensors is damaged \("):
        modeling.load_saved(out)


def test_hub_model_without_network_fails_fast(unreachable_hub):
    with pytest.raises(UserError, match="needs the model hub"):
        modeling.load_classifier("xlnet-base-cased", ["negative", "positive"])
    assert unreachable_hub == [("127.0.0.1", 9)]                         # one probe, no library retries
