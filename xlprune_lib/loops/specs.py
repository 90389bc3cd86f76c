"""What a pruning run is asked to do: the specs of ``xlprune prune`` and ``xlprune iterate``.

Each field is also a command-line option (``config.option``; ``cli.add_spec_options`` derives the options from
the fields). These dataclasses import nothing that trains or reads data, so the command's parser and the
checks of a request work in the core install (no ``[train]`` extra); the runs themselves live in
``oneshot.py`` and ``iterative.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import validate
from ..config import UserError, option
from ..prune.importance import GRANULARITIES, METHODS, check_method
from ..prune.l0 import GRANULARITIES as L0_GRANULARITIES
from ..prune.schedule import SCHEDULES, check_schedule, round_targets
from ..prune.select import NM
from ..xlnet.structure import ENCODER

GRADUAL_METHODS = ("magnitude", "movement")   # scores available during training (cubic schedule)

# options both specs share (``xlprune prune`` and ``iterate``), defined once, next to the specs that use them
OPTIONS = {
    "method": dict(help=f"importance score: {', '.join(METHODS)}"),
    "granularity": dict(default="weight", help=f"unit removed: {', '.join(GRANULARITIES)}"),
    "scope": dict(default="global", help="global (one threshold over all layers) or local (per tensor / layer)"),
    "score_batches": dict(default=16, help="training batches for gradient, Taylor and Fisher scores"),
    "score_steps": dict(default=100, help="fine-tuning steps that accumulate movement scores"),
}


def shared_option(name: str, **overrides):
    """The spec field of a shared option (:data:`OPTIONS`), with ``overrides`` (``help``, ``default``)."""
    return option(**{**OPTIONS[name], **overrides})


@dataclass
class PruneSpec:
    """What to prune and how: the importance method, the unit, the target fraction, the threshold scope.

    Each field is also an option of ``xlprune prune`` (``config.option``). Build it by keyword.
    """
    method: str = shared_option("method", help=f"importance score: {', '.join(METHODS)}, or l0 (trained "
                                "hard-concrete gates)")
    granularity: str = shared_option("granularity", help=f"unit removed: {', '.join(GRANULARITIES)}, "
                                     "head+neuron (--sparsity is then the fraction of the encoder's parameters), "
                                     "or N:M such as 2:4 (N kept in every M consecutive weights; --sparsity 1-N/M "
                                     "implied)")
    sparsity: float | None = option(None, help="fraction of the unit to remove, in [0, 1) (for l0: the target "
                                    "expected sparsity of the prunable set)")
    scope: str = shared_option("scope")
    finetune_epochs: float = option(0.0, help="epochs of recovery fine-tuning after pruning (l0: epochs of "
                                    "gate training, 0 meaning 1)")
    score_batches: int = shared_option("score_batches")
    score_steps: int = shared_option("score_steps")
    lam: float | None = option(None, flag="--lambda", metavar="X",
                               help="l0 only: fixed penalty weight instead of --sparsity")

    def check(self) -> "PruneSpec":
        validate.finite_fields(self)
        if self.method == "l0":
            return self._check_l0()
        if (nm := NM.parse(self.granularity)) is not None:
            self._check_nm(nm)
        check_method(self.method, "head" if self.granularity == ENCODER else "weight" if nm else self.granularity)
        if self.sparsity is None:
            raise UserError(f"--sparsity is required for {self.method}")
        validate.sparsity(self.sparsity)
        validate.scope(self.scope)
        validate.at_least(0, finetune_epochs=self.finetune_epochs, score_steps=self.score_steps)
        validate.at_least(1, score_batches=self.score_batches)
        if self.method == "movement" and self.score_steps < 1:
            raise UserError("movement scores are gathered while fine-tuning: --score-steps must be >= 1")
        return self

    def _check_nm(self, nm: NM) -> None:
        """N:M fixes the sparsity (``1 - n / m``): fill it in, or refuse a different one."""
        if self.sparsity is None:
            self.sparsity = nm.pattern_sparsity
        elif abs(self.sparsity - nm.pattern_sparsity) > 1e-9:
            implied = nm.pattern_sparsity
            raise UserError(f"{nm.n}:{nm.m} keeps {nm.n} of every {nm.m} weights, a sparsity of {implied:g}; "
                            f"got --sparsity {self.sparsity}: leave it out or give {implied:g}")

    def _check_l0(self) -> "PruneSpec":

        if self.granularity not in L0_GRANULARITIES:
            raise UserError(f"L0 gates exist for {', '.join(L0_GRANULARITIES)}, not {self.granularity!r}")
        validate.lam_or_target(self.lam, self.sparsity)
        validate.at_least(0, finetune_epochs=self.finetune_epochs)
        return self

    @property
    def l0_epochs(self) -> float:
        """L0 trains weights and gates together: ``--finetune-epochs`` of it (one epoch when not given)."""
        return self.finetune_epochs or 1.0


def parse_requirement(text: str | float) -> tuple[str, float]:
    """``"0.75"`` (absolute validation accuracy) or ``"dense-0.01"`` (dense accuracy minus a tolerance)."""
    s = str(text).strip().replace(" ", "")
    try:
        if s.startswith("dense-"):
            kind, value = "tolerance", float(s[len("dense-"):])
        else:
            kind, value = "absolute", float(s)
    except ValueError:
        raise UserError(f"--requirement must be an accuracy like 0.75 or 'dense-0.01', got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise UserError(f"--requirement value must be in [0, 1], got {value}")
    return kind, value


def requirement_text(text: str) -> str:
    """``--requirement`` as given, checked when the command line is read (:func:`parse_requirement`)."""
    parse_requirement(text)
    return text


@dataclass
class IterSpec:
    """One iterative (or gradual) pruning run.

    ``step``: for ``constant`` the sparsity added per round, for ``geometric`` the fraction of the remaining
    weights removed per round. ``round_steps``: fine-tuning optimizer steps after each pruning round (for
    ``cubic``: steps between records and checkpoints). ``cubic`` trains once for ``total_steps`` (default: as
    many as the geometric loop to the same target would spend), updating the masks every ``prune_every``
    steps during the first ``ramp`` of them; Zhu & Gupta leave the rest for recovery.
    """
    method: str = shared_option("method")
    granularity: str = shared_option("granularity")
    target: float = option(0.9, help="final sparsity in [0, 1)")
    schedule: str = option("geometric", help=f"{', '.join(SCHEDULES)}: fixed step per round, a fraction of what "
                           "remains per round, or gradual pruning inside fine-tuning")
    requirement: str = option("dense-0.01", parse=requirement_text, help="validation accuracy to keep: an absolute value (0.75) or "
                              "dense minus a tolerance (dense-0.01)")
    step: float = option(0.2, help="constant: sparsity added per round; geometric: fraction of the remaining "
                         "weights removed per round")
    round_steps: int = option(100, help="fine-tuning steps after each round (cubic: between records)")
    scope: str = shared_option("scope")
    score_batches: int = shared_option("score_batches")
    score_steps: int = shared_option("score_steps", help="movement: fine-tuning steps that give the first "
                                     "round's scores")
    total_steps: int | None = option(None, help="cubic: fine-tuning steps in all (default: as many as the "
                                     "geometric loop to the same target)")
    prune_every: int = option(10, help="cubic: steps between mask updates, dt")
    ramp: float = option(0.75, help="cubic: share of the steps during which the masks are updated")

    def check(self) -> "IterSpec":
        validate.finite_fields(self)
        check_method(self.method, self.granularity)
        check_schedule(self.schedule)
        validate.sparsity(self.target, "--target")
        parse_requirement(self.requirement)
        validate.scope(self.scope)
        validate.at_least(1, round_steps=self.round_steps, score_batches=self.score_batches,
                          score_steps=self.score_steps, prune_every=self.prune_every)
        if not 0.0 < self.ramp <= 1.0:
            raise UserError(f"--ramp must be in (0, 1], got {self.ramp}")
        if self.schedule == "cubic":
            if self.granularity != "weight" or self.method not in GRADUAL_METHODS:
                raise UserError("gradual (cubic) pruning masks weights with scores available during training: "
                                f"--granularity weight and --method {' or '.join(GRADUAL_METHODS)}")
            if self.round_steps % self.prune_every:
                raise UserError(f"--round-steps ({self.round_steps}) must be a multiple of --prune-every "
                                f"({self.prune_every}): records and checkpoints fall on mask updates")
            validate.at_least(1, total_steps=self.total_steps)
        else:
            round_targets(self.schedule, self.step, self.target)
        return self

    def rounds(self) -> list[float]:
        return round_targets(self.schedule if self.schedule != "cubic" else "geometric", self.step, self.target)

    def gradual_plan(self) -> tuple[int, int, int]:
        """``(total_steps, n, dt)`` of the cubic run: a multiple of ``round_steps``, ``n`` mask updates."""
        dt, every = self.prune_every, self.round_steps
        total = self.total_steps or len(self.rounds()) * every
        total = max(every, -(-total // every) * every)
        return total, max(1, int(self.ramp * total) // dt), dt
