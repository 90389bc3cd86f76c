"""A chapter's inline measurements on the dense classifier, each computed once and cached.

The pruning runs of the chapters are cached runs already; what a chapter measures besides them (accuracy
curves over pruned copies, layer drops with a short fine-tuning, chapter 2's scores and scans) goes through
:func:`memo.measured`, keyed by the dense run, the pruning code's version and the grid, so a rebuild redraws
the chapter without evaluating a pruned copy or training again. The model, the data and the evaluator are
loaded only when a measurement is missing from the cache.
"""
from __future__ import annotations

from functools import cached_property

from ..config import Profile, cache_key, get_profile, set_seed
from ..loops import oneshot
from . import experiments
from ..prune.plan import PruningPlan
from ..train import data as train_data, finetune
from ..train.runs import content_key
from ..xlnet.modeling import load_saved
from . import memo


class DenseStudy:
    """The dense run of ``profile`` at ``seed`` (``finetune.dense_run``, trained when missing) and cached
    measurements on it. Accuracies are fractions in [0, 1] with their 95% bootstrap intervals; ``sizes`` gives
    the examples behind them.

    ``data``: a chapter's ``data`` parameter, the user's data (a folder of split files or a hub name,
    ``data.UserData``): the dense run is fine-tuned on it and every measurement uses its splits; ``None``: the
    profile's task. Bad data is a one-line ``UserError`` before any training.
    """

    def __init__(self, profile: Profile | str, seed: int = 0, data=None):
        self.profile = get_profile(profile) if isinstance(profile, str) else profile
        self.seed = seed
        self.user = train_data.user_data(data)
        self.run_dir = finetune.dense_run(self.profile, seed=seed, data=self.user)
        # the profile's every setting is in the key: a profile changed under the same name measures again
        self.grid = {"profile": self.profile.name, "profile_settings": cache_key(self.profile.to_dict()), "seed": seed,
                     **(self.user.key() if self.user is not None else {})}

    def _measured(self, kind: str, compute, **more):
        return memo.measured(kind, compute, self.run_dir, **self.grid, **more)

    # --- inputs, loaded only when a measurement is missing -------------------------------------------------
    @cached_property
    def data(self):
        """train / validation / test (``text``, ``label``): the profile's task, or the user's data."""
        return train_data.run_data(self.profile, self.seed, self.user)[0]

    @cached_property
    def tokenizer(self):
        return train_data.load_tokenizer(self.run_dir)

    @cached_property
    def model(self):
        return load_saved(self.run_dir).eval()

    @cached_property
    def evaluator(self) -> finetune.Evaluator:
        return finetune.Evaluator(self.tokenizer, {"validation": self.data["validation"], "test": self.data["test"]},
                                  self.profile.max_seq_len, intervals=True)

    @cached_property
    def sizes(self) -> dict[str, int]:
        """Examples per evaluation split, for intervals on accuracies recorded earlier."""
        return {split: len(self.data[split]) for split in ("validation", "test")}

    def validation(self, model) -> dict:
        """Validation accuracy and interval only: what the curves are drawn on."""
        return self.evaluator(model, ["validation"])

    # --- measurements (cached) ----------------------------------------------------------------------------
    def oneshot_curve(self, sparsities, method: str = "magnitude", granularity: str = "weight",
                      splits=("validation", "test")) -> list[dict]:
        """One-shot pruning by ``method`` at each sparsity of ``granularity`` (global for weights), no
        fine-tuning: rows with the requested and measured ``sparsity`` and the accuracy on ``splits``
        (``experiments.curve``; scores that need no data: magnitude, random)."""
        def compute():
            spec = oneshot.PruneSpec(method, granularity, 0.0)
            return experiments.curve(self.model, spec, sparsities, oneshot.spec_scores(self.model, spec, seed=self.seed),
                                     lambda m: self.evaluator(m, list(splits)))
        return self._measured("oneshot-curve", compute, method=method, granularity=granularity,
                              sparsities=list(sparsities), splits=list(splits))

    def layer_drops(self, drops, steps: int) -> list[dict]:
        """Drop the top ``k`` layers for each ``k`` in ``drops`` (those between 1 and n_layer - 1), then fine-tune
        ``steps`` optimizer steps at the profile's ``recovery_lr``.

        One row per ``k``: ``layers dropped``, ``layers left``, ``parameters`` (share of the dense model's),
        validation accuracy before and after the fine-tuning, test accuracy after, and its ``seconds`` (wall
        clock of the run that made the cache entry). Sajjad et al. (2023) find the top layers the cheapest to drop.
        """
        def compute():
            n_layer = len(PruningPlan.of(self.model).layers)
            total = sum(p.numel() for p in self.model.parameters())
            train = {"train": finetune.tokenize_split(self.data["train"], self.tokenizer, self.profile.max_seq_len)}
            rows = []
            for k in [k for k in drops if 0 < k < n_layer]:
                m = load_saved(self.run_dir)
                PruningPlan.of(m).without("layer", list(range(n_layer - k, n_layer))).apply_surgery(m)
                before = self.evaluator(m)
                set_seed(self.seed)
                _, seconds = finetune.train_classifier(m, self.tokenizer, train, self.profile, self.seed, 1.0,
                                                       progress=False, steps=steps, lr=self.profile.recovery_lr)
                after = self.evaluator(m)
                rows.append({"layers dropped": k, "layers left": n_layer - k,
                             "parameters": sum(p.numel() for p in m.parameters()) / total,
                             "validation before fine-tuning": before["validation_accuracy"],
                             "validation after": after["validation_accuracy"], "test after": after["test_accuracy"],
                             "seconds": seconds})
            return rows
        return self._measured("layer-drops", compute, drops=list(drops), steps=steps)

    def forgetting(self, model_dir, split: str = "test") -> dict:
        """Per-example logits of the dense model and of the pruned model saved in ``model_dir`` on ``split``, in
        the split's order: ``labels`` (n), ``dense`` and ``pruned`` (n × classes), for ``measure.forgetting``
        (Hooker et al. 2019)."""
        def compute():
            dense, labels = self.evaluator.logits(self.model, split)
            pruned, _ = self.evaluator.logits(load_saved(model_dir).eval(), split)
            return {"labels": labels, "dense": dense, "pruned": pruned}
        return self._measured("forgetting", compute, pruned=content_key(model_dir), split=split)
