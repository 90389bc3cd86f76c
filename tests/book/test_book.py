"""Every chapter executes with papermill on the smoke profile, and the book builds with warnings as errors.

The book sources are copied into a temporary folder so the executed smoke copies never replace the
published (tiny) ones in book/chapters.
"""
import json
import shutil
import subprocess
import sys
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


@pytest.fixture(scope="module")
def smoke_book(tmp_path_factory):
    site = tmp_path_factory.mktemp("book")
    for name in ("_config.yml", "_toc.yml", "notebooks"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, site / name)
    shutil.copytree(ROOT / "book", site / "book", ignore=shutil.ignore_patterns("chapters"))
    executed = book.execute("smoke", seed=0, root=site, out_dir=site / "book" / "chapters")
    return site, executed


def test_notebooks_execute_on_smoke(smoke_book):
    site, executed = smoke_book
    assert len(executed) == len(book.chapters(ROOT))
    for nb in executed:
        cells = json.loads(nb.read_text())["cells"]
        errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors
        images = [o for c in cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        assert images, f"{nb.name} produced no figure"


def test_chapter2_records_its_numbers_with_provenance(smoke_book):
    from xlprune_lib.config import cache_dir

    results = json.loads((cache_dir() / "figures" / "smoke" / "02_results.json").read_text())
    # every score, and the random control every score must beat (Blalock et al. 2020)
    assert set(results["weight_test_accuracy"]) == {"magnitude", "gradient", "taylor", "fisher", "movement", "random"}
    for method, by_sparsity in results["weight_measured_sparsity"].items():
        assert by_sparsity["90%"] == pytest.approx(0.9, abs=1e-3), method     # counted from the masks
    assert results["git_commit"] and results["config"]["profile"] == "smoke"


def test_book_builds_without_warnings(smoke_book):
    site, _ = smoke_book
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run([str(jb), "build", str(site), "-W", "-n", "--keep-going"], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    html = site / "_build" / "html"
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
        assert runs.groupby("approach").kept.sum().eq(1).all(), f"{folder}: each run of chapter 4 keeps one model"
    written = collect(produced, tmp_path)
    assert sorted(p.stem for p in written) == sorted(TABLES)
    assert read_provenance("05_speed", tmp_path)["config"]["profile"] == "smoke"
