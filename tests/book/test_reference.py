"""The reference-results page's selections (xlprune_lib.book.reference) on small hand-made tables."""
import pandas as pd
import pytest

from xlprune_lib.book import reference


def _tables():
    weights = pd.DataFrame([
        # seed, method, requested, sparsity, validation, test
        (0, "magnitude", 0.0, 0.0, 0.800, 0.790), (1, "magnitude", 0.0, 0.0, 0.820, 0.800),
        (0, "magnitude", 0.3, 0.30, 0.795, 0.785), (1, "magnitude", 0.3, 0.30, 0.805, 0.790),
        (0, "magnitude", 0.5, 0.50, 0.791, 0.770), (1, "magnitude", 0.5, 0.50, 0.815, 0.795),
        (0, "random", 0.3, 0.30, 0.700, 0.690), (1, "random", 0.3, 0.30, 0.650, 0.640),
    ], columns=["seed", "method", "requested", "sparsity", "validation_accuracy", "test_accuracy"])
    iterative = pd.DataFrame([
        # seed, approach, steps, sparsity, validation, test
        (0, "one-shot, no fine-tuning", 0, 0.9, 0.50, 0.50),      # chapter 2's curve: never listed twice
        (0, "iterative (geometric)", 0, 0.0, 0.800, 0.790),       # step 0 is the dense model
        (0, "iterative (geometric)", 10, 0.30, 0.799, 0.780), (0, "iterative (geometric)", 20, 0.51, 0.792, 0.775),
        (0, "iterative (geometric)", 30, 0.66, 0.770, 0.760),
        (1, "iterative (geometric)", 10, 0.30, 0.812, 0.800), (1, "iterative (geometric)", 20, 0.51, 0.805, 0.790),
    ], columns=["seed", "approach", "steps", "sparsity", "validation_accuracy", "test_accuracy"])
    l0 = pd.DataFrame([(0, "head", 0.4, 0.77)], columns=["seed", "granularity", "sparsity", "test_accuracy"])
    speed = pd.DataFrame([
        (0, "dense", 0.0, 0.79), (0, "heads+neurons 50%", 0.5, 0.75), (0, "layers 2", 0.33, 0.70),
        (0, "magnitude 90%", 0.9, 0.60)], columns=["seed", "method", "prunable_removed", "test_accuracy"])
    tables = {"02_oneshot_weights": weights, "04_iterative": iterative, "03_l0": l0, "05_speed": speed}
    return {name: t.assign(test_ci_low=t.test_accuracy - 0.02, test_ci_high=t.test_accuracy + 0.02)
            for name, t in tables.items()}


def test_highest_sparsity_within_compares_each_seed_with_its_own_dense_model():
    rows = {r["approach"]: r for r in reference.highest_sparsity_within(_tables(), tolerance=0.01)}
    assert list(rows) == ["iterative (geometric)", "magnitude score, one-shot, no fine-tuning (chapter 2)",
                          "random score, one-shot, no fine-tuning (chapter 2)"]
    it = rows["iterative (geometric)"]          # seed 0: floor 0.79 -> 51%; seed 1: floor 0.81 -> 30% only
    assert it["seeds meeting it"] == "2 of 2" and it["highest sparsity (mean)"] == pytest.approx((0.51 + 0.30) / 2)
    assert it["test (mean)"] == pytest.approx((0.775 + 0.800) / 2) and it["range"] == "30.0% to 51.0%"
    mag = rows["magnitude score, one-shot, no fine-tuning (chapter 2)"]   # seed 1 passes at 50% (0.815 >= 0.81)
    assert mag["highest sparsity (mean)"] == pytest.approx(0.5) and mag["seeds meeting it"] == "2 of 2"
    rnd = rows["random score, one-shot, no fine-tuning (chapter 2)"]
    assert rnd["seeds meeting it"] == "0 of 2" and rnd["highest sparsity (mean)"] is None and rnd["range"] == ""
    # a looser tolerance lets seed 1 reach 51% too
    loose = {r["approach"]: r for r in reference.highest_sparsity_within(_tables(), tolerance=0.02)}
    assert loose["iterative (geometric)"]["highest sparsity (mean)"] == pytest.approx(0.51)


def test_sparsity_points_separate_one_shot_from_fine_tuned_and_skip_the_dense_step():
    oneshot, finetuned = reference.sparsity_points(_tables())
    assert len(oneshot) == 8 and {r["method"] for r in oneshot} == {"magnitude", "random"}
    assert all(r["test_ci_high"] - r["test_ci_low"] == pytest.approx(0.04) for r in oneshot + finetuned)
    names = [r["method"] for r in finetuned]
    assert names.count("iterative (geometric)") == 5          # every step > 0, of both seeds
    assert "one-shot, no fine-tuning" not in names and "L0 head" in names
    structured = {r["method"]: r["sparsity"] for r in finetuned if "chapter 5" in r["method"]}
    assert structured == {"heads + neurons removed (chapter 5)": 0.5, "layers removed (chapter 5)": 0.33}


def test_split_speed_reads_old_tables_as_pytorch_fp32():
    torch_rows, deployed = reference.split_speed(_tables()["05_speed"])
    assert len(torch_rows) == 4 and deployed.empty and set(torch_rows.dtype) == {"fp32"}
    onnx = _tables()["05_speed"].assign(runtime=["torch", "torch", "onnxruntime", "torch"], dtype="fp32")
    torch_rows, deployed = reference.split_speed(onnx)
    assert list(deployed.method) == ["layers 2"] and len(torch_rows) == 3


def test_highest_sparsity_takes_the_last_step_at_the_top_and_needs_every_dense_row():
    tables = _tables()
    it = tables["04_iterative"]
    held = it.iloc[[-1]].assign(steps=30, test_accuracy=0.70)    # seed 1 held at 51% for another round
    tables["04_iterative"] = pd.concat([it, held], ignore_index=True)
    row = {r["approach"]: r for r in reference.highest_sparsity_within(tables, 0.01)}["iterative (geometric)"]
    assert row["test (mean)"] == pytest.approx((0.775 + 0.800) / 2)    # seed 1 stays at 30%: 0.805 < 0.81
    loose = {r["approach"]: r for r in reference.highest_sparsity_within(tables, 0.02)}["iterative (geometric)"]
    assert loose["test (mean)"] == pytest.approx((0.775 + 0.70) / 2)    # seed 1 at 51%: its last step, 0.70
    tables["02_oneshot_weights"] = tables["02_oneshot_weights"][lambda d: ~((d.seed == 1) & (d.requested == 0))]
    with pytest.raises(ValueError, match="no dense row"):
        reference.highest_sparsity_within(tables)
