"""Training the L0 objective (``loops/l0_training.py``): the Trainer with the hard-concrete penalty, its
settings, the penalty itself, the gates' own optimizer group and rate, and reaching a target."""
import copy
import math

import pytest
import torch

from conftest import tiny_config, trainable_classifier
from xlprune_lib.config import UserError, get_profile
from xlprune_lib.loops import l0_training
from xlprune_lib.prune import l0


@pytest.fixture
def model():
    return trainable_classifier()


def test_bad_l0_trainer_settings_are_refused(model, tmp_path):
    from transformers import TrainingArguments

    l0.attach(model, "neuron")
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    for kw, msg in (({"lam": -1.0}, "lambda must be >= 0"), ({"target": 1.0}, r"\[0, 1\)"),
                    ({"target": -0.2}, r"\[0, 1\)"), ({}, "either")):
        with pytest.raises(UserError, match=msg):
            l0_training.L0Trainer(model=model, args=args, **kw)


def _toy_task(n=64, seq=10, seed=0):
    """Label = whether token 20 occurs: learnable by a tiny XLNet in a few dozen steps."""
    from datasets import Dataset

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(21, 120, (n, seq), generator=g)
    labels = torch.arange(n) % 2
    ids[labels == 1, 3] = 20
    return Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": [[1] * seq] * n,
                              "labels": labels.tolist()})


def _train(model, tmp_path, steps, **kw):
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=16, learning_rate=1e-3,
                             max_steps=steps, logging_steps=5, report_to="none", use_cpu=True, disable_tqdm=True,
                             save_strategy="no", seed=0)
    trainer = l0_training.L0Trainer(model=model, args=args, train_dataset=_toy_task(), **kw)
    trainer.train()
    return trainer


def test_target_sparsity_is_reached_within_one_point(model, tmp_path):
    l0.attach(model, "head+neuron")
    trainer = _train(model, tmp_path, 160, target=0.5, l0_lr=0.1, target_warmup=0.4)
    final = trainer.l0_history[-1]
    assert abs(final["expected_sparsity"] - 0.5) <= 0.01, final
    logged = [h for h in trainer.state.log_history if "expected_l0" in h]
    assert logged and {"expected_sparsity", "lambda_1", "lambda_2", "task_loss"} <= set(logged[-1])
    assert len(trainer.l0_history) == 160


def test_fixed_lambda_trades_sparsity_for_loss(model, tmp_path):
    sparsities = []
    for lam in (0.0, 2.0):
        m = copy.deepcopy(model)
        l0.attach(m, "neuron")
        sparsities.append(_train(m, tmp_path / str(lam), 40, lam=lam, l0_lr=0.1).l0_history[-1]["expected_sparsity"])
    assert sparsities[1] > sparsities[0] + 0.05


def test_the_penalty_of_a_fixed_lambda_and_of_a_target(model, tmp_path):
    """``lam * (1 - E[sparsity])``; with a target, the Lagrangian ``l1 * gap + l2 * gap^2`` of the gap to the
    target (ramped up from the first step), ``l2`` starting at ``quadratic_init``."""
    from transformers import TrainingArguments

    l0.attach(model, "head")
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    fixed = l0_training.L0Trainer(model=model, args=args, lam=0.5)
    expected = torch.tensor(0.3, requires_grad=True)
    value, info = fixed.penalty(expected)
    assert float(value.detach()) == pytest.approx(0.5 * 0.7) and info == {"lambda": 0.5}
    value.backward()
    assert float(expected.grad) == pytest.approx(-0.5)                   # more sparsity, less penalty
    target = l0_training.L0Trainer(model=model, args=args, target=0.5, quadratic_init=10.0, target_warmup=0.5)
    target.state.max_steps, target.state.global_step = 10, 0
    assert target.current_target() == pytest.approx(0.5 * 1 / 5)        # ramped over half of 10 steps
    target.state.global_step = 7
    assert target.current_target() == 0.5
    value, info = target.penalty(torch.tensor(0.2))
    assert float(value) == pytest.approx(10.0 * 0.3 ** 2)              # lambda_1 starts at 0
    assert info == {"lambda_1": 0.0, "lambda_2": 10.0, "target": 0.5}


def test_train_l0_trains_weights_and_gates_and_leaves_the_gates_on(small_tokenizer, rows):
    """``train_l0`` on the smoke profile's settings: the gates are attached and trained at a constant rate with
    no momentum, the model's rate follows the profile's decaying schedule, every step is in ``l0_history``."""
    from datasets import Dataset
    from transformers import XLNetForSequenceClassification

    from xlprune_lib.train.finetune import tokenize_split

    tok, smoke = small_tokenizer, get_profile("smoke")
    ds = Dataset.from_dict({"text": [r["text"] for r in rows[:48]], "label": [i % 2 for i in range(48)]})
    torch.manual_seed(0)
    model = XLNetForSequenceClassification(tiny_config(vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                                                       num_labels=2))
    enc = {"train": tokenize_split(ds, tok, smoke.max_seq_len)}
    trainer, seconds = l0_training.train_l0(model, tok, enc, smoke, 0, "neuron", lam=1.0, progress=False,
                                            l0_lr=0.05)
    steps = -(-len(ds) // smoke.ft_batch)                                # one epoch
    assert hasattr(model, "l0_gates") and trainer.state.global_step == steps and seconds > 0
    assert [h["step"] for h in trainer.l0_history] == list(range(1, steps + 1))
    assert {"task_loss", "expected_l0", "expected_sparsity", "penalty", "lambda"} <= set(trainer.l0_history[-1])
    gates = trainer.optimizer.param_groups[2]
    assert {id(p) for p in gates["params"]} == {id(p) for p in model.l0_gates.all_log_alpha()}
    assert gates["lr"] == 0.05 and gates["betas"][0] == 0.0 and gates["weight_decay"] == 0.0
    assert trainer.optimizer.param_groups[0]["lr"] < smoke.ft_lr                    # decayed by the schedule
    start = math.log(0.9) - math.log(0.1)                                # HardConcrete's init_keep
    trained = torch.cat([la.detach().flatten() for la in model.l0_gates.all_log_alpha()])
    assert float(trained.mean()) < start                                # the penalty closes gates on average
