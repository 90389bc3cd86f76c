"""Requested versus delivered: what a command was asked for, what it measured, and whether they agree.

Whole units make some requests impossible to meet exactly (a quarter of 6 heads), some methods only steer
towards a target (L0 gates reach their *expected* sparsity, not a count), and an iterative run stops early
when accuracy falls below its requirement. Every pruning result therefore records the request, the value
measured from the tensors in the same unit, and ``met``: whether they differ by at most :data:`TOLERANCE`.
The command line prints the note on stderr when they do not.
"""
from __future__ import annotations

TOLERANCE = 0.02   # absolute difference in sparsity (a fraction of the units the request counts)


def delivery(requested: float | None, delivered: float, unit: str, tolerance: float = TOLERANCE,
             why: str | None = None) -> dict:
    """``{"requested", "delivered", "unit", "tolerance", "met", "note"}``; ``note`` is ``None`` when met.

    ``unit`` names what the fraction counts ("prunable weights", "heads", "encoder parameters"...);
    ``requested=None`` (e.g. L0 with a fixed lambda) only records what was delivered. ``why`` is appended to
    the note (e.g. the reason an iterative run stopped).
    """
    met = requested is None or abs(delivered - requested) <= tolerance
    note = None
    if not met:
        note = (f"asked for sparsity {requested:.4f} of the {unit}, delivered {delivered:.4f} (measured from the "
                f"tensors; tolerance {tolerance})" + (f": {why}" if why else ""))
    return {"requested": requested, "delivered": delivered, "unit": unit, "tolerance": tolerance, "met": met,
            "note": note}
