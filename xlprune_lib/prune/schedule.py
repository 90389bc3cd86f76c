"""Sparsity schedules: how much of the prunable set is removed when.

* one-shot: the final sparsity at once (then fine-tune); the baseline every schedule is compared against;
* constant: round ``k`` of the iterative loop reaches ``min(k * step, target)`` (Han et al. 2015, "Learning
  both Weights and Connections", iterative pruning with a fixed increment);
* geometric: each round removes the fraction ``step`` of the weights that *remain*, so round ``k`` reaches
  ``1 - (1 - step)^k`` (the "prune p% of what is left per round" rule of Frankle & Carbin 2019, "The Lottery
  Ticket Hypothesis", sec. 2);
* cubic: gradual pruning inside one training run (Zhu & Gupta 2017, "To prune, or not to prune", eq. 1),
  ``s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3`` for ``t`` in ``{t0, t0 + dt, ..., t0 + n dt}``:
  large steps while many redundant weights are left, small ones near the end.
"""
from __future__ import annotations

from .. import validate
from ..config import UserError

SCHEDULES = ("constant", "geometric", "cubic")
ROUND_SCHEDULES = ("constant", "geometric")


def check_schedule(name: str) -> str:
    return validate.choice(name, SCHEDULES, "schedule")


def one_shot(target: float) -> list[float]:
    """A single round straight to ``target``."""
    return [validate.sparsity(target, "target sparsity")]


def _until(target: float, step: float, reached) -> list[float]:
    """``reached(k)`` for rounds ``k = 1, 2, ...``, capped at ``target``; the last round lands on it exactly."""
    validate.sparsity(target, "target sparsity")
    if not 0.0 < step < 1.0:
        raise UserError(f"--step must be in (0, 1), got {step}")
    out, k = [], 1
    while not out or out[-1] < target:
        out.append(min(reached(k), target))
        k += 1
    return out


def constant(step: float, target: float) -> list[float]:
    """Round targets ``step, 2 step, ...`` capped at ``target``."""
    return _until(target, step, lambda k: round(k * step, 12))


def geometric(step: float, target: float) -> list[float]:
    """Round targets ``1 - (1 - step)^k`` capped at ``target``: each round removes ``step`` of what remains."""
    return _until(target, step, lambda k: 1.0 - (1.0 - step) ** k)


def round_targets(schedule: str, step: float, target: float) -> list[float]:
    """The sparsity each round of the iterative loop reaches (constant or geometric)."""
    if schedule == "constant":
        return constant(step, target)
    if schedule == "geometric":
        return geometric(step, target)
    raise UserError(f"the round-based loop takes {', '.join(ROUND_SCHEDULES)}; {schedule!r} prunes gradually "
                    "inside fine-tuning")


def cubic(t: int, s_f: float, s_i: float = 0.0, t0: int = 0, n: int = 1, dt: int = 1) -> float:
    """Zhu & Gupta (2017), eq. 1: the sparsity to hold at training step ``t``.

    Before ``t0`` it is ``s_i``; after ``t0 + n dt`` it stays ``s_f``. Between pruning steps the previous
    value holds (the masks only change every ``dt`` steps).
    """
    if t < t0:
        return s_i
    k = min(n, (t - t0) // dt)          # pruning steps taken so far
    return s_f + (s_i - s_f) * (1.0 - k / n) ** 3


def cubic_steps(s_f: float, s_i: float, t0: int, n: int, dt: int) -> list[tuple[int, float]]:
    """``[(t, s_t)]`` at every pruning step of the cubic schedule (``n + 1`` points, from ``t0`` to ``t0 + n dt``)."""
    return [(t0 + k * dt, cubic(t0 + k * dt, s_f, s_i, t0, n, dt)) for k in range(n + 1)]
