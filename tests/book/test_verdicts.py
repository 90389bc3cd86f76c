"""Generated verdicts follow the intervals: a higher point estimate inside the noise is not a win."""

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

