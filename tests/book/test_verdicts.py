"""Generated verdicts follow the intervals: a higher point estimate inside the noise is not a win."""
import pytest

from xlprune_lib.book import verdicts


def _row(acc, half=0.02, split="test"):
    return {f"{split}_accuracy": acc, f"{split}_ci_low": acc - half, f"{split}_ci_high": acc + half}


def test_against_control_counts_only_wins_with_intervals_apart():
    rows = {"magnitude": _row(0.70), "taylor": _row(0.72), "gradient": _row(0.66), "random": _row(0.64),
            "movement": _row(0.50)}
    out = verdicts.against_control(rows)
    assert out["best"] == "taylor"
    assert out["ties"] == ["magnitude"]               # 0.68-0.72 overlaps 0.70-0.74; gradient (0.64-0.68) does not
    assert out["beaten"] == ["magnitude", "taylor"]   # gradient's 0.64-0.68 overlaps random's 0.62-0.66
    assert verdicts.against_control({"random": _row(0.6), "a": _row(0.9)}, split="test")["beaten"] == ["a"]


def test_keep_more_despite_size_needs_more_large_weights_and_more_accuracy():
    inside = {"random": {"largest_removed": 0.70}, "gradient": {"largest_removed": 0.76},
              "fisher": {"largest_removed": 0.75}, "magnitude": {"largest_removed": 0.0}}
    rows = {m: _row(a, split="validation") for m, a in
            (("random", 0.57), ("gradient", 0.74), ("fisher", 0.60), ("magnitude", 0.80))}
    # fisher takes more large weights but is not apart from random; magnitude is better but takes none
    assert verdicts.keep_more_despite_size(inside, rows) == ["gradient"]


def test_movement_anatomy_on_hand_made_scores():
    """Movement scores whose sign is chance and whose size follows Taylor: about half negative, |S| ranked like
    Taylor, and the cut removes more of what Taylor keeps than random does; Taylor's own cut removes none."""
    import torch

    from xlprune_lib.book.score_study import lowest, movement_anatomy

    g = torch.Generator().manual_seed(0)
    taylor = torch.rand(20_000, generator=g)
    sign = torch.where(torch.rand(20_000, generator=g) < 0.5, -1.0, 1.0)
    flat = {"taylor": taylor, "movement": sign * taylor, "random": torch.rand(20_000, generator=g)}
    out = movement_anatomy(flat, [0.3, 0.7])
    assert abs(out["negative_share"] - 0.5) < 0.02 and abs(out["rho_signed"]) < 0.05 and out["rho_magnitude"] > 0.99
    removed = {(r["method"], r["requested"]): r["removed"] for r in out["taylor_keep_removed"]}
    for s in (0.3, 0.7):
        assert removed["taylor", s] == 0 and abs(removed["random", s] - s) < 0.02
    # at 30% movement removes the most negative: the large-Taylor weights with a minus sign, half of the top 70%
    assert removed["movement", 0.3] > 0.4
    assert len(lowest(taylor, 0.3)) == 6000
    with pytest.raises(ValueError, match="sparsity"):
        lowest(taylor, 1.0)
