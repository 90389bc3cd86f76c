"""Every chapter executes with papermill on the smoke profile (``smoke_book`` in conftest.py), and the book
builds with warnings as errors."""
import json
from pathlib import Path

import pytest

from xlprune_lib.book import build as book

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_committed_notebooks_are_clean_and_parameterised():
    nbs = book.chapters(ROOT)
    assert [nb.name for nb in nbs][:1] == ["01_xlnet_architecture.ipynb"]
    for nb in nbs:
        cells = json.loads(nb.read_text())["cells"]
        first_code = next(c for c in cells if c["cell_type"] == "code")
        assert "parameters" in first_code["metadata"].get("tags", []), nb.name
        src = "".join(first_code["source"])
        for name in ("profile", "seed", "output_dir"):
            assert f"{name} =" in src, (nb.name, name)
        for c in cells:
            if c["cell_type"] == "code":
                assert not c.get("outputs") and c.get("execution_count") is None, f"{nb.name} has outputs"


def test_toc_lists_every_chapter():
    toc = (ROOT / "_toc.yml").read_text()
    for nb in book.chapters(ROOT):
        assert f"book/chapters/{nb.stem}" in toc


def test_notebooks_execute_on_smoke(smoke_book):
    site, executed = smoke_book
    assert len(executed) == len(book.chapters(ROOT))
    for nb in executed:
        cells = json.loads(nb.read_text())["cells"]
        errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors
        images = [o for c in cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        assert images or nb.stem == "07_which_method", f"{nb.name} produced no figure"   # that page is a table


def test_chapter4_trains_what_the_reference_table_lacks_and_says_so(smoke_book):
    """The committed table holds no smoke rows, so the smoke run trains all four approaches and prints why."""
    site, executed = smoke_book
    nb = next(p for p in executed if p.stem == "04_iterative_finetuning")
    text = "".join("".join(o.get("text", "")) for c in json.loads(nb.read_text())["cells"]
                   for o in c.get("outputs", []))
    assert "gradual movement (cubic): this run" in text and "reference file" not in text
    assert "trained here because the reference table 04_iterative has no run" in text
    assert "for profile smoke, seed 0" in text


def test_chapter2_records_its_numbers_with_provenance(smoke_book):
    from xlprune_lib.config import cache_dir

    results = json.loads((cache_dir() / "figures" / "smoke" / "02_results.json").read_text())
    # every score, and the random control every score must beat (Blalock et al. 2020)
    assert set(results["weight_test_accuracy"]) == {"magnitude", "gradient", "taylor", "fisher", "movement", "random"}
    for method, by_sparsity in results["weight_measured_sparsity"].items():
        assert by_sparsity["90%"] == pytest.approx(0.9, abs=1e-3), method     # counted from the masks
    assert results["git_commit"] and results["config"]["profile"] == "smoke"


def test_book_builds_without_warnings(smoke_html):
    html, proc = smoke_html
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for chapter, figures in (("01_xlnet_architecture", 4), ("02_importance_metrics", 8), ("03_l0_pruning", 6),
                              ("04_iterative_finetuning", 3), ("05_structured_speedup", 4),
                              ("06_reference_results", 2)):
        page = (html / "book" / "chapters" / f"{chapter}.html").read_text()
        assert page.count("<img") >= figures and "Traceback" not in page, chapter
    assert (html / "book" / "bibliography.html").is_file()


def test_results_tables_keep_the_committed_columns(smoke_book, tmp_path):
    """The smoke run of chapters 1-5 still produces every reference table, with the committed columns, and the
    committed tables come from a real profile (never smoke)."""
    import pandas as pd

    from xlprune_lib.config import PROFILES, cache_dir
    from xlprune_lib.book.results import TABLES, check_table, collect, read_provenance, results_dir, tables_dir

    produced = tables_dir(cache_dir() / "figures" / "smoke")
    for name in TABLES:
        assert check_table(produced / f"{name}.csv") == check_table(results_dir() / f"{name}.csv"), name
        committed = read_provenance(name)
        assert committed["config"]["profile"] in PROFILES and committed["config"]["profile"] != "smoke", name
        assert committed["git_commit"] and committed["rows"] > 0
    for folder in (produced, results_dir()):
        runs = pd.read_csv(folder / "04_iterative.csv")
        runs = runs[runs.approach != "one-shot, no fine-tuning"]
        assert runs.groupby(["seed", "approach"]).kept.sum().eq(1).all(), \
            f"{folder}: each run of chapter 4 (an approach at a seed) keeps one model"
    written = collect(produced, tmp_path)
    assert sorted(p.stem for p in written) == sorted(TABLES)
    assert read_provenance("05_speed", tmp_path)["config"]["profile"] == "smoke"


def _chapter_defaults(stem: str) -> dict:
    """The values of a chapter's ``parameters`` cell, as papermill would leave them on ``smoke``."""
    nb = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())
    return {**book.parameter_defaults(nb), "profile": "smoke", "seed": 0}


def test_a_rebuild_of_chapters_2_to_4_computes_nothing(smoke_book, monkeypatch):
    """After the smoke book ran, every measurement chapters 2 to 4 show comes from the cache: with scoring,
    evaluation, model loading and training made to fail, the same requests still return the rows the
    chapters drew and saved (the warm ``make book`` budget of issue 14)."""
    import pandas as pd

    from xlprune_lib.book import dense_study, score_study
    from xlprune_lib.book.results import tables_dir
    from xlprune_lib.config import cache_dir
    from xlprune_lib.train import finetune

    def forbidden(*args, **kwargs):
        raise AssertionError("a warm rebuild recomputed a measurement")

    p2, p4 = _chapter_defaults("02_importance_metrics"), _chapter_defaults("04_iterative_finetuning")
    monkeypatch.setattr(score_study.importance, "score", forbidden)
    monkeypatch.setattr(score_study, "movement_finetune", forbidden)
    monkeypatch.setattr(finetune.Evaluator, "__call__", forbidden)
    monkeypatch.setattr(finetune, "train_classifier", forbidden)
    monkeypatch.setattr(score_study.experiments, "curve", forbidden)
    monkeypatch.setattr(dense_study, "load_saved", forbidden)
    monkeypatch.setattr(dense_study.experiments, "curve", forbidden)

    study = score_study.ScoreStudy("smoke", 0, p2["score_batches"], p2["movement_steps"])
    curves = study.weight_curves(p2["sparsities"])
    mid = sorted(p2["sparsities"])[len(p2["sparsities"]) // 2]
    # the share of the weights Taylor keeps that each cut removes: none for Taylor, about the sparsity for random
    anatomy = study.movement_anatomy(p2["sparsities"])
    taken = {(r["method"], r["requested"]): r["removed"] for r in anatomy["taylor_keep_removed"]}
    for s in p2["sparsities"]:
        assert taken["taylor", s] == 0 and taken["random", s] == pytest.approx(s, abs=0.01)
        assert 0 < taken["movement", s] < 1
    assert 0 < anatomy["negative_share"] < 1 and anatomy["rho_magnitude"] > 0    # |S| ranks like Taylor
    assert {r["method"] for r in curves} == {"magnitude", "gradient", "taylor", "fisher", "random", "movement"}
    saved = pd.read_csv(tables_dir(cache_dir() / "figures" / "smoke") / "02_oneshot_weights.csv")
    assert sorted(saved.test_accuracy) == pytest.approx(sorted(r["test_accuracy"] for r in curves), abs=1e-6)
    for measurement in (study.dense(), study.weight_scoring(), study.score_correlation(),
                        study.inside_cut(mid),
                        study.head_importance(), study.head_curves(), study.removable_heads(0.01),
                        study.neuron_curves(p2["neuron_fractions"]), study.layer_study(), study.ablation(),
                        study.sensitivity(p2["sensitivity_sparsities"])):
        assert measurement
    ch4 = dense_study.DenseStudy("smoke", 0)
    assert len(ch4.oneshot_curve(p4["curve_sparsities"], "magnitude")) == len(p4["curve_sparsities"])
    assert ch4.layer_drops(p4["layer_drops"], p4["layer_steps"])
    l0_table = pd.read_csv(tables_dir(cache_dir() / "figures" / "smoke") / "03_l0.csv")
    levels = sorted({round(float(s), 3) for s in l0_table.sparsity if 0 < s < 1})    # as chapter 3 reads them
    for granularity in ("weight", "neuron"):
        assert len(ch4.oneshot_curve(levels, "magnitude", granularity, splits=["test"])) == len(levels)
    with pytest.raises(AssertionError, match="recomputed"):      # a request the chapters never made is computed
        study.weight_curves([0.42])


def test_a_rebuild_of_chapter_5_times_nothing_again(smoke_book, monkeypatch):
    """Chapter 5's timings, benchmarks and ONNX export are cached per machine: after the smoke book ran, the same
    requests return the first measurements (with the time they were taken) and no model is timed again."""
    from xlprune_lib.book import speed_study
    from xlprune_lib.deploy import bench
    from xlprune_lib.loops import oneshot
    from xlprune_lib.train import finetune

    def forbidden(*args, **kwargs):
        raise AssertionError("a warm rebuild timed a model again")

    p5 = _chapter_defaults("05_structured_speedup")
    for name in ("bench", "latency_sweep"):
        monkeypatch.setattr(bench, name, forbidden)
    monkeypatch.setattr(speed_study, "kernel_sweep", forbidden)
    monkeypatch.setattr(speed_study, "export_run", forbidden)
    study = speed_study.SpeedStudy("smoke", 0)
    seq_len, repeats = study.profile.max_seq_len, p5["repeats"] or study.profile.bench_repeats
    kernels = study.kernels(32 * seq_len, p5["kernel_sparsities"], p5["kernel_repeats"], "cpu")
    assert kernels["measured_utc"].endswith("UTC") and kernels["result"]
    struct = {f"heads+neurons {f:.0%}": oneshot.prune_run(study.run_dir, oneshot.PruneSpec(
        p5["method"], "head+neuron", f, finetune_epochs=p5["finetune_epochs"]), seed=0, progress=False)
        for f in p5["fractions"]}
    latency = study.latency(p5["unstructured"], struct, p5["batch_sizes"], seq_len, repeats, "cpu", "fp32")
    assert len(latency["result"]) == (1 + len(p5["unstructured"]) + len(struct)) * len(p5["batch_sizes"])
    spec = bench.BenchSpec(batch_sizes=tuple(p5["batch_sizes"]), seq_len=seq_len, repeats=repeats, seed=0)
    for out in [study.run_dir, *struct.values()]:
        assert study.bench(out, spec)["result"]["ratios"]
    half = struct[f"heads+neurons {min(p5['fractions'], key=lambda f: abs(f - 0.5)):.0%}"]
    assert study.export(half, Path("unused.onnx"), "int8")["test"]["onnx_int8"]
    monkeypatch.setattr(finetune.Evaluator, "logits", forbidden)
    weights = oneshot.prune_run(study.run_dir, oneshot.PruneSpec("magnitude", "weight", 0.9,
                                                                 finetune_epochs=p5["finetune_epochs"]), seed=0)
    for out in (half, weights):                                          # "what pruning forgets"
        f = study.forgetting(out)
        assert len(f["labels"]) == len(f["dense"]) == len(f["pruned"]) == study.sizes["test"]
    with pytest.raises(AssertionError, match="timed a model again"):     # another batch size is measured
        study.latency(p5["unstructured"], struct, [2], seq_len, repeats, "cpu", "fp32")
