"""Sentence-classification fine-tuning and evaluation with ``XLNetForSequenceClassification``.

The classifier reads the hidden state of the final ``<cls>`` token (XLNet puts it last and pads on the left),
passes it through ``sequence_summary`` (dense + tanh) and ``logits_proj``. Training is the ``transformers``
Trainer with dynamic padding (``DataCollatorWithPadding``); evaluation reports accuracy and, for GLUE tasks,
the task's official metric (SST-2: accuracy; CoLA: Matthews correlation).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import DataCollatorWithPadding, Trainer

from .baselines import majority_label
from .data import load_tokenizer, profile_tokenizer, run_data, user_data
from .distill import DistillationTrainer, TEACHER_COLUMN, WithTeacher, teacher_logits
from .pretrain import pretrain
from .runs import (METRICS, content_key, default_out, loss_curve, precision_record, produce_run, quiet_trainer,
                   run_key, training_args)
from .warmstart import SOURCE_INIT, pooler_into_summary, source_classifier, source_key, source_tokenizer
from ..config import Profile, set_seed
from ..measure.report import provenance
from ..measure.stats import accuracy_ci
from ..xlnet.modeling import build_classifier, check_supported, load_classifier, save_model


def matthews_corrcoef(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Matthews correlation for binary labels (Matthews 1975), GLUE's CoLA metric."""
    tp = float(np.sum((y_pred == 1) & (y_true == 1)))
    tn = float(np.sum((y_pred == 0) & (y_true == 0)))
    fp = float(np.sum((y_pred == 1) & (y_true == 0)))
    fn = float(np.sum((y_pred == 0) & (y_true == 1)))
    den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / den) if den else 0.0


def classification_metrics(logits: np.ndarray, labels: np.ndarray, glue_metric: str = "accuracy",
                           intervals: bool = True) -> dict:
    """``accuracy`` with (``intervals``) its 95% bootstrap interval over the examples (``ci_low``, ``ci_high``:
    ``stats.py``), and the GLUE metric where the task has one. ``logits``: ``(n, classes)``; ``labels``: ``(n,)``."""
    pred = logits.argmax(-1)
    correct = pred == labels
    out = {"accuracy": float(correct.mean())}
    if intervals:

        out["ci_low"], out["ci_high"] = accuracy_ci(correct)
    if glue_metric == "matthews_correlation":
        out[glue_metric] = matthews_corrcoef(labels, pred)
    return out


def tokenize_split(ds, tokenizer, max_len: int):
    return ds.map(lambda b: tokenizer(b["text"], truncation=True, max_length=max_len), batched=True,
                  remove_columns=["text"])


def majority_baseline(train_labels, test_labels) -> float:
    """Accuracy on ``test_labels`` of always predicting the most frequent label of ``train_labels``."""
    return float((np.asarray(test_labels) == majority_label(train_labels)).mean())


def finetune_config(profile: Profile, seed: int, init: str | None, data=None) -> dict:
    """The run's cache key fields; ``data`` (``data.UserData``) adds the user's data and its digest."""
    keys = ("task", "max_examples", "max_seq_len", "ft_epochs", "ft_batch", "ft_lr", "warmup_ratio",
            "weight_decay", "dropout", "precision")
    cfg = {"profile": profile.name, "seed": seed, **{k: getattr(profile, k) for k in keys},
           **(data.key() if data is not None else {})}
    if profile.warm_start and init and init != SOURCE_INIT:
        cfg["summary"] = "source-pooler"     # warmstart.pooler_into_summary
    if distills(profile, init):
        cfg.update(distill_alpha=profile.distill_alpha, distill_temperature=profile.distill_temperature,
                   teacher=f"{SOURCE_INIT}-{source_key()}")
    # in the order finetune chooses its start: a given init comes before the profile's hub model
    if init == SOURCE_INIT:
        cfg["init"] = f"{SOURCE_INIT}-{source_key()}"
    elif init:   # the folder's weights, config and tokenizer, not its path or label
        cfg["init"] = content_key(init)
    elif profile.hub_model:
        cfg["init"] = profile.hub_model
    else:
        cfg["init"] = None
        cfg.update({k: getattr(profile, k) for k in ("n_layer", "n_head", "d_model", "d_inner", "vocab_size")})
    return cfg


def distills(profile: Profile, init) -> bool:
    """Whether fine-tuning from ``init`` learns from the source-BERT teacher too (a warm-start profile with
    ``distill_alpha > 0``; never the teacher itself)."""
    return bool(profile.warm_start and profile.distill_alpha > 0 and init != SOURCE_INIT)


class Evaluator:
    """Accuracy (and the GLUE metric) of any classifier on fixed splits, tokenized once.

    For the many evaluations of a pruning sweep: examples are sorted by length so each batch pads little,
    and the forward passes run under ``torch.inference_mode`` in eval mode. ``evaluator(model)`` returns
    ``{"<split>_accuracy": ..., "<split>_ci_low": ..., "<split>_ci_high": ..., ...}`` (the 95% interval of
    ``stats.py``; ``intervals=False`` leaves it out). ``sizes`` gives the examples per split, for
    ``stats.add_intervals`` on rows recorded earlier.
    """
    def __init__(self, tokenizer, splits: dict, max_len: int, glue_metric: str = "accuracy", batch: int = 64,
                 intervals: bool = True):

        self.glue_metric, self.batch, self.intervals = glue_metric, batch, intervals
        self.collate = DataCollatorWithPadding(tokenizer, return_tensors="pt")
        self.splits, self.order = {}, {}
        for name, ds in splits.items():
            enc = tokenize_split(ds, tokenizer, max_len)
            order = sorted(range(len(enc)), key=lambda i: len(enc[i]["input_ids"]))
            self.splits[name], self.order[name] = [enc[i] for i in order], np.asarray(order)
        self.sizes = {name: len(rows) for name, rows in self.splits.items()}

    def logits(self, model, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(logits (n, classes), labels (n,))`` of split ``name``, in the split's own example order."""
        rows, device = self.splits[name], next(model.parameters()).device
        logits, labels = [], []
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            for i in range(0, len(rows), self.batch):
                b = self.collate(rows[i:i + self.batch])
                labels.append(b.pop("labels").numpy())
                logits.append(model(**{k: v.to(device) for k, v in b.items()}).logits.float().cpu().numpy())
        model.train(was_training)
        back = np.argsort(self.order[name])        # from length order back to the split's order
        return np.concatenate(logits)[back], np.concatenate(labels)[back]

    def split(self, model, name: str) -> dict:
        return classification_metrics(*self.logits(model, name), self.glue_metric, self.intervals)

    def __call__(self, model, splits=None) -> dict:
        return {f"{name}_{k}": v for name in (splits or self.splits) for k, v in self.split(model, name).items()}


def evaluate(model, tokenizer, dataset, glue_metric: str = "accuracy", batch: int = 64, max_len: int = 128) -> dict:
    """Metrics of ``model`` on one split (``text``, ``label``)."""
    return Evaluator(tokenizer, {"split": dataset}, max_len, glue_metric, batch).split(model, "split")


def train_classifier(model, tokenizer, enc: dict, profile: Profile, seed: int, epochs: float,
                     glue_metric: str = "accuracy", progress: bool = True, callbacks=None, steps: int | None = None,
                     out: Path | None = None, resume: Path | None = None, lr: float | None = None,
                     teacher: np.ndarray | None = None, **args):
    """Train ``model`` on ``enc["train"]`` with the profile's fine-tuning settings; return ``(trainer, seconds)``.

    Used for fine-tuning and for recovery after pruning: masks from ``torch.nn.utils.prune`` stay applied,
    because their forward pre-hooks run in every step and the masked entries receive zero gradient.
    ``steps`` caps the optimizer steps (a round's budget); ``lr`` replaces the profile's ``ft_lr`` (recovery
    after pruning uses ``recovery_lr``: the model is already trained, and the from-scratch rate undoes some of
    that); ``out`` keeps the Trainer's folder (for its own checkpoints, with ``args`` such as
    ``save_strategy``) and ``resume`` continues from one of them. ``teacher``: logits ``(n_train, classes)`` of
    a teacher on ``enc["train"]``, in order; the loss is then ``distill.distillation_loss`` with the profile's
    ``distill_alpha`` and ``distill_temperature`` (Hinton et al. 2015).
    """

    train, cls, extra, collator = enc["train"], Trainer, {}, DataCollatorWithPadding(tokenizer)
    if teacher is not None:
        train = train.add_column(TEACHER_COLUMN, np.asarray(teacher, dtype=np.float32).tolist())
        cls, extra = DistillationTrainer, {"alpha": profile.distill_alpha, "temperature": profile.distill_temperature}
        args["remove_unused_columns"], collator = False, WithTeacher(collator)
    with tempfile.TemporaryDirectory() as tmp:
        if steps is not None:
            args["max_steps"] = steps
        args = {"train_sampling_strategy": "group_by_length", **args}
        targs = training_args(profile, Path(out or tmp), seed, epochs=epochs, batch=profile.ft_batch,
                              lr=lr or profile.ft_lr, progress=progress, **args)
        trainer = cls(model=model, args=targs, train_dataset=train, eval_dataset=enc.get("validation"),
                      data_collator=collator, callbacks=callbacks,
                      compute_metrics=lambda p: classification_metrics(p.predictions, p.label_ids, glue_metric),
                      **extra)
        quiet_trainer(trainer, progress)
        start = time.perf_counter()
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        return trainer, time.perf_counter() - start


def finetune(profile: Profile, out: Path | str | None = None, init: str | Path | None = None, seed: int = 0,
             progress: bool = True, data=None) -> Path:
    """Fine-tune a classifier on the profile's task; write checkpoint, tokenizer and ``metrics.json``.

    ``init``: a PLM-pretrained folder (``pretrain``); ``None`` starts from random weights (offline profiles)
    or from the profile's hub model (``base``); ``"source-bert"`` fine-tunes the warm start's source weights as
    the BERT they are (``warmstart.source_classifier``), the ceiling of a warm start. A warm-start folder gets
    the source's pooler as its summary layer (``warmstart.pooler_into_summary``) and, with ``distill_alpha``,
    learns from the source-BERT teacher too (``distill.py``). ``metrics.json`` holds ``validation_accuracy``,
    ``test_accuracy`` and their 95% intervals (``*_ci_low`` / ``*_ci_high``), ``majority_baseline``, the GLUE
    metric where the task has one, ``train_seconds``, the loss curve, ``precision`` (requested and delivered,
    ``runs.precision_record``) and provenance. Reuses ``out`` when it already holds this configuration.
    ``data``: the user's data instead of the profile's task (a folder of split files or a hub name,
    :class:`data.UserData`; the classifier's labels are the data's); ``metrics.json`` records it (``data``:
    source, digest, split sizes, whether validation was carved from train).
    """
    if init is not None and init != SOURCE_INIT:
        init = check_supported(init, tokenizer=True)
    user = user_data(data)
    cfg = finetune_config(profile, seed, init and str(init), user)
    key = run_key("finetune", cfg)
    out = Path(out) if out else default_out("finetune", profile, key)
    return produce_run(out, key, lambda: _finetune(profile, out, init, seed, progress, cfg, key, user))



def _finetune(profile: Profile, out: Path, init, seed: int, progress: bool, cfg: dict, key: str, user) -> Path:
    """:func:`finetune`'s training, evaluation and save into ``out`` (under its lock, ``runs.produce_run``);
    ``user``: the user's data (:class:`data.UserData`) or ``None`` for the profile's task."""
    data, glue_metric, data_record = run_data(profile, seed, user)
    names = getattr(data["train"].features["label"], "names", None)  # saved as id2label: pipelines show them
    set_seed(seed)  # the new classifier head of a pretrained model is initialised from this state
    if init == SOURCE_INIT:
        tok, model = source_tokenizer(), source_classifier(names)
    elif init is not None:
        tok, model = load_tokenizer(init), load_classifier(init, names)
        if profile.warm_start:   # the source's pooler is the same function as XLNet's summary layer
            pooler_into_summary(model)
    elif profile.hub_model:
        tok, model = profile_tokenizer(profile), load_classifier(profile.hub_model, names)
    else:
        tok = profile_tokenizer(profile)
        model = build_classifier(profile, len(tok), seed, names)
    enc = {k: tokenize_split(data[k], tok, profile.max_seq_len) for k in ("train", "validation", "test")}

    teacher = None
    if distills(profile, init):
        teacher_run = finetune(profile, init=SOURCE_INIT, seed=seed, progress=progress, data=user)
        teacher = teacher_logits(teacher_run, list(data["train"]["text"]), profile.max_seq_len)
    set_seed(seed)
    trainer, seconds = train_classifier(model, tok, enc, profile, seed, profile.ft_epochs, glue_metric, progress,
                                        teacher=teacher)
    val = trainer.evaluate(enc["validation"], metric_key_prefix="validation")
    test = trainer.evaluate(enc["test"], metric_key_prefix="test")
    metrics = {
        "config_key": key, "profile": profile.name, "task": data_record.get("task"), "data": data_record,
        "seed": seed,
        "init": str(init) if init else profile.hub_model,
        "validation_accuracy": val["validation_accuracy"], "test_accuracy": test["test_accuracy"],
        **{f"{split}_{end}": m[f"{split}_{end}"] for split, m in (("validation", val), ("test", test))
           for end in ("ci_low", "ci_high")},
        "majority_baseline": majority_baseline(data["train"]["label"], data["test"]["label"]),
        "glue_metric": glue_metric, "test_glue_metric": test.get(f"test_{glue_metric}"),
        "train_seconds": seconds, "loss_curve": loss_curve(trainer.state.log_history),
        "sizes": {k: len(v) for k, v in data.items()},
        "parameters": sum(p.numel() for p in model.parameters()),
        "precision": precision_record(profile),
        **provenance(cfg),
    }
    save_model(model, tok, out, extra_files={METRICS: metrics})
    return out


PRETRAIN_SEED = 0   # the one adapted checkpoint the chapters fine-tune, whatever their seed (dense_run)


def dense_run(profile: Profile, seed: int = 0, progress: bool = False, data=None) -> Path:
    """The fine-tuned model the chapters prune, as a run folder (computed and cached when missing).

    On a warm-start profile (``minilm``) the whole warm-start path: ``pretrain`` (map, align, permutation-LM
    adaptation), then :func:`finetune` from it; on the others the profile's own start (random weights offline,
    the hub checkpoint on ``base``). Chapter 1's ``warm-start`` row is the same run.

    The adapted checkpoint is made once, at :data:`PRETRAIN_SEED`, and shared by every ``seed``, the way a
    released pretrained model is: ``seed`` varies the fine-tuning and everything after it, which is the spread
    ``make results`` reports over seeds. ``data``: the user's data (a folder or hub name, ``data.UserData``) to
    fine-tune on instead of the profile's task (a chapter's ``data`` parameter); pretraining is unchanged.
    """
    if profile.warm_start:
        init = pretrain(profile, seed=PRETRAIN_SEED, progress=progress)
        return finetune(profile, init=init, seed=seed, progress=progress, data=data)
    return finetune(profile, seed=seed, progress=progress, data=data)
