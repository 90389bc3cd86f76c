"""measure.forgetting on hand-made logits: flips, lost and gained counted, bins by the dense model's confidence."""
import numpy as np
import pytest

from xlprune_lib.measure import forgetting

LABELS = np.array([0, 1, 1, 0, 1, 0])
DENSE = np.array([[4.0, 0.0], [0.1, 0.0], [0.0, 3.0], [0.0, 0.2], [0.0, 5.0], [2.0, 0.0]])   # right, wrong, right, wrong, right, right
PRUNED = np.array([[4.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.2], [0.0, 5.0], [0.0, 1.0]])  # right, right, wrong, wrong, right, wrong


def test_flips_count_what_changed_and_in_which_direction():
    f = forgetting.flips(LABELS, DENSE, PRUNED)
    assert f == {"examples": 6, "flipped": 3, "lost": 2, "gained": 1, "dense_accuracy": pytest.approx(4 / 6),
                 "pruned_accuracy": pytest.approx(3 / 6), "pruned_classes": 2}
    with pytest.raises(ValueError, match="shapes disagree"):
        forgetting.flips(LABELS[:5], DENSE, PRUNED)


def test_a_pruned_model_that_predicts_one_class_is_reported_as_collapsed():
    """A model that collapsed to the majority class flips exactly the examples the dense model gave the other
    class; ``pruned_classes`` says so, for the chapter to say it instead of reading the flips as forgetting."""
    collapsed = np.tile([1.0, 0.0], (len(LABELS), 1))
    f = forgetting.flips(LABELS, DENSE, collapsed)
    assert f["pruned_classes"] == 1 and f["flipped"] == int((DENSE.argmax(-1) == 1).sum()) == 3


def test_flips_are_binned_by_the_dense_confidence_lowest_first():
    rows = forgetting.by_confidence(LABELS, DENSE, PRUNED, bins=2)
    # dense confidences: 0.982, 0.525, 0.953, 0.550, 0.993, 0.881 -> low half: examples 1, 3, 5
    assert [r["examples"] for r in rows] == [3, 3]
    assert rows[0]["confidence_high"] < rows[1]["confidence_low"]
    assert rows[0]["flipped_share"] == pytest.approx(2 / 3) and rows[1]["flipped_share"] == pytest.approx(1 / 3)
    assert rows[0]["lost_share"] == pytest.approx(1 / 3) and rows[0]["dense_accuracy"] == pytest.approx(1 / 3)


def test_forgotten_examples_are_the_lost_ones_least_confident_first():
    lost = forgetting.forgotten(LABELS, DENSE, PRUNED)
    assert [r["index"] for r in lost] == [5, 2]          # confidence 0.881 before 0.953
    assert lost[0]["label"] == 0 and lost[0]["confidence"] == pytest.approx(1 / (1 + np.exp(-2.0)))
