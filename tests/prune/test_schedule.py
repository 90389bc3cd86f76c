"""Sparsity schedules: constant, geometric and Zhu & Gupta's cubic schedule, and their input checks."""
import pytest

from xlprune_lib.config import UserError
from xlprune_lib.prune.schedule import constant, cubic, cubic_steps, geometric, one_shot, round_targets


def test_constant_steps_end_exactly_on_the_target():
    assert constant(0.2, 0.5) == pytest.approx([0.2, 0.4, 0.5])
    assert constant(0.1, 0.3) == [0.1, 0.2, 0.3]          # no 0.30000000000000004 extra round
    assert one_shot(0.7) == [0.7]


def test_geometric_removes_a_fixed_fraction_of_what_remains():
    s = geometric(0.5, 0.9)
    assert s == pytest.approx([0.5, 0.75, 0.875, 0.9])
    remaining = [1 - x for x in s[:-1]]
    assert all(b / a == pytest.approx(0.5) for a, b in zip(remaining, remaining[1:]))


def test_cubic_matches_zhu_and_gupta_eq_1():
    s_i, s_f, t0, n, dt = 0.0, 0.8, 100, 10, 20
    points = cubic_steps(s_f, s_i, t0, n, dt)
    assert points[0] == (100, 0.0) and points[-1] == (300, pytest.approx(0.8))
    for t, s in points:
        assert s == pytest.approx(s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3)
    jumps = [b[1] - a[1] for a, b in zip(points, points[1:])]
    assert all(j > 0 for j in jumps) and jumps == sorted(jumps, reverse=True)   # big steps first
    assert cubic(50, s_f, s_i, t0, n, dt) == 0.0 and cubic(10_000, s_f, s_i, t0, n, dt) == pytest.approx(0.8)
    assert cubic(119, s_f, s_i, t0, n, dt) == 0.0 and cubic(120, s_f, s_i, t0, n, dt) > 0   # holds between updates


@pytest.mark.parametrize("call, message", [
    (lambda: constant(0.0, 0.5), "--step must be in (0, 1)"),
    (lambda: geometric(1.0, 0.5), "--step must be in (0, 1)"),
    (lambda: constant(0.2, 1.0), "target sparsity must be in [0, 1)"),
    (lambda: round_targets("cubic", 0.2, 0.5), "prunes gradually"),
    (lambda: round_targets("linear", 0.2, 0.5), "the round-based loop takes constant, geometric"),
])
def test_bad_schedules_are_user_errors(call, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        call()
