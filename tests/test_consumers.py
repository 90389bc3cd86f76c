"""Saved classifiers, used the way downstream clients use them (issue 13, kind 3): the ``text-classification``
pipeline in batches of several sizes, ``Trainer.predict`` and a plain padded forward pass all give what one
example at a time gives, with the label names and without recurrence memory in the outputs."""
import json

import numpy as np
import pytest
import torch

import xlprune_lib  # noqa: F401  (registers xlnet-pruned with the Auto classes)
from xlprune_lib.xlnet import modeling
from xlprune_lib.measure import sparse
from xlprune_lib.train.data import load_task, load_tokenizer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def folders(smoke_runs, pruned_run):
    return {"dense": smoke_runs["ft"], "pruned": pruned_run}


@pytest.fixture(scope="module")
def texts():
    return list(load_task("rt", 300, 0)["test"]["text"][:9])


def one_at_a_time(folder, texts):
    model, tok = modeling.load_saved(folder).eval(), load_tokenizer(folder)
    with torch.no_grad():
        return torch.cat([model(**tok(t, return_tensors="pt")).logits for t in texts])


@pytest.mark.parametrize("kind", ["dense", "pruned"])
def test_saved_config_serves_consumers(folders, kind):
    cfg = json.loads((folders[kind] / "config.json").read_text())
    assert cfg["use_mems_eval"] is False
    assert cfg["id2label"] == {"0": "negative", "1": "positive"}
    assert load_tokenizer(folders[kind]).padding_side == "left"       # XLNet reads its <cls> at the end


@pytest.mark.parametrize("kind", ["dense", "pruned"])
def test_pipeline_in_batches_equals_one_at_a_time(folders, texts, kind):
    from transformers import pipeline

    want = torch.softmax(one_at_a_time(folders[kind], texts), -1)
    pipe = pipeline("text-classification", model=str(folders[kind]), tokenizer=str(folders[kind]), top_k=None)
    for batch_size in (1, 2, 4, 7):
        got = pipe(texts, batch_size=batch_size)
        assert len(got) == len(texts)
        for row, probs in zip(got, want):
            scores = {d["label"]: d["score"] for d in row}
            assert set(scores) == {"negative", "positive"}
            assert scores["positive"] == pytest.approx(float(probs[1]), abs=1e-5), batch_size


@pytest.mark.parametrize("kind", ["dense", "pruned"])
def test_padded_forward_and_trainer_predict_equal_one_at_a_time(folders, texts, kind, tmp_path):
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    want = one_at_a_time(folders[kind], texts)
    model, tok = modeling.load_saved(folders[kind]).eval(), load_tokenizer(folders[kind])
    with torch.no_grad():
        out = model(**tok(texts, padding=True, return_tensors="pt"))
    assert out.mems is None
    torch.testing.assert_close(out.logits, want, rtol=1e-4, atol=1e-5)
    ds = Dataset.from_dict({"text": texts}).map(lambda b: tok(b["text"]), batched=True, remove_columns=["text"])
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=4, report_to="none", use_cpu=True)
    pred = Trainer(model=model, args=args, data_collator=DataCollatorWithPadding(tok)).predict(ds).predictions
    assert isinstance(pred, np.ndarray) and pred.shape == (len(texts), 2)
    np.testing.assert_allclose(pred, want.numpy(), rtol=1e-4, atol=1e-5)


def test_every_way_of_saving_a_classifier_serves_consumers(tiny_classifier, tmp_path):
    """Sparse checkpoints and folders written by older versions (``use_mems_eval: true``) too."""
    assert tiny_classifier.config.use_mems_eval is True     # XLNet's default, as in older xlprune folders
    inputs = {"input_ids": torch.tensor([[11, 12, 13, 4, 3], [21, 22, 23, 4, 3]])}
    tiny_classifier.save_pretrained(tmp_path / "old")        # as an older version, or another tool, saved it
    with torch.no_grad():
        assert modeling.load_saved(tmp_path / "old")(**inputs).mems is None
    sparse.save_sparse(tiny_classifier, tmp_path / "sparse")
    cfg_path = tmp_path / "sparse" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    assert cfg["use_mems_eval"] is False
    cfg_path.write_text(json.dumps({**cfg, "use_mems_eval": True}))     # a sparse folder from an older version
    with torch.no_grad():
        assert sparse.load_sparse(tmp_path / "sparse")(**inputs).mems is None
    modeling.save_model(tiny_classifier, None, tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["use_mems_eval"] is False
    assert tiny_classifier.config.use_mems_eval is True      # saving did not change the model in memory
