"""One home for names and ranges: every check is one line naming the option, the value and what is accepted."""
import pytest

from xlprune_lib import validate
from xlprune_lib.config import UserError


def test_choices_and_scopes():
    assert validate.choice("head", ("head", "neuron"), "granularity") == "head"
    with pytest.raises(UserError, match=r"unknown granularity 'block'; valid granularities: head, neuron"):
        validate.choice("block", ("head", "neuron"), "granularity", "granularities")
    assert validate.scope("local") == "local"
    with pytest.raises(UserError, match="unknown scope 'layerwise'; valid scopes: local, global"):
        validate.scope("layerwise")


@pytest.mark.parametrize("bad", [1.0, -0.01, 1.5])
def test_sparsity_is_in_zero_one(bad):
    assert validate.sparsity(0.0) == 0.0 and validate.sparsity(0.99) == 0.99
    with pytest.raises(UserError, match=r"--target must be in \[0, 1\)"):
        validate.sparsity(bad, "--target")


def test_at_least_names_the_option():
    validate.at_least(1, round_steps=1, total_steps=None)     # None: not given, nothing to check
    with pytest.raises(UserError, match="--round-steps must be >= 1, got 0"):
        validate.at_least(1, score_batches=3, round_steps=0)


@pytest.mark.parametrize("lam, target, message", [
    (None, None, "not both / neither"), (1.0, 0.5, "not both / neither"), (-1.0, None, "lambda must be >= 0"),
    (None, 1.0, "target sparsity must be in"),
])
def test_l0_takes_lambda_or_target(lam, target, message):
    with pytest.raises(UserError, match=message):
        validate.lam_or_target(lam, target)
    validate.lam_or_target(0.5, None)
    validate.lam_or_target(None, 0.5)
