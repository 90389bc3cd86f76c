"""Chapter 2's measurements on one dense classifier, each computed once and cached.

Every public method returns JSON-able rows or numbers through :func:`memo.measured`, keyed by the dense run,
the pruning code's version and the grid that defines it, so a rebuild with cached checkpoints redraws the
chapter without recomputing a score or evaluating a pruned copy. The expensive inputs (the model, the scoring
batches, the scores of every method, the movement fine-tuning) are loaded or computed only when a measurement
is missing from the cache, and then once.

The measurements themselves are :mod:`.experiments` (curves, sensitivity, ablation) and
:mod:`..prune.importance` (scores); this module only decides what chapter 2 measures on which model.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import io
import time
from functools import cached_property

import torch

from ..config import Profile, cache_key, read_json
from ..loops import oneshot
from ..loops.score_inputs import movement_finetune, score_batches
from ..measure import ranks, report
from ..prune import importance, select
from ..train import baselines
from ..xlnet.masks import current_weight
from ..xlnet.structure import XLNetStructure
from . import experiments, memo
from .dense_study import DenseStudy

WEIGHT_METHODS = ("magnitude", "gradient", "taylor", "fisher")   # + random (the control) and movement
UNIT_METHODS = ("taylor", "magnitude", "fisher", "random")        # head and neuron scores compared


def lowest(scores: torch.Tensor, sparsity: float, order: torch.Tensor | None = None) -> torch.Tensor:
    """Indices of the ``int(sparsity * n)`` lowest of ``scores`` (shape ``(n,)``), ties by position: one global
    cut over a flattened score (``select.lowest``; ``select.WeightSparsity`` also masks exact zeros first, and on
    trained weights the two agree). ``order``: every index, lowest first (``select.lowest(scores, n)``), when it
    is already computed. Raises ``ValueError`` unless ``0 <= sparsity < 1``."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    k = int(sparsity * len(scores))
    return select.lowest(scores, k) if order is None else order[:k]


def movement_anatomy(flat: dict[str, torch.Tensor], sparsities) -> dict:
    """Why one-shot movement pruning can do worse than random: its sign against its size.

    ``flat``: every weight score as one vector over the prunable set (shape ``(n,)`` each), with ``movement``
    (``S = -sum_t w_t g_t``, Sanh et al. 2020, eq. 5) and ``taylor`` (``|w g|``, Molchanov et al. 2017, the
    first-order loss change of removing a weight); ``sparsities``: fractions in [0, 1). Returns

    - ``negative_share``: fraction of weights with ``S < 0`` (the ones pruned first);
    - ``rho_signed``, ``rho_magnitude``: Spearman correlation of ``S`` and of ``|S|`` with Taylor, in [-1, 1];
    - ``taylor_keep_removed``: rows ``{"method", "requested", "removed"}``, one per score and sparsity: the share
      of the weights Taylor keeps at that sparsity (its top ``1 - sparsity``, what the loss needs most to first
      order) that the score's cut (:func:`lowest`) removes. Taylor removes none of them by construction; random
      removes about ``sparsity`` of them.
    """
    movement, taylor = flat["movement"], flat["taylor"]
    order = {m: select.lowest(s, len(s)) for m, s in flat.items()}    # each score sorted once
    rows = []
    for sparsity in sparsities:
        keep = torch.ones(len(taylor), dtype=torch.bool)
        keep[lowest(taylor, sparsity, order["taylor"])] = False
        for m, o in order.items():
            removed = keep[lowest(flat[m], sparsity, o)].sum() / keep.sum()
            rows.append({"method": m, "requested": sparsity, "removed": removed.item()})
    return {"negative_share": (movement < 0).float().mean().item(), "rho_signed": ranks.spearman(movement, taylor),
            "rho_magnitude": ranks.spearman(movement.abs(), taylor), "taylor_keep_removed": rows}


class ScoreStudy(DenseStudy):
    """The dense run of ``profile`` at ``seed`` and what chapter 2 measures on it (no fine-tuning after pruning).

    ``score_batches``: training batches (of the profile's fine-tuning batch size) behind the gradient, Taylor
    and Fisher scores; ``movement_steps``: fine-tuning steps over which movement scores accumulate (Sanh et al.
    2020, eq. 5); ``data``: the user's data (as in :class:`DenseStudy`). Accuracies are fractions in [0, 1] with their 95% bootstrap intervals.
    """

    def __init__(self, profile: Profile | str, seed: int = 0, score_batches: int = 8, movement_steps: int = 60,
                 data=None):
        super().__init__(profile, seed, data)
        self.grid.update(score_batches=score_batches, movement_steps=movement_steps)

    # --- inputs, computed only when a measurement is missing ------------------------------------------------
    @cached_property
    def batches(self) -> list[dict]:
        return score_batches(self.tokenizer, self.data["train"], self.grid["score_batches"],
                                        self.profile.ft_batch, self.profile.max_seq_len, self.seed)

    @cached_property
    def _weights(self) -> dict:
        """Every weight score, the movement-fine-tuned copy they were partly taken on, and the seconds each took."""
        scores, seconds = {}, {}
        for method in WEIGHT_METHODS:
            start = time.perf_counter()
            scores[method] = importance.score(self.model, method, "weight", self.batches)
            seconds[method] = time.perf_counter() - start
        scores["random"], seconds["random"] = importance.score(self.model, "random", "weight", seed=self.seed), 0.0
        moved = copy.deepcopy(self.model)
        start = time.perf_counter()
        scores["movement"] = movement_finetune(moved, self.tokenizer, self.data["train"], self.profile,
                                                          self.grid["movement_steps"], self.seed)
        seconds["movement"] = time.perf_counter() - start
        return {"scores": scores, "seconds": seconds, "moved": moved}

    def _scored_model(self, method: str):
        """The model a weight score was taken on: movement scores belong to the copy fine-tuned while scoring."""
        return self._weights["moved"] if method == "movement" else self.model

    @cached_property
    def _unit_scores(self) -> dict:
        return {kind: {m: importance.score(self.model, m, kind, self.batches, seed=self.seed) for m in UNIT_METHODS}
                for kind in ("head", "neuron")}

    # --- measurements (cached) -------------------------------------------------------------------------------
    def dense(self) -> dict:
        """The dense model's validation and test accuracy with intervals."""
        return self._measured("ch2-dense", lambda: self.evaluator(self.model))

    def majority(self) -> dict:
        """The majority-class baseline (:func:`baselines.majority`)."""
        return baselines.majority(self.data)

    def tfidf(self) -> dict:
        """TF-IDF + logistic regression on the same split (chapter 1's word-count baseline), without the
        per-example correctness."""
        return memo.measured("tfidf-logreg", lambda: {
            k: v for k, v in baselines.tfidf_logreg(self.data, self.seed).items() if not k.endswith("_correct")},
            profile=self.profile.name, seed=self.seed, task=self.profile.task, max_examples=self.profile.max_examples,
            **(self.user.key() if self.user is not None else {}))

    def prunable_count(self) -> dict:
        """``prunable``: weights in the prunable set (attention q, k, v, o, r and FFN); ``total``: all parameters
        (both counted by ``report.layer_report``)."""
        def count():
            totals = report.layer_report(self.model)["totals"]
            return {"prunable": totals["prunable"]["params"], "total": totals["model"]["params"]}
        return self._measured("ch2-parameter-count", count)

    def weight_scoring(self) -> dict:
        """``seconds`` each weight score took, ``examples`` it read, and ``movement_start``: the accuracy of the
        copy after its movement-scoring steps (the point movement pruning starts from)."""
        def compute():
            steps, batch = self.grid["movement_steps"], self.profile.ft_batch
            labelled = sum(len(b["labels"]) for b in self.batches)
            examples = {m: 0 if m in ("magnitude", "random") else steps * batch if m == "movement" else labelled
                        for m in self._weights["seconds"]}
            return {"seconds": self._weights["seconds"], "examples": examples,
                    "movement_start": self.evaluator(self._weights["moved"])}
        return self._measured("ch2-weight-scoring", compute)

    def weight_curves(self, sparsities) -> list[dict]:
        """One-shot global weight pruning at each sparsity, every score, no fine-tuning: one row per method and
        sparsity (``requested``, measured ``sparsity``, validation and test accuracy), plus each method's start
        at sparsity 0 (the dense model; for movement the copy after its scoring steps)."""
        def compute():
            rows = []
            for method, s in self._weights["scores"].items():
                base = self._scored_model(method)
                start = self.weight_scoring()["movement_start"] if method == "movement" else self.dense()
                rows.append({"method": method, "granularity": "weight", "requested": 0.0, "sparsity": 0.0, **start})
                rows += experiments.curve(base, oneshot.PruneSpec(method, "weight", 0.0), sparsities, s,
                                          self.evaluator)
            return rows
        return self._measured("ch2-weight-curves", compute, sparsities=list(sparsities))

    def score_correlation(self) -> dict:
        """Spearman rank correlation between the weight scores: ``methods`` and the matrix ``rho`` (list of rows)."""
        def compute():
            flat = self._flat_scores
            return {"methods": list(flat), "rho": ranks.spearman_matrix(list(flat.values())).tolist()}
        return self._measured("ch2-score-correlation", compute)

    @cached_property
    def _flat_scores(self) -> dict:
        """Every weight score as one vector over the prunable set (flattened once, read by two measurements)."""
        return {m: s.flat() for m, s in self._weights["scores"].items()}

    def inside_cut(self, sparsity: float) -> dict:
        """What each score removes at ``sparsity`` (global threshold): the mean |w| removed over the mean |w| of
        all prunable weights, and the share of the largest 10% by |w| that is removed (the 90% quantile is taken
        on a 1M-weight sample). ``{method: {"mean_removed_ratio": x, "largest_removed": y}}``."""
        def compute():
            out = {}
            for method, s in self._flat_scores.items():
                source = self._scored_model(method)
                w = torch.cat([current_weight(m, n).detach().abs().reshape(-1) for m, n in XLNetStructure(source).prunable()])
                cut = lowest(s, sparsity)
                sample = w[torch.randperm(len(w), generator=torch.Generator().manual_seed(self.seed))[:1_000_000]]
                largest = w >= torch.quantile(sample, 0.9)
                out[method] = {"mean_removed_ratio": (w[cut].mean() / w.mean()).item(),
                               "largest_removed": (largest[cut].sum() / largest.sum()).item()}
            return out
        return self._measured("ch2-inside-cut", compute, sparsity=sparsity)

    def movement_anatomy(self, sparsities) -> dict:
        """:func:`movement_anatomy` of this model's weight scores (movement's taken on the copy it fine-tuned)."""
        return self._measured("ch2-movement-anatomy", lambda: movement_anatomy(self._flat_scores, sparsities),
                              sparsities=list(sparsities))

    def head_importance(self) -> list[list[float]]:
        """Taylor (gate-gradient) head scores, each layer divided by its L2 norm: ``n_layer`` rows of ``n_head``."""
        def compute():
            return torch.stack([h / h.norm() for h in self._unit_scores["head"]["taylor"].per_layer()]).tolist()
        return self._measured("ch2-head-importance", compute)

    def _unit_curve(self, kind: str, method: str, fractions) -> list[dict]:
        return experiments.curve(self.model, oneshot.PruneSpec(method, kind, 0.0), fractions,
                                 self._unit_scores[kind][method], self.validation)

    @cached_property
    def _n_heads(self) -> int:
        """Heads of the dense model, read from its ``config.json`` (a cache key needs no model load)."""
        config = read_json(self.run_dir / "config.json")
        return config["n_layer"] * config["n_head"]

    def head_fractions(self) -> dict:
        """The shares of heads each head score is tried at: Taylor on a grid of about 1/16, the others on every
        second point of it. ``{method: [fraction, ...]}``."""
        n_heads = self._n_heads
        fine = [k / n_heads for k in range(0, n_heads, max(1, n_heads // 16))][1:]
        return {"taylor": fine, **{m: fine[1::2] for m in UNIT_METHODS if m != "taylor"}}

    def head_curves(self) -> list[dict]:
        """One-shot head removal (surgery), no fine-tuning, validation accuracy: one row per method and share."""
        grid = tuple(self.head_fractions().items())
        return self._measured("ch2-head-curves", lambda: [r for method, fracs in grid
                                                          for r in self._unit_curve("head", method, fracs)],
                              grid=grid)

    def removable_heads(self, tolerance: float = 0.01) -> dict:
        """The largest share of heads the Taylor score removes at once while validation accuracy stays above dense
        minus ``tolerance`` (read off :meth:`head_curves`), that model re-measured on both splits, and its heads
        per layer. With no such share: ``fraction`` 0 and the dense accuracies."""
        def compute():
            n_heads = self._n_heads
            floor = self.dense()["validation_accuracy"] - tolerance
            ok = [r["requested"] for r in self.head_curves()
                  if r["method"] == "taylor" and r["validation_accuracy"] > floor]
            if not ok:
                return {"fraction": 0.0, "heads_removed": 0, "heads_total": n_heads, **self.dense()}
            slim = copy.deepcopy(self.model)
            oneshot.apply(slim, oneshot.PruneSpec("taylor", "head", max(ok)), self._unit_scores["head"]["taylor"])
            return {"fraction": max(ok), "heads_removed": round(max(ok) * n_heads), "heads_total": n_heads,
                    **self.evaluator(slim), "heads_per_layer": slim.config.heads_per_layer}
        return self._measured("ch2-removable-heads", compute, tolerance=tolerance)

    def neuron_curves(self, fractions) -> list[dict]:
        """One-shot FFN-neuron removal (surgery), no fine-tuning, validation accuracy, every unit score."""
        return self._measured("ch2-neuron-curves", lambda: [r for method in UNIT_METHODS
                                                            for r in self._unit_curve("neuron", method, fractions)],
                              fractions=list(fractions), methods=list(UNIT_METHODS))

    def layer_study(self) -> dict:
        """Layer importance two ways, ``skip_loss`` (the loss increase when each layer alone is skipped, exact)
        and ``taylor`` (|dL/dξ| of its gate, first order), and ``rows``: validation accuracy after the k
        lowest-scoring layers are dropped, k = 1 .. n_layer - 1, for those two, magnitude and random."""
        def compute():
            model, b = self.model, self.batches
            scores = {"skip loss": importance.layer_skip_loss(model, b),
                      "taylor": importance.score(model, "taylor", "layer", b),
                      "magnitude": importance.score(model, "magnitude", "layer"),
                      "random": importance.score(model, "random", "layer", seed=self.seed)}
            n_layer, rows = len(scores["skip loss"]), []
            for method, s in scores.items():
                for k in range(1, n_layer):
                    slim = copy.deepcopy(model)
                    select.UnitFraction("layer", k / n_layer)(model, s).apply_surgery(slim)   # the k lowest go
                    rows.append({"method": method, "layers removed": k, **self.validation(slim)})
            return {"skip_loss": scores["skip loss"].vector().tolist(), "taylor": scores["taylor"].vector().tolist(),
                    "rows": rows}
        return self._measured("ch2-layer-study", compute)

    def ablation(self) -> list[dict]:
        """``experiments.sublayer_ablation``: dense, all heads off, all FFN neurons off (both splits)."""
        return self._measured("ch2-ablation", lambda: experiments.sublayer_ablation(self.model, self.evaluator))

    def sensitivity(self, sparsities) -> list[dict]:
        """``experiments.sensitivity``: each layer's attention or FFN pruned alone, validation accuracy."""
        return self._measured("ch2-sensitivity", lambda: experiments.sensitivity(self.model, list(sparsities),
                                                                                 self.validation),
                              sparsities=list(sparsities))

    def shortcut_comparison(self, prune_fn, fraction: float) -> dict:
        """A pruning function against global magnitude pruning to the same measured zero fraction, and dense.

        ``prune_fn(model, fraction)`` zeroes parameters of ``model`` in place (chapter 2's "tempting shortcut");
        its source text is part of the cache key. Returns ``{row name: {"zero_fraction": zeros over all
        parameters, **accuracies}}``.
        """
        def zeros(model) -> float:
            return report.layer_report(model)["totals"]["model"]["sparsity"]

        def compute():
            shortcut, proper = copy.deepcopy(self.model), copy.deepcopy(self.model)
            with contextlib.redirect_stdout(io.StringIO()):
                prune_fn(shortcut, fraction)
            # the rule's target is a share of the prunable set, the shortcut's zero fraction one of the whole model
            target = report.prunable_target(self.model, zeros(shortcut))
            select.WeightSparsity(target)(proper, importance.magnitude(proper)).apply_masks(proper)
            # the prunable set is only part of the model: past its share the fractions cannot be equal, and the
            # row says so
            same = abs(zeros(proper) - zeros(shortcut)) <= 0.005
            label = f"global magnitude, {'same' if same else 'closest reachable'} zero fraction"
            return {"shortcut": {"zero_fraction": zeros(shortcut), **self.evaluator(shortcut)},
                    label: {"zero_fraction": zeros(proper), **self.evaluator(proper)},
                    "dense": {"zero_fraction": zeros(self.model), **self.dense()}}
        return self._measured("ch2-shortcut", compute, fraction=fraction, target="whole-model zero fraction",
                              prune_fn=cache_key({"source": inspect.getsource(prune_fn)}))
