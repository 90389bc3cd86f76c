"""Chapter 1's comparison: which starting point makes a model worth pruning (``data/results/01_models.csv``).

One row per model, every one fine-tuned with the profile's settings on the same by-movie split:

* ``majority`` and ``tfidf-logreg`` (``baselines.py``): what counting words gets;
* ``source-bert``: the MiniLM weights fine-tuned as the BERT they are, the ceiling of the warm start;
* ``mapped``: the MiniLM weights mapped into XLNet (``warmstart.py``), fine-tuned without any training before;
* ``mapped-positions``: the same with the relative-position term fitted to BERT's positions (a closed form);
* ``aligned``: mapped, then trained to reproduce BERT's hidden states (``align.py``), fine-tuned;
* ``warm-start``: the profile's whole path: mapped, aligned, adapted with XLNet's permutation-LM objective,
  then fine-tuned (the book's model);
* ``random-init``: the same XLNet architecture from random weights;
* ``plm-scratch``: the from-scratch 6 x 256 XLNet (profile ``tiny``), PLM-pretrained here, then fine-tuned with
  the same fine-tuning settings (:data:`FT_FIELDS`) as the others.

Every accuracy carries its 95% bootstrap interval (``stats.py``). Runs are cached (``runs.py``), so a table
whose runs exist is read in seconds.
"""
from __future__ import annotations

import dataclasses

from ..train import baselines
from ..train.data import run_data, user_data
from ..train.finetune import dense_run, finetune
from ..train.pretrain import pretrain
from ..train.runs import METRICS
from ..train.warmstart import SOURCE_INIT
from ..config import Profile, UserError, get_profile, read_json

MODELS = ("majority", "tfidf-logreg", "source-bert", "mapped", "mapped-positions", "aligned", "warm-start",
          "random-init", "plm-scratch")
WARM_MODELS = ("source-bert", "mapped", "mapped-positions", "aligned", "warm-start")   # need a warm-start profile
SCRATCH_MODELS = ("random-init", "plm-scratch")   # trained here from random weights: need an offline profile
COLUMNS = ("profile", "seed", "model", "validation_accuracy", "validation_ci_low", "validation_ci_high",
           "test_accuracy", "test_ci_low", "test_ci_high", "train_seconds", "run")
SCRATCH_PROFILE = "tiny"
FT_FIELDS = ("max_seq_len", "ft_epochs", "ft_batch", "ft_lr", "warmup_ratio", "weight_decay", "dropout")


def check_models(names) -> tuple:
    """``names`` as a tuple, or a one-line ``UserError`` naming the first that is not in :data:`MODELS`."""
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        raise UserError(f"unknown model {unknown[0]!r}; valid: {', '.join(MODELS)}")
    return tuple(names)


def models_for(profile: Profile) -> tuple:
    """The models of :data:`MODELS` that ``profile`` can have, in that order.

    :data:`WARM_MODELS` need a warm-start profile. :data:`SCRATCH_MODELS` need an offline profile: on a hub
    profile (``base``) fine-tuning with no init starts from the hub checkpoint, so ``random-init`` would be
    that model again, and the from-scratch rows of ``tiny`` are on another task (the offline corpus, not
    ``profile.task``), so their accuracies cannot stand beside this profile's.
    """
    return tuple(m for m in MODELS if (profile.warm_start or m not in WARM_MODELS)
                 and not (profile.hub_model and m in SCRATCH_MODELS))


def _run_row(profile: Profile, seed: int, model: str, run) -> dict:
    m = read_json(run / METRICS)
    return {"profile": profile.name, "seed": seed, "model": model,
            **{k: m.get(k) for k in COLUMNS[3:-2]}, "train_seconds": m.get("train_seconds"), "run": run.name}


def model_row(profile: Profile, model: str, seed: int = 0, progress: bool = False, data=None) -> dict:
    """The row of one model (computing and caching its runs when they do not exist yet).

    ``data``: the user's data (a folder or hub name, ``data.UserData``) every model is fine-tuned and measured
    on, instead of the profile's task (chapter 1's ``data`` parameter); ``None``: the profile's task.
    """
    check_models([model])
    data = user_data(data)
    if model in ("majority", "tfidf-logreg"):
        splits = run_data(profile, seed, data)[0]
        row = baselines.majority(splits) if model == "majority" else baselines.tfidf_logreg(splits, seed)
        return {"profile": profile.name, "seed": seed, "model": model, **{k: row[k] for k in COLUMNS[3:-2]},
                "train_seconds": None, "run": None}
    if model in WARM_MODELS and not profile.warm_start:
        raise UserError(f"model {model!r} needs a warm-start profile (such as 'minilm'), not {profile.name!r}")
    if model in SCRATCH_MODELS and profile.hub_model:
        raise UserError(f"model {model!r} is trained here from random weights, which profile {profile.name!r} "
                        f"does not do (it starts from {profile.hub_model}); use an offline profile such as 'minilm'")
    if model == "source-bert":
        run = finetune(profile, init=SOURCE_INIT, seed=seed, progress=progress, data=data)
    elif model == "random-init":
        run = finetune(profile, init=None, seed=seed, progress=progress, data=data)
    elif model == "plm-scratch":
        scratch = profile
        if profile.warm_start:   # the from-scratch architecture, fine-tuned with this profile's settings
            scratch = dataclasses.replace(get_profile(SCRATCH_PROFILE), **{k: getattr(profile, k) for k in FT_FIELDS})
        run = finetune(scratch, init=pretrain(scratch, seed=seed, progress=progress), seed=seed, progress=progress,
                       data=data)
        return _run_row(scratch, seed, model, run)
    elif model == "warm-start":
        run = dense_run(profile, seed, progress, data)
    else:
        start = {"mapped": dataclasses.replace(profile, plm_epochs=0.0, align_steps=0, warm_positions=False),
                 "mapped-positions": dataclasses.replace(profile, plm_epochs=0.0, align_steps=0, warm_positions=True),
                 "aligned": dataclasses.replace(profile, plm_epochs=0.0),
                 }[model]
        run = finetune(profile, init=pretrain(start, seed=seed, progress=progress), seed=seed, progress=progress,
                       data=data)
    return _run_row(profile, seed, model, run)


def models_table(profile: Profile, seed: int = 0, models=MODELS, progress: bool = False, data=None) -> list[dict]:
    """Rows of :data:`COLUMNS` for ``models`` (default: all of :data:`MODELS`), in that order; ``data`` as in
    :func:`model_row`."""
    data = user_data(data)   # read and checked once, before any model is trained
    return [model_row(profile, m, seed, progress, data) for m in check_models(models)]
