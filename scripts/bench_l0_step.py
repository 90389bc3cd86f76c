"""Benchmark: time per training step with L0 gates versus plain fine-tuning (issue: at most 1.3x).

Runs the profile's fine-tuned classifier through the ``transformers`` Trainer for ``--steps`` steps, plain and
with hard-concrete gates at each granularity, alternating the runs so that machine noise hits all of them
alike, and prints the median seconds per step and the ratio to plain. Timings are measured, in one process.

    python scripts/bench_l0_step.py --profile tiny --steps 30 --repeats 3
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

from transformers import DataCollatorWithPadding, Trainer

from xlprune_lib.train import data, finetune, runs
from xlprune_lib.loops import l0_training
from xlprune_lib.prune import l0
from xlprune_lib.config import DEFAULT_PROFILE, get_profile, set_seed
from xlprune_lib.xlnet.modeling import load_saved
from xlprune_lib.measure.report import provenance


def seconds_per_step(model, tok, train, profile, steps, granularity=None):
    set_seed(0)
    model = copy.deepcopy(model)
    with tempfile.TemporaryDirectory() as tmp:
        args = runs.training_args(profile, Path(tmp), 0, epochs=1, batch=profile.ft_batch, lr=profile.ft_lr,
                                  progress=False, max_steps=steps)
        kw = dict(model=model, args=args, train_dataset=train, data_collator=DataCollatorWithPadding(tok))
        if granularity:
            l0.attach(model, granularity)
            trainer = l0_training.L0Trainer(lam=1.0, **kw)
        else:
            trainer = Trainer(**kw)
        runs.quiet_trainer(trainer, False)
        start = time.perf_counter()
        trainer.train()
        return (time.perf_counter() - start) / steps


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--profile", default=DEFAULT_PROFILE)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", help="also write the results as JSON here")
    a = p.parse_args()
    runs.quiet_libraries()
    profile = get_profile(a.profile)
    run_dir = finetune.dense_run(profile, seed=0)
    model, tok = load_saved(run_dir), data.load_tokenizer(run_dir)
    train = finetune.tokenize_split(data.load_task(profile.task, profile.max_examples, 0)["train"], tok,
                                    profile.max_seq_len)
    configs = [None, "weight", "neuron", "head", "head+neuron"]
    seconds_per_step(model, tok, train, profile, 3)                       # warm-up
    times = {str(c): [] for c in configs}
    for _ in range(a.repeats):
        for c in configs:
            times[str(c)].append(seconds_per_step(model, tok, train, profile, a.steps, c))
    plain = statistics.median(times["None"])
    result = {"profile": profile.name, "steps": a.steps, "repeats": a.repeats,
              "seconds_per_step": {("plain" if k == "None" else k): statistics.median(v) for k, v in times.items()},
              **provenance({"script": "bench_l0_step", "profile": profile.name, "steps": a.steps})}
    result["ratio_to_plain"] = {k: v / plain for k, v in result["seconds_per_step"].items()}
    for k, v in result["seconds_per_step"].items():
        print(f"{k:<12} {v * 1000:8.1f} ms/step   x{result['ratio_to_plain'][k]:.2f}")
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
