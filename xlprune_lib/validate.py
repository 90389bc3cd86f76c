"""One home for checking names and ranges (torch's ``prune.py`` keeps its ``_validate_*`` helpers together the
same way). Every check raises ``config.UserError`` with one line naming the option, the bad value and what
is accepted, so the library and the command line say the same thing.
"""
from __future__ import annotations

from .config import UserError

SCOPES = ("local", "global")


def choice(value, choices, what: str, plural: str | None = None):
    """``value`` if it is one of ``choices``; otherwise "unknown <what> 'x'; valid <plural>: a, b"."""
    if value not in choices:
        raise UserError(f"unknown {what} {value!r}; valid {plural or what + 's'}: {', '.join(map(str, choices))}")
    return value


def sparsity(value: float, what: str = "sparsity") -> float:
    """A sparsity or a fraction of units: in [0, 1) (1 would remove everything)."""
    if not 0.0 <= value < 1.0:
        raise UserError(f"{what} must be in [0, 1), got {value}")
    return value


def scope(value: str) -> str:
    """``global`` (one threshold over everything) or ``local`` (per tensor or layer)."""
    return choice(value, SCOPES, "scope")


def at_least(minimum: float, **values) -> None:
    """Every ``name=value`` is at least ``minimum`` ("--name must be >= minimum, got value")."""
    for name, value in values.items():
        if value is not None and value < minimum:
            raise UserError(f"--{name.replace('_', '-')} must be >= {minimum:g}, got {value}")


def lam_or_target(lam: float | None, target: float | None) -> None:
    """L0's trade-off: a fixed ``lambda >= 0`` or a target sparsity in [0, 1), exactly one of them."""
    if (lam is None) == (target is None):
        raise UserError("L0 takes either --lambda or --sparsity (a target), not both / neither")
    if lam is not None and lam < 0:
        raise UserError(f"lambda must be >= 0, got {lam}")
    if target is not None:
        sparsity(target, "target sparsity")
