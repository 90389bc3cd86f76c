"""The "which method when" table follows its rules on small hand-made tables, and reads the committed results."""
import pandas as pd

from xlprune_lib.book import decisions
from xlprune_lib.book.results import read_table


def _speed(rows):
    base = {"profile": "p", "seed": 0, "runtime": "torch", "dtype": "fp32", "sparse_file_ratio": 1.0,
            "onnx_file_ratio": float("nan"), "latency_ratio_b1": 1.0}
    return pd.DataFrame([{**base, **r} for r in rows])


def _acc(a, half=0.02):
    return {"test_accuracy": a, "test_ci_low": a - half, "test_ci_high": a + half}


def test_deployment_goals_skip_models_that_lose_more_than_the_tolerance():
    speed = _speed([
        {"method": "dense", "file_ratio": 1.0, "latency_ratio_b32": 1.0, **_acc(0.80)},
        {"method": "tiny but broken", "file_ratio": 0.1, "latency_ratio_b32": 0.1, **_acc(0.70)},
        {"method": "half", "file_ratio": 0.5, "latency_ratio_b32": 0.55, **_acc(0.795)},
        {"method": "sparse file", "file_ratio": 1.0, "sparse_file_ratio": 0.4, "latency_ratio_b32": 1.0, **_acc(0.80)},
    ])
    size, cpu = decisions.deployment_rows(speed, tolerance=0.01)
    assert size["choice"].startswith("sparse file") and "0.400× the dense file (sparse file)" in size["evidence"]
    assert cpu["choice"].startswith("half") and "0.550×" in cpu["evidence"] and "batch 32" in cpu["goal"]
    # with a looser tolerance the broken model qualifies, and wins both
    assert all(r["choice"].startswith("tiny but broken") for r in decisions.deployment_rows(speed, tolerance=0.2))


def test_accuracy_goals_name_every_method_whose_interval_overlaps_the_best():
    weights = pd.DataFrame([
        {"seed": s, "method": m, "requested": 0.7, **_acc(a + 0.001 * s)}
        for s in (0, 1) for m, a in (("taylor", 0.72), ("magnitude", 0.71), ("random", 0.60), ("fisher", 0.65))])
    row = decisions.oneshot_row(weights, 0.7)
    assert row["choice"] == "taylor (not distinguishable from magnitude)"      # 0.71 ± 0.02 overlaps 0.72 ± 0.02
    assert row["seeds"] == 2 and "random pruning 60.1%" in row["evidence"]      # means over the two seeds


def test_the_committed_results_give_a_row_per_goal():
    names = ["02_oneshot_weights", "04_iterative", "05_speed", "05_speed_gpu"]
    rows = decisions.which_method({n: read_table(n) for n in names})
    assert [r["source"] for r in rows] == ["05_speed", "05_speed", "05_speed_gpu", "02_oneshot_weights",
                                           "04_iterative"]
    assert all(r["evidence"] and r["chapter"] in decisions.CHAPTERS.values() for r in rows)


def test_the_gpu_row_shows_the_smaller_batches_of_its_choice():
    gpu = pd.DataFrame({"device": "H200", "model": ["dense", "structured-50%"] * 3,
                        "batch": [1, 1, 32, 32, 128, 128], "latency_ratio": [1.0, 1.01, 1.0, 1.03, 1.0, 0.91]})
    row = decisions.gpu_row(gpu)
    assert row["choice"] == "structured-50%" and row["goal"].startswith("fastest on a GPU (batch 128")
    assert "at batch 1 1.01×, batch 32 1.03×" in row["evidence"]
