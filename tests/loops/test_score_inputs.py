"""What a score needs before it is computed (``loops/score_inputs.py``): padded training batches, the movement
callback and the fine-tuning that accumulates it, and which of them each method gets."""
import pytest
import torch

from conftest import close_to_scale as _close
from conftest import tiny_config
from xlprune_lib.config import UserError, get_profile
from xlprune_lib.loops import score_inputs
from xlprune_lib.prune import importance


@pytest.fixture(scope="module")
def train(rows):
    from datasets import Dataset

    return Dataset.from_dict({"text": [r["text"] for r in rows[:40]], "label": [i % 2 for i in range(40)]})


def _classifier(tok):
    from transformers import XLNetForSequenceClassification

    torch.manual_seed(0)
    return XLNetForSequenceClassification(tiny_config(vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                                                      num_labels=2))


def test_movement_callback_accumulates_minus_w_times_g(small_tokenizer, rows, tmp_path):
    """With learning rate 0 and one full batch, the callback's score is -w * g of that batch, per step."""
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, XLNetForSequenceClassification

    from xlprune_lib.loops.score_inputs import MovementCallback, score_batches
    from xlprune_lib.train.finetune import tokenize_split

    torch.manual_seed(0)
    model = XLNetForSequenceClassification(tiny_config(vocab_size=len(small_tokenizer), num_labels=2,
                                                       summary_last_dropout=0.0))  # train mode == eval mode
    ds = Dataset.from_dict({"text": [r["text"] for r in rows[:8]], "label": [i % 2 for i in range(8)]})
    enc = tokenize_split(ds, small_tokenizer, 32)
    cb = MovementCallback(model)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, learning_rate=0.0,
                             max_steps=3, max_grad_norm=0.0, report_to="none", use_cpu=True, disable_tqdm=True,
                             save_strategy="no")
    Trainer(model=model, args=args, train_dataset=enc, data_collator=DataCollatorWithPadding(small_tokenizer),
            callbacks=[cb]).train()
    assert cb.steps == 3
    batch = score_batches(small_tokenizer, ds, 1, 8, 32)
    want = importance.frozen_movement(model, batch)
    assert cb.scores.kind == "weight" and list(cb.scores) == list(want)
    for name in want:
        _close(cb.scores[name], 3 * want[name], rtol=1e-3)


def test_score_batches_are_padded_labelled_and_drawn_without_replacement(small_tokenizer, train):
    tok = small_tokenizer
    batches = score_inputs.score_batches(tok, train, 3, 8, 16, seed=0)
    assert [len(b["labels"]) for b in batches] == [8, 8, 8]
    for b in batches:
        assert b["input_ids"].shape == b["attention_mask"].shape and b["input_ids"].shape[1] <= 16
        assert set(b["labels"].tolist()) <= {0, 1}
    rows = [tuple(r[m.bool()].tolist()) for b in batches for r, m in zip(b["input_ids"], b["attention_mask"])]
    assert len(set(rows)) == 24                                          # 24 different examples
    again = score_inputs.score_batches(tok, train, 3, 8, 16, seed=0)
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(batches, again))   # seeded
    assert [len(b["labels"]) for b in score_inputs.score_batches(tok, train, 10, 16, 16)] == [16, 16, 8]  # all 40


def test_gather_inputs_gives_each_method_what_it_needs(small_tokenizer, train):
    tok, smoke = small_tokenizer, get_profile("smoke")
    model = _classifier(tok)
    assert score_inputs.gather_inputs(model, "magnitude", tok, train, smoke, 4, 1, seed=3) == {"seed": 3}
    both = score_inputs.gather_inputs(model, "fisher", tok, train, smoke, 3, 1)["batches"]
    assert [len(b["labels"]) for b in both] == [16, 16, 8]              # the profile's batch size, 40 texts
    shares = [score_inputs.gather_inputs(model, "taylor", tok, train, smoke, 3, 1, rank=r, world=2)["batches"]
              for r in (0, 1)]
    assert [len(s) for s in shares] == [2, 1]                           # every world-th batch from rank
    assert torch.equal(shares[0][0]["input_ids"], both[0]["input_ids"])
    with pytest.raises(UserError, match="must be at least the number of processes"):
        score_inputs.gather_inputs(model, "gradient", tok, train, smoke, 1, 1, world=2)
    scores = importance.score(model, "fisher", "weight", **score_inputs.gather_inputs(model, "fisher", tok, train,
                                                                                       smoke, 1, 1))
    assert scores.kind == "weight"


def test_movement_is_gathered_while_fine_tuning(small_tokenizer, train):
    tok, smoke = small_tokenizer, get_profile("smoke")
    model = _classifier(tok)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(UserError, match="at least one scoring step"):
        score_inputs.movement_finetune(model, tok, train, smoke, 0)
    got = score_inputs.gather_inputs(model, "movement", tok, train, smoke, 4, 2, seed=1)
    assert set(got) == {"movement", "seed"} and got["seed"] == 1
    movement = got["movement"]
    assert movement.kind == "weight" and list(movement) == list(importance.zero_movement(model))
    assert all(bool(s.abs().sum() > 0) for s in movement.values())       # every weight moved
    assert not model.training                                            # left in eval mode
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())   # fine-tuned in place
