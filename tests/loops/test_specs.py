"""What a pruning run is asked to do (``loops/specs.py``): the checks of ``PruneSpec`` and ``IterSpec`` (one-line
errors, N:M and L0 requests), the ``--requirement`` syntax, the rounds and the cubic plan."""
import math

import pytest

from xlprune_lib.config import UserError
from xlprune_lib.loops.specs import (OPTIONS, IterSpec, PruneSpec, parse_requirement, requirement_text,
                                     shared_option)


def test_requirement_is_absolute_or_relative_to_dense():
    assert parse_requirement("0.75") == ("absolute", 0.75)
    assert parse_requirement("dense-0.01") == ("tolerance", 0.01)
    for bad in ("most", "dense+0.1", "1.5"):
        with pytest.raises(UserError):
            parse_requirement(bad)


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="magnitude", target=1.0), "--target must be in [0, 1)"),
    (dict(method="magnitude", schedule="linear"), "unknown schedule 'linear'"),
    (dict(method="taylor", schedule="cubic"), "--method magnitude or movement"),
    (dict(method="magnitude", granularity="head", schedule="cubic"), "--granularity weight"),
    (dict(method="magnitude", schedule="cubic", round_steps=25, prune_every=10), "must be a multiple"),
    (dict(method="magnitude", step=0.0), "--step must be in (0, 1)"),
    (dict(method="oracle"), "unknown method 'oracle'"),
])
def test_spec_errors(kwargs, message):
    with pytest.raises(UserError) as err:
        IterSpec(**kwargs).check()
    assert message in str(err.value)


def test_l0_spec_nan_lambda_and_epochs():
    PruneSpec("l0", "head", lam=0.1).check()
    for kwargs in ({"lam": math.nan}, {"lam": math.inf}, {"lam": 0.1, "finetune_epochs": math.nan},
                   {"lam": 0.1, "finetune_epochs": math.inf}):
        with pytest.raises(UserError, match="finite"):
            PruneSpec("l0", "head", **kwargs).check()


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="taylor"), "--sparsity is required for taylor"),
    (dict(method="taylor", sparsity=1.0), "sparsity must be in [0, 1)"),
    (dict(method="snip", sparsity=0.5), "unknown method 'snip'"),
    (dict(method="taylor", granularity="block", sparsity=0.5), "unknown granularity"),
    (dict(method="taylor", sparsity=0.5, scope="layerwise"), "unknown scope"),
    (dict(method="taylor", sparsity=0.5, score_batches=0), "--score-batches must be >= 1"),
    (dict(method="taylor", sparsity=0.5, finetune_epochs=-1), "--finetune-epochs must be >= 0"),
    (dict(method="movement", sparsity=0.5, score_steps=0), "--score-steps must be >= 1"),
    (dict(method="taylor", granularity="2:4", sparsity=0.3), "a sparsity of 0.5; got --sparsity 0.3"),
    (dict(method="taylor", granularity="4:2"), "needs 0 < n < m, got 4:2"),
    (dict(method="l0", granularity="layer", sparsity=0.5), "L0 gates exist for"),
    (dict(method="l0", granularity="head", lam=1.0, sparsity=0.5), "not both / neither"),
])
def test_prune_spec_errors(kwargs, message):
    with pytest.raises(UserError) as err:
        PruneSpec(**kwargs).check()
    assert message in str(err.value)


def test_prune_spec_fills_in_what_the_request_implies():
    nm = PruneSpec("taylor", "2:4").check()
    assert nm.sparsity == 0.5 and PruneSpec("taylor", "2:4", 0.5).check().sparsity == 0.5   # 1 - n / m
    assert PruneSpec("magnitude", "1:4").check().sparsity == 0.75
    assert PruneSpec("magnitude", "head+neuron", 0.4).check().granularity == "head+neuron"
    l0 = PruneSpec("l0", "neuron", 0.3).check()                       # a target sparsity, no lambda
    assert l0.lam is None and l0.l0_epochs == 1.0                     # one epoch of gate training by default
    assert PruneSpec("l0", "head", lam=0.1, finetune_epochs=2.5).check().l0_epochs == 2.5
    spec = PruneSpec("magnitude", "weight", 0.5)
    assert spec.check() is spec


def test_requirement_text_checks_and_keeps_the_text():
    assert requirement_text("dense-0.02") == "dense-0.02"
    with pytest.raises(UserError, match="--requirement"):
        requirement_text("better")
    assert parse_requirement(" dense - 0.1 ") == ("tolerance", 0.1) and parse_requirement(0.5) == ("absolute", 0.5)


def test_shared_options_are_one_definition_with_overrides():
    field = shared_option("scope")
    assert field.default == OPTIONS["scope"]["default"] == "global"
    assert shared_option("score_steps", help="other words").default == OPTIONS["score_steps"]["default"]
    assert PruneSpec.__dataclass_fields__["scope"].default == IterSpec.__dataclass_fields__["scope"].default


def test_rounds_of_each_schedule_end_on_the_target():
    constant = IterSpec("magnitude", target=0.8, schedule="constant", step=0.2).check().rounds()
    assert constant == pytest.approx([0.2, 0.4, 0.6, 0.8])
    geometric = IterSpec("magnitude", target=0.9, schedule="geometric", step=0.5).check().rounds()
    assert geometric[-1] == pytest.approx(0.9) and len(geometric) > 2
    removed = [1 - (1 - a) / (1 - b) for b, a in zip([0.0, *geometric], geometric)]   # of what remained
    assert removed[:-1] == pytest.approx([0.5] * (len(geometric) - 1)) and removed[-1] <= 0.5 + 1e-9
    # cubic: no rounds of its own, as many steps as the geometric loop to the same target would spend
    cubic = IterSpec("magnitude", target=0.9, schedule="cubic", step=0.5, round_steps=20, prune_every=10).check()
    assert cubic.rounds() == geometric
    total, n, dt = cubic.gradual_plan()
    assert total == len(geometric) * 20 and dt == 10 and n == int(0.75 * total) // 10


def test_cubic_total_steps_become_a_multiple_of_the_record_interval():
    spec = IterSpec("magnitude", target=0.9, schedule="cubic", round_steps=20, prune_every=10, total_steps=45,
                    ramp=0.5).check()
    total, n, dt = spec.gradual_plan()
    assert total % 20 == 0 and 45 <= total < 45 + 20                  # rounded up to whole records
    assert n == int(0.5 * total) // dt and n >= 1
    with pytest.raises(UserError, match="--ramp must be in"):
        IterSpec("magnitude", ramp=0.0).check()
    with pytest.raises(UserError, match="--total-steps must be >= 1"):
        IterSpec("magnitude", schedule="cubic", round_steps=10, prune_every=10, total_steps=0).check()
