"""book/comparison.py: chapter 1's table of starting points (which models a profile can have, one row each)."""
import pytest

from xlprune_lib.book import comparison
from xlprune_lib.config import UserError, get_profile


def test_comparison_rows_and_bad_names(smoke):
    row = comparison.model_row(smoke, "majority")
    assert set(comparison.COLUMNS) == set(row) and row["model"] == "majority" and row["profile"] == "smoke"
    with pytest.raises(UserError, match="unknown model 'bert'"):
        comparison.models_table(smoke, models=["bert"])
    with pytest.raises(UserError, match="needs a warm-start profile"):
        comparison.model_row(smoke, "source-bert")


def test_comparison_models_of_each_profile():
    """A hub profile has no from-scratch rows (its random-init would be the hub model, and `tiny`'s from-scratch
    rows are on the offline corpus, another task); warm-start rows need a warm-start profile."""
    assert comparison.models_for(get_profile("base")) == ("majority", "tfidf-logreg")
    assert comparison.models_for(get_profile("minilm")) == comparison.MODELS
    assert comparison.models_for(get_profile("tiny")) == ("majority", "tfidf-logreg", "random-init", "plm-scratch")
    for model in comparison.SCRATCH_MODELS:
        with pytest.raises(UserError, match="random weights"):
            comparison.model_row(get_profile("base"), model)
