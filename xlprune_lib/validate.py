"""One home for checking names and ranges (torch's ``prune.py`` keeps its ``_validate_*`` helpers together the
same way). Every check raises ``config.UserError`` with one line naming the option, the bad value and what
is accepted, so the library and the command line say the same thing.
"""
from __future__ import annotations

import argparse
import dataclasses
import math

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
    """Every ``name=value`` is at least ``minimum`` ("--name must be >= minimum, got value"); NaN fails too."""
    for name, value in values.items():
        if value is not None and not value >= minimum:
            raise UserError(f"--{name.replace('_', '-')} must be >= {minimum:g}, got {value}")


def lam_or_target(lam: float | None, target: float | None) -> None:
    """L0's trade-off: a fixed ``lambda >= 0`` or a target sparsity in [0, 1), exactly one of them."""
    if (lam is None) == (target is None):
        raise UserError("L0 takes either --lambda or --sparsity (a target), not both / neither")
    if lam is not None and not 0 <= lam < math.inf:
        raise UserError(f"--lambda must be >= 0 and finite, got {lam}")
    if target is not None:
        sparsity(target, "target sparsity")


def finite_float(text: str) -> float:
    """A command-line number as a float, refusing NaN and +-inf (``float`` reads 'nan', 'inf', '-infinity').

    The parser's type for every float option (``cli._Parser``): a range check such as ``value < 0`` is false
    for NaN, so a NaN would slip past it. Raises ``argparse.ArgumentTypeError``, which argparse reports as
    "argument --name: ..." (one line, exit 2 through ``cli.main``).
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def finite_fields(spec) -> None:
    """Every number in the dataclass ``spec`` (also inside a tuple field) is finite; otherwise a one-line
    ``UserError`` "--name must be a finite number, got nan" (``--name``: the field's option, ``config.option``).

    The library's half of :func:`finite_float`: a caller that builds a spec with ``float("nan")`` gets the same
    refusal as the command line. Booleans and ``None`` (not given) pass.
    """
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v):
                flag = f.metadata.get("flag") or f"--{f.name.replace('_', '-')}"
                raise UserError(f"{flag} must be a finite number, got {v}")
