"""Fine-tuning and evaluation (``train/finetune.py``): the smoke classifier on the real corpus, the metrics and
their intervals, the evaluator's order, the training step cap, and the run's cache key (its init, its teacher)."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from conftest import replace_weights, run_metrics as _metrics, tiny_config
from xlprune_lib.config import get_profile
from xlprune_lib.train import finetune
from xlprune_lib.train import finetune as ft_mod
from xlprune_lib.train.warmstart import SOURCE_ENV, SOURCE_INIT


@pytest.mark.slow
def test_finetune_writes_a_loadable_classifier_and_metrics(smoke_runs):
    from transformers import AutoTokenizer, XLNetForSequenceClassification

    ft = smoke_runs["ft"]
    m = _metrics(ft)
    for key in ("validation_accuracy", "test_accuracy", "majority_baseline", "train_seconds"):
        assert isinstance(m[key], float)
    assert 0 <= m["test_accuracy"] <= 1 and 0.3 < m["majority_baseline"] < 0.8
    assert m["sizes"] == {"train": 300, "validation": 60, "test": 60}
    model = XLNetForSequenceClassification.from_pretrained(ft)
    tok = AutoTokenizer.from_pretrained(ft)
    logits = model(**tok(["a wonderful film"], return_tensors="pt")).logits
    assert logits.shape == (1, 2)
    # the reported test accuracy is what the saved model really scores
    data = __import__("xlprune_lib.train.data", fromlist=["load_task"]).load_task("rt", 300, 0)
    again = ft_mod.evaluate(model.eval(), tok, data["test"], max_len=48)
    assert again["accuracy"] == pytest.approx(m["test_accuracy"])


def test_matthews_and_majority():
    y = np.array([0, 1, 1, 0, 1])
    assert ft_mod.matthews_corrcoef(y, y) == pytest.approx(1.0)
    assert ft_mod.matthews_corrcoef(y, 1 - y) == pytest.approx(-1.0)
    assert ft_mod.matthews_corrcoef(y, np.ones(5, int)) == 0.0
    assert ft_mod.majority_baseline([1, 1, 0], [1, 0, 0, 0]) == 0.25


def test_finetune_key_names_the_init_given_before_the_hub_model(tmp_path):
    """``finetune(base, init=folder)`` starts from the folder, so its cache key must say so: before, every init
    of a hub profile was keyed as the hub model and would reuse the hub model's run."""
    from xlprune_lib.train.finetune import finetune_config
    from xlprune_lib.train.runs import content_key
    from xlprune_lib.train.warmstart import SOURCE_INIT

    base = get_profile("base")
    assert finetune_config(base, 0, None)["init"] == "xlnet-base-cased"
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    assert finetune_config(base, 0, str(tmp_path))["init"] == content_key(tmp_path) != "xlnet-base-cased"
    (tmp_path / "metrics.json").write_text(json.dumps({"config_key": "abc123"}))   # a label, not content
    assert finetune_config(base, 0, str(tmp_path))["init"] == content_key(tmp_path)
    assert finetune_config(base, 0, SOURCE_INIT)["init"].startswith(SOURCE_INIT)


def test_finetune_init_is_keyed_by_content(models):
    smoke = get_profile("smoke")
    key = finetune.finetune_config(smoke, 0, str(models["labelled"]))["init"]
    assert key == finetune.finetune_config(smoke, 0, str(models["old"]))["init"]     # same weights, other path
    replace_weights(models["labelled"], models["new"])
    assert finetune.finetune_config(smoke, 0, str(models["labelled"]))["init"] != key


def test_classification_metrics_with_intervals_and_the_glue_metric():
    from xlprune_lib.measure.stats import accuracy_ci

    labels = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    logits = np.zeros((8, 2))
    logits[np.arange(8), [0, 1, 0, 0, 1, 1, 0, 1]] = 1.0        # 6 of 8 predictions right
    m = ft_mod.classification_metrics(logits, labels, "matthews_correlation")
    assert m["accuracy"] == 0.75
    assert (m["ci_low"], m["ci_high"]) == accuracy_ci(logits.argmax(-1) == labels)
    assert m["ci_low"] <= 0.75 <= m["ci_high"]
    assert m["matthews_correlation"] == pytest.approx(ft_mod.matthews_corrcoef(labels, logits.argmax(-1)))
    assert 0 < m["matthews_correlation"] < 1
    assert ft_mod.classification_metrics(logits, labels, intervals=False) == {"accuracy": 0.75}


def test_evaluator_gives_every_example_its_own_logits_in_the_split_order(small_tokenizer, rows):
    """Examples are batched by length and padded; the logits come back in the split's order, each one what the
    example gives alone (no padding), and the model is left in the mode it was in."""
    from datasets import Dataset
    from transformers import XLNetForSequenceClassification

    tok = small_tokenizer
    texts = [r["text"] for r in rows[:11]]
    assert len({len(tok(t)["input_ids"]) for t in texts}) > 3          # lengths differ: batches need padding
    ds = Dataset.from_dict({"text": texts, "label": [i % 2 for i in range(11)]})
    torch.manual_seed(0)
    model = XLNetForSequenceClassification(tiny_config(vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                                                       num_labels=2)).train()
    ev = ft_mod.Evaluator(tok, {"x": ds}, 64, batch=4)
    assert ev.sizes == {"x": 11}
    logits, labels = ev.logits(model, "x")
    assert model.training and labels.tolist() == ds["label"]
    with torch.no_grad():
        alone = torch.cat([model.eval()(**tok(t, truncation=True, max_length=64, return_tensors="pt")).logits
                           for t in texts]).numpy()
    np.testing.assert_allclose(logits, alone, atol=1e-5, rtol=1e-4)
    got = ev(model)
    want = ft_mod.classification_metrics(alone, labels)
    assert got["x_accuracy"] == want["accuracy"] and got["x_ci_low"] == want["ci_low"]
    assert ft_mod.evaluate(model, tok, ds, max_len=64)["accuracy"] == want["accuracy"]


def test_train_classifier_stops_at_the_step_cap(small_tokenizer, rows):
    from datasets import Dataset
    from transformers import XLNetForSequenceClassification

    tok, smoke = small_tokenizer, get_profile("smoke")
    ds = Dataset.from_dict({"text": [r["text"] for r in rows[:64]], "label": [i % 2 for i in range(64)]})
    enc = {"train": ft_mod.tokenize_split(ds, tok, smoke.max_seq_len)}
    torch.manual_seed(0)
    model = XLNetForSequenceClassification(tiny_config(vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                                                       num_labels=2))
    before = model.logits_proj.weight.detach().clone()
    trainer, seconds = ft_mod.train_classifier(model, tok, enc, smoke, 0, epochs=1.0, progress=False, steps=3)
    assert trainer.state.global_step == 3 < len(ds) // smoke.ft_batch and seconds > 0   # one epoch is 4 steps
    assert not torch.equal(model.logits_proj.weight.detach(), before)


def test_finetune_key_follows_what_the_run_learns_from(models, monkeypatch):
    """The data's digest, the warm start's summary layer and the teacher enter the key exactly when they change
    what fine-tuning does."""
    monkeypatch.delenv(SOURCE_ENV, raising=False)
    smoke, minilm = get_profile("smoke"), get_profile("minilm")

    class Data:   # the user's data, as data.UserData keys it
        def key(self):
            return {"data_digest": "d1"}

    plain = finetune.finetune_config(smoke, 0, None)
    assert plain["init"] is None and plain["n_layer"] == smoke.n_layer      # random weights: the shape is the start
    assert finetune.finetune_config(smoke, 0, None, Data())["data_digest"] == "d1"
    assert finetune.finetune_config(smoke, 1, None) != plain
    assert not finetune.distills(smoke, None) and not finetune.distills(minilm, str(models["old"]))   # alpha 0
    teaching = dataclasses.replace(minilm, distill_alpha=0.5)
    warm = finetune.finetune_config(teaching, 0, str(models["old"]))
    assert finetune.distills(teaching, str(models["old"])) and warm["summary"] == "source-pooler"
    assert warm["distill_alpha"] == 0.5 and warm["teacher"].startswith(SOURCE_INIT)
    assert not finetune.distills(teaching, SOURCE_INIT)           # the teacher does not learn from itself
    assert "teacher" not in finetune.finetune_config(teaching, 0, SOURCE_INIT)
