"""Chapter 4 reads its one-shot and gradual runs from the committed reference table only when that table holds
the chapter's grid, profile and seed; otherwise it trains them, and it says which."""
import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from xlprune_lib.book import approach_runs, build
from xlprune_lib.book.results import RESULTS_PARAMETERS
from xlprune_lib.book.results import results_dir

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["one-shot + fine-tuning", "gradual magnitude (cubic)", "gradual movement (cubic)"]
GRID = {"target": 0.7, "budget": 180, "round_steps": 30}


def _copy(tmp_path) -> Path:
    for suffix in (".csv", ".provenance.json"):
        shutil.copy(results_dir() / f"04_iterative{suffix}", tmp_path / f"04_iterative{suffix}")
    return tmp_path


def test_every_committed_seed_reads_back_as_the_table_holds_it():
    table = pd.read_csv(results_dir() / "04_iterative.csv")
    for seed in (0, 1, 2):
        runs, reason = approach_runs.reference_runs(NAMES, "minilm", seed, GRID, requirement=0.81)
        assert reason is None and list(runs) == NAMES
        for name, (records, summary) in runs.items():
            rows = table[(table.seed == seed) & (table.approach == name)].sort_values("steps")
            assert [r["step"] for r in records] == list(rows.steps) and records[0]["step"] == 0
            assert [r["test_accuracy"] for r in records] == pytest.approx(list(rows.test_accuracy), abs=0)
            assert [r["prunable_sparsity"] for r in records] == pytest.approx(list(rows.sparsity), abs=0)
            assert [r["passed"] for r in records] == [v >= 0.81 for v in rows.validation_accuracy]
            assert all(math.isnan(r["model_sparsity"]) for r in records)     # the table does not keep it
            assert summary == {"final": None, "stop_reason": "reference file"}
    # seed 0's one-shot run as committed: 70% of the prunable set, 180 steps, 1,092 of 1,494 test reviews right
    last = approach_runs.reference_runs(NAMES, "minilm", 0, GRID, 0.81)[0]["one-shot + fine-tuning"][0][-1]
    assert (last["step"], last["prunable_sparsity"], last["test_accuracy"]) == (180, 0.7, 0.730924)


@pytest.mark.parametrize("key", ["target", "budget", "round_steps"])
def test_another_grid_is_trained_not_read(key):
    grid = {**GRID, key: GRID[key] * 2}
    runs, reason = approach_runs.reference_runs(NAMES, "minilm", 0, grid, 0.81)
    assert runs == {} and f"{key} {GRID[key]} there, {grid[key]} here" in reason


@pytest.mark.parametrize("profile, seed", [("smoke", 0), ("minilm", 7)])
def test_a_profile_or_seed_the_table_lacks_is_trained(profile, seed):
    runs, reason = approach_runs.reference_runs(NAMES, profile, seed, GRID, 0.81)
    assert runs == {} and f"profile {profile}, seed {seed}" in reason


def test_a_run_without_its_start_or_missing_altogether_is_not_half_read(tmp_path):
    folder = _copy(tmp_path)
    table = pd.read_csv(folder / "04_iterative.csv")
    start = (table.seed == 0) & (table.approach == "gradual movement (cubic)") & (table.steps == 0)
    table[~start].to_csv(folder / "04_iterative.csv", index=False)
    runs, reason = approach_runs.reference_runs(NAMES, "minilm", 0, GRID, 0.81, folder=folder)
    assert runs == {} and "'gradual movement (cubic)'" in reason
    runs, reason = approach_runs.reference_runs(NAMES + ["gradual taylor"], "minilm", 1, GRID, 0.81, folder=folder)
    assert runs == {} and "'gradual taylor'" in reason


@pytest.mark.parametrize("damage", ["missing", "not csv", "no provenance"])
def test_a_missing_or_damaged_table_gives_a_reason_not_a_traceback(tmp_path, damage):
    folder = _copy(tmp_path)
    if damage == "missing":
        (folder / "04_iterative.csv").unlink()
    elif damage == "not csv":
        (folder / "04_iterative.csv").write_text('<<<<<<< HEAD\n"a,b\n')
    else:
        (folder / "04_iterative.provenance.json").write_text("{")
    runs, reason = approach_runs.reference_runs(NAMES, "minilm", 0, GRID, 0.81, folder=folder)
    assert runs == {} and "04_iterative" in reason and "\n" not in reason


def test_the_page_names_each_source_and_the_reference_commits():
    source = {"iterative (geometric)": "this run", **{n: "reference file" for n in NAMES}}
    text = approach_runs.sources_text(source, None)
    assert text.splitlines()[:4] == [f"{n}: {s}" for n, s in source.items()]
    assert re.search(r"data/results/04_iterative.csv; git commits: [0-9a-f]{12}.* \(seeds? 0", text), text
    live = approach_runs.sources_text({n: "this run" for n in source}, "live_approaches = True")
    assert "trained here because live_approaches = True" in live and "git commits" not in live


def test_make_results_trains_every_run_and_the_book_reads_by_default():
    """A reference table is never made from reference reads: ``make results`` passes ``live_approaches``."""
    nb = json.loads((ROOT / "notebooks" / "04_iterative_finetuning.ipynb").read_text())
    assert build.parameter_defaults(nb)["live_approaches"] is False
    assert RESULTS_PARAMETERS["04"] == {"live_approaches": True}
    for chapter, parameters in RESULTS_PARAMETERS.items():
        path = next((ROOT / "notebooks").glob(f"{chapter}_*.ipynb"))
        assert set(parameters) <= set(build.parameter_defaults(json.loads(path.read_text()))), chapter
