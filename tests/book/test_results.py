"""Reference-result tables: required columns, provenance, atomic writes, clear errors."""
import json

import pytest

from xlprune_lib.config import UserError
from xlprune_lib.book.results import TABLES, collect, read_table, save_table


SIZES = {"validation": 100, "test": 200}   # examples per split: the intervals are computed from them


def _rows():
    return [{"run": "target", "lambda": None, "sparsity": 0.5, "test_accuracy": 0.7},
            {"run": "λ = 0.3", "lambda": 0.3, "sparsity": 0.61, "test_accuracy": 0.69}]


def test_save_table_writes_csv_with_provenance(tmp_path):
    path = save_table(_rows(), "03_l0", tmp_path, {"profile": "smoke", "seed": 3, "lambdas": [0.3]}, sizes=SIZES)
    frame = read_table("03_l0", path.parent)
    assert list(frame.columns[:2]) == ["profile", "seed"] and (frame.seed == 3).all() and len(frame) == 2
    assert frame.sparsity.tolist() == [0.5, 0.61]
    assert (frame.test_ci_low < frame.test_accuracy).all() and (frame.test_accuracy < frame.test_ci_high).all()
    prov = json.loads((path.parent / "03_l0.provenance.json").read_text())
    assert prov["rows"] == 2 and prov["config"]["lambdas"] == [0.3] and {"versions", "machine"} <= prov.keys()
    assert not list(path.parent.glob(".*"))                  # no temporary files left behind


def test_save_table_refuses_missing_columns_and_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="missing columns"):
        save_table([{"run": "x"}], "03_l0", tmp_path, {"profile": "smoke", "seed": 0})
    with pytest.raises(ValueError, match="unknown results table"):
        save_table(_rows(), "99_nothing", tmp_path, {"profile": "smoke", "seed": 0})
    assert not (tmp_path / "tables" / "03_l0.csv").exists()


def test_collect_needs_every_table_and_keeps_the_old_ones(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    save_table(_rows(), "03_l0", src, {"profile": "smoke", "seed": 0}, sizes=SIZES)
    dest.mkdir()
    (dest / "03_l0.csv").write_text("old")
    with pytest.raises(UserError, match="lacks the tables"):
        collect(src / "tables", dest)
    assert (dest / "03_l0.csv").read_text() == "old"          # nothing replaced by a partial collection
    assert set(TABLES) >= {"02_oneshot_weights", "03_l0", "04_iterative", "05_speed"}


def test_missing_reference_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="make results"):
        read_table("05_speed", tmp_path)


def test_memo_stores_arrays_and_tensors_of_any_size(tmp_path, monkeypatch):
    """A measurement may hold per-example arrays (baselines.tfidf_logreg's ``*_correct``) or tensors, not only
    scalars: they are stored as lists, and a scalar stays a number."""
    import numpy as np
    import torch

    from xlprune_lib.train.runs import memo

    monkeypatch.setenv("XLPRUNE_CACHE", str(tmp_path))
    got = memo("arrays", {}, lambda: {"correct": np.array([True, False, True]), "scores": torch.tensor([[1.0], [2.0]]),
                                       "one": np.array([0.25]), "n": torch.tensor(4)})
    assert got == {"correct": [True, False, True], "scores": [[1.0], [2.0]], "one": [0.25], "n": 4}


def test_memo_computes_once_per_config_and_recovers_from_a_bad_file(tmp_path, monkeypatch):
    import numpy as np

    from xlprune_lib.train.runs import memo

    monkeypatch.setenv("XLPRUNE_CACHE", str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return [{"sparsity": np.float32(0.5), "n": np.int64(3)}]

    first = memo("demo", {"grid": [0.5]}, compute)
    assert first == [{"sparsity": 0.5, "n": 3}] and memo("demo", {"grid": [0.5]}, compute) == first
    assert list(memo("demo", {"grid": [0.5]}, compute)[0]) == ["sparsity", "n"]   # columns in computed order
    assert len(calls) == 1
    memo("demo", {"grid": [0.9]}, compute)                    # another grid is another entry
    assert len(calls) == 2
    for path in (tmp_path / "memo").glob("demo-*.json"):
        path.write_text("{ truncated")
    assert memo("demo", {"grid": [0.5]}, compute) == first and len(calls) == 3


def test_source_accuracy_is_measured_once_per_source_content(tmp_path, monkeypatch):
    from xlprune_lib.config import get_profile
    from xlprune_lib.train.runs import source_accuracy

    monkeypatch.setenv("XLPRUNE_CACHE", str(tmp_path / "cache"))
    smoke, calls = get_profile("smoke"), []
    accuracy = {"validation_accuracy": 0.75, "test_accuracy": 0.5}

    def measure():
        calls.append(1)
        return accuracy

    run = tmp_path / "finetune-smoke-abc"
    run.mkdir()
    assert source_accuracy(run, "abc", smoke, 0, measure) == accuracy
    assert source_accuracy(run, "abc", smoke, 0, measure) == accuracy
    assert len(calls) == 1                                    # the same content key: measured once
    source_accuracy(run, "abc", smoke, 1, measure)            # another seed draws other splits: measured again
    assert len(calls) == 2
    other = tmp_path / "from-elsewhere"                       # another content key (runs.content_key): measured
    other.mkdir()
    source_accuracy(other, "def", smoke, 0, measure)
    source_accuracy(other, "def", smoke, 0, measure)
    assert len(calls) == 3


def test_results_refuses_a_chapter_without_a_table(tmp_path):
    from xlprune_lib.book.results import make_results

    with pytest.raises(UserError, match="no results table comes from chapter '06'"):
        make_results("smoke", 0, tmp_path, only=["06"])


def test_collect_can_take_one_table(tmp_path):
    """`make results --only 01` copies chapter 1's table alone, checked like the others."""
    src = tmp_path / "tables"
    save_table([{"model": "majority", "validation_accuracy": 0.5, "test_accuracy": 0.6, "test_ci_low": 0.55,
                 "test_ci_high": 0.65}], "01_models", tmp_path, {"profile": "minilm", "seed": 0}, sizes=SIZES)
    written = collect(src, tmp_path / "dest", ["01_models"])
    assert [p.name for p in written] == ["01_models.csv"]
    assert read_table("01_models", tmp_path / "dest").model.tolist() == ["majority"]


def test_collect_appends_the_rows_of_further_seeds(tmp_path):
    """`make results` at seeds 0 1 2: one file per table with every seed's rows; tables made at the first seed
    only (chapter 1) keep its rows; the provenance names every source."""
    ablation = [{"ablation": "dense", "validation_accuracy": 0.8, "validation_ci_low": 0.78,
                 "validation_ci_high": 0.82, "test_accuracy": 0.79}]
    model = [{"model": "majority", "validation_accuracy": 0.5, "test_accuracy": 0.6, "test_ci_low": 0.55,
              "test_ci_high": 0.65}]
    for seed in (0, 1):
        save_table(ablation, "02_ablation", tmp_path / f"s{seed}", {"profile": "minilm", "seed": seed}, sizes=SIZES)
    save_table(model, "01_models", tmp_path / "s0", {"profile": "minilm", "seed": 0}, sizes=SIZES)
    dest = tmp_path / "dest"
    collect(tmp_path / "s0" / "tables", dest, ["01_models", "02_ablation"], more=[tmp_path / "s1" / "tables"])
    assert read_table("02_ablation", dest).seed.tolist() == [0, 1]
    assert read_table("01_models", dest).seed.tolist() == [0]
    prov = json.loads((dest / "02_ablation.provenance.json").read_text())
    assert prov["seeds"] == [0, 1] and prov["rows"] == 2 and [s["seed"] for s in prov["sources"]] == [0, 1]
    assert prov["config"]["profile"] == "minilm"


def _ablation(tmp_path, seed: int, accuracy: float, profile: str = "minilm", commit: str | None = None,
              name: str = "02_ablation"):
    """A one-row ablation table made at ``seed``, in its own folder (its provenance naming ``commit``, when
    given); returns that folder's tables."""
    row = {"ablation": "dense", "validation_accuracy": accuracy, "validation_ci_low": accuracy - 0.02,
           "validation_ci_high": accuracy + 0.02, "test_accuracy": accuracy}
    folder = tmp_path / f"{profile}{seed}{commit or ''}"
    save_table([row], name, folder, {"profile": profile, "seed": seed}, sizes=SIZES)
    if commit:
        path = folder / "tables" / f"{name}.provenance.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "git_commit": commit,
                                    "versions": {"torch": f"torch-{commit}", "transformers": "5"}}))
    return folder / "tables"


def _oneshot(tmp_path, seed: int, profile: str = "minilm"):
    row = {"method": "random", "requested": 0.5, "sparsity": 0.5, "validation_accuracy": 0.6, "test_accuracy": 0.6}
    save_table([row], "02_oneshot_weights", tmp_path / f"{profile}{seed}", {"profile": profile, "seed": seed},
               sizes=SIZES)
    return tmp_path / f"{profile}{seed}" / "tables"


def test_collect_add_keeps_other_seeds_and_replaces_the_seed_collected(tmp_path):
    """``make results SEEDS=2 ADD=1``: the rows of seeds 0 and 1 stay, in seed order, and their provenance with
    them; seed 2 again replaces its own rows instead of doubling them. Without ``add`` the table is rewritten."""
    dest = tmp_path / "dest"
    collect(_ablation(tmp_path, 1, 0.81), dest, ["02_ablation"])
    collect(_ablation(tmp_path, 0, 0.80), dest, ["02_ablation"], add=True)
    collect(_ablation(tmp_path, 2, 0.79), dest, ["02_ablation"], add=True)
    frame = read_table("02_ablation", dest)
    assert frame.seed.tolist() == [0, 1, 2] and frame.validation_accuracy.tolist() == [0.80, 0.81, 0.79]
    collect(_ablation(tmp_path, 2, 0.78), dest, ["02_ablation"], add=True)
    frame = read_table("02_ablation", dest)
    assert frame.seed.tolist() == [0, 1, 2] and frame.validation_accuracy.tolist() == [0.80, 0.81, 0.78]
    prov = json.loads((dest / "02_ablation.provenance.json").read_text())
    assert prov["seeds"] == [0, 1, 2] and prov["rows"] == 3 and [s["seed"] for s in prov["sources"]] == [0, 1, 2]
    collect(_ablation(tmp_path, 2, 0.78), dest, ["02_ablation"])
    assert read_table("02_ablation", dest).seed.tolist() == [2]


def test_collect_add_takes_several_seeds_at_once(tmp_path):
    """``make results SEEDS="1 2" ADD=1``: both new seeds are appended to the seed-0 table in one call."""
    dest = tmp_path / "dest"
    collect(_ablation(tmp_path, 0, 0.80), dest, ["02_ablation"])
    collect(_ablation(tmp_path, 1, 0.81), dest, ["02_ablation"], more=[_ablation(tmp_path, 2, 0.79)], add=True)
    frame = read_table("02_ablation", dest)
    assert frame.seed.tolist() == [0, 1, 2] and frame.validation_accuracy.tolist() == [0.80, 0.81, 0.79]


def test_collect_keeps_every_seeds_commit_and_versions(tmp_path):
    """Seeds made on different commits: each source keeps its own commit and versions, and the table's commit
    reads ``mixed`` instead of the newest run's; one commit throughout stays that commit. Sources recorded
    before versions were kept take them from the top level when the commit matches (``table_sources``)."""
    from xlprune_lib.book.results import provenance_summary, table_sources

    dest = tmp_path / "dest"
    collect(_ablation(tmp_path, 0, 0.80, commit="aaaa"), dest, ["02_ablation"])
    prov = json.loads((dest / "02_ablation.provenance.json").read_text())
    assert prov["git_commit"] == "aaaa" and table_sources("02_ablation", dest)[0]["versions"]["torch"] == "torch-aaaa"
    old_style = {**prov, "sources": [{"seed": 0, "git_commit": "aaaa"}]}      # what f9f5a91 wrote
    (dest / "02_ablation.provenance.json").write_text(json.dumps(old_style))
    assert table_sources("02_ablation", dest)[0]["versions"]["torch"] == "torch-aaaa"
    collect(_ablation(tmp_path, 1, 0.81, commit="bbbb"), dest, ["02_ablation"], add=True)
    prov = json.loads((dest / "02_ablation.provenance.json").read_text())
    assert prov["git_commit"] == "mixed"
    assert [(s["seed"], s["git_commit"], s["versions"]["torch"]) for s in prov["sources"]] == \
        [(0, "aaaa", "torch-aaaa"), (1, "bbbb", "torch-bbbb")]
    shown = provenance_summary(prov)
    assert shown["git commits"] == "aaaa (seed 0); bbbb (seed 1)" and shown["torch"] == "torch-aaaa; torch-bbbb"
    assert shown["seeds"] == "0, 1"
    collect(_ablation(tmp_path, 0, 0.80, commit="bbbb"), dest, ["02_ablation"], add=True)
    prov = json.loads((dest / "02_ablation.provenance.json").read_text())
    assert prov["git_commit"] == "bbbb" and provenance_summary(prov)["git commits"] == "bbbb (seeds 0, 1)"


def test_collect_add_accepts_chapter_1s_table_of_several_model_profiles(tmp_path):
    """Chapter 1's table holds rows of the minilm and tiny models: its provenance's profile, not its rows',
    says which run made it."""
    rows = [{"profile": p, "model": m, "validation_accuracy": 0.8, "test_accuracy": 0.8}
            for p, m in (("minilm", "warm-start"), ("tiny", "tiny-warm-start"))]
    for seed in (0, 1):
        save_table(rows, "01_models", tmp_path / f"s{seed}", {"profile": "minilm", "seed": seed}, sizes=SIZES)
    dest = tmp_path / "dest"
    collect(tmp_path / "s0" / "tables", dest, ["01_models"])
    collect(tmp_path / "s1" / "tables", dest, ["01_models"], add=True)
    frame = read_table("01_models", dest)
    assert frame.seed.tolist() == [0, 0, 1, 1] and frame.profile.tolist() == ["minilm", "tiny"] * 2


def _snapshot(dest):
    return {p.name: p.read_bytes() for p in sorted(dest.iterdir())}


def test_collect_add_refuses_another_profile_or_other_columns_before_writing(tmp_path):
    """Two tables collected at once, the second refused: neither is written, provenance included."""
    dest = tmp_path / "dest"
    collect(_oneshot(tmp_path, 0), dest, ["02_oneshot_weights"])
    collect(_ablation(tmp_path, 0, 0.80), dest, ["02_ablation"])
    before = _snapshot(dest)
    src = _oneshot(tmp_path, 1)
    _ablation(tmp_path / "other", 1, 0.5, profile="smoke")
    for name in ("02_ablation.csv", "02_ablation.provenance.json"):
        (src / name).write_bytes((tmp_path / "other" / "smoke1" / "tables" / name).read_bytes())
    with pytest.raises(UserError, match="holds 'minilm' results and this run is on 'smoke'"):
        collect(src, dest, ["02_oneshot_weights", "02_ablation"], add=True)
    assert _snapshot(dest) == before
    src = _ablation(tmp_path, 1, 0.81)
    frame = read_table("02_ablation", src)
    frame.assign(heads_removed=12).to_csv(src / "02_ablation.csv", index=False)    # a column the code added since
    with pytest.raises(UserError, match=r"only there: none; only in this run: \['heads_removed'\]"):
        collect(src, dest, ["02_ablation"], add=True)
    assert _snapshot(dest) == before


DAMAGE = {   # ways a committed table or its provenance gets broken; each, anywhere in the file, is refused
    "csv": lambda csv, prov: csv.write_bytes(b'"seed,\x00\xff'),
    "empty-csv": lambda csv, prov: csv.write_text(""),
    "columns": lambda csv, prov: csv.write_text("profile,seed\nminilm,0\n"),
    "conflict-marker": lambda csv, prov: csv.write_text(csv.read_text() + "<<<<<<< HEAD\n"),
    "extra-field": lambda csv, prov: csv.write_text(csv.read_text() + "minilm,1,dense,1,2,3,4,5,6,7,8\n"),
    "provenance": lambda csv, prov: prov.write_text('{"config": '),
    "provenance-keys": lambda csv, prov: prov.write_text("[]"),
    "provenance-seed": lambda csv, prov: prov.write_text(json.dumps({**json.loads(prov.read_text()),
                                                                     "config": {"profile": "minilm", "seed": "abc"}})),
    "sources-number": lambda csv, prov: prov.write_text(json.dumps({**json.loads(prov.read_text()), "sources": 5})),
    "sources-strings": lambda csv, prov: prov.write_text(json.dumps({**json.loads(prov.read_text()),
                                                                     "sources": ["abc"]})),
    "sources-no-seed": lambda csv, prov: prov.write_text(json.dumps({**json.loads(prov.read_text()),
                                                                     "sources": [{"git_commit": "x"}]})),
    "no-profile": lambda csv, prov: prov.write_text(json.dumps({**json.loads(prov.read_text()),
                                                                "config": {"seed": 0}})),
}


@pytest.mark.parametrize("broken", DAMAGE)
def test_collect_add_refuses_a_damaged_table_in_one_line(tmp_path, broken):
    """A corrupt, empty or truncated table or provenance in ``dest``, damaged in its header or further down,
    is a ``UserError`` naming the file (the CLI prints it in one line and exits 2), and nothing is written:
    not even the table collected before it."""
    dest = tmp_path / "dest"
    collect(_oneshot(tmp_path, 0), dest, ["02_oneshot_weights"])
    collect(_ablation(tmp_path, 0, 0.80), dest, ["02_ablation"])
    DAMAGE[broken](dest / "02_ablation.csv", dest / "02_ablation.provenance.json")
    before = _snapshot(dest)
    src = _oneshot(tmp_path, 1)
    for name in ("02_ablation.csv", "02_ablation.provenance.json"):
        (src / name).write_bytes((_ablation(tmp_path / "other", 1, 0.81) / name).read_bytes())
    with pytest.raises(UserError, match="02_ablation") as err:
        collect(src, dest, ["02_oneshot_weights", "02_ablation"], add=True)
    assert "\n" not in str(err.value) and _snapshot(dest) == before


def test_collect_add_refuses_a_source_without_a_profile(tmp_path):
    dest = tmp_path / "dest"
    collect(_ablation(tmp_path, 0, 0.80), dest, ["02_ablation"])
    src = _ablation(tmp_path, 1, 0.81)
    DAMAGE["no-profile"](src / "02_ablation.csv", src / "02_ablation.provenance.json")
    with pytest.raises(UserError, match="names no profile"):
        collect(src, dest, ["02_ablation"], add=True)


def test_results_page_summary_never_lends_one_commits_versions_to_another(tmp_path):
    """A source recorded without versions, from another commit than the table's top level, shows "?" rather
    than the newest run's versions."""
    from xlprune_lib.book.results import provenance_summary

    dest = tmp_path / "dest"
    collect(_ablation(tmp_path, 1, 0.81, commit="bbbb"), dest, ["02_ablation"])
    prov = json.loads((dest / "02_ablation.provenance.json").read_text())
    prov["sources"] = [{"seed": 0, "git_commit": "aaaa"}] + prov["sources"]
    shown = provenance_summary(prov)
    assert shown["torch"] == "?; torch-bbbb" and shown["git commits"] == "aaaa (seed 0); bbbb (seed 1)"


@pytest.mark.parametrize("add, on", [("", False), ("0", False), ("1", True)])
def test_make_results_add_is_off_unless_asked(add, on):
    """``make results ADD=0`` (or no ADD) rewrites the tables; only ``ADD=1`` adds (and skips base-shape)."""
    import shutil
    import subprocess

    from xlprune_lib.config import repo_root

    if not shutil.which("make"):
        pytest.fail("make is needed: the README's commands use it")
    plan = subprocess.run(["make", "-n", "results", f"ADD={add}", "SEEDS=2", "PY=python"], cwd=repo_root(),
                          capture_output=True, text=True, timeout=60).stdout
    assert ("--add" in plan) is on and ("base-shape" in plan) is not on


def test_make_results_add_leaves_the_book_folder_alone(tmp_path, monkeypatch):
    """Every seed of an ``add`` run, the first too, executes its chapters beside its own tables, so adding seed
    2 never overwrites the book's seed-0 pages, and the table keeps its other seeds; without ``add`` the first
    seed's chapters are the book's and the table is rewritten."""
    import xlprune_lib.book.results as results

    monkeypatch.setenv("XLPRUNE_CACHE", str(tmp_path / "cache"))
    runs = []

    def execute(profile, seed, only, chapter_parameters, output_dir, out_dir):
        runs.append((seed, only, output_dir, out_dir))
        config = {"profile": profile, "seed": seed}
        save_table([{"ablation": "dense", "validation_accuracy": 0.8, "test_accuracy": 0.8}], "02_ablation",
                   output_dir, config, sizes=SIZES)
        save_table([{"method": "random", "requested": 0.5, "sparsity": 0.5, "validation_accuracy": 0.6,
                     "test_accuracy": 0.6}], "02_oneshot_weights", output_dir, config, sizes=SIZES)

    monkeypatch.setattr(results, "execute", execute)
    dest, book = tmp_path / "dest", results.seed_dir("minilm", 0, first=True)
    results.make_results("minilm", [0, 1], dest, only=["02"])
    assert [r[2] for r in runs] == [book, results.seed_dir("minilm", 1, first=False)] and runs[0][3] is None
    assert read_table("02_ablation", dest).seed.tolist() == [0, 1]
    results.make_results("minilm", [2], dest, only=["02"], add=True)
    assert runs[-1][2] == results.seed_dir("minilm", 2, first=False) != book and runs[-1][3] is not None
    assert read_table("02_ablation", dest).seed.tolist() == [0, 1, 2]          # add was forwarded to collect
    with pytest.raises(UserError, match="lacks the tables 04_iterative, 05_speed"):   # (this fake makes 02's only)
        results.make_results("minilm", [2], dest, add=True)
    assert runs[-1][1] == ["02", "04", "05"]                                   # no --only: the headline chapters


def test_make_results_add_refuses_before_any_chapter_runs(tmp_path, monkeypatch):
    """``--add`` onto a table of another profile, or a damaged one, fails before an hour of chapters runs: here
    through the CLI, in one line with exit code 2."""
    import subprocess
    import sys

    import xlprune_lib.book.results as results

    dest = tmp_path / "dest"
    collect(_ablation(tmp_path, 0, 0.80), dest, ["02_ablation"])
    monkeypatch.setattr(results, "execute", lambda *a, **k: pytest.fail("a chapter ran"))
    with pytest.raises(UserError, match="holds 'minilm' results and this run is on 'smoke'"):
        results.make_results("smoke", [1], dest, only=["02"], add=True)
    (dest / "02_oneshot_weights.csv").write_text("someone's own file")
    with pytest.raises(UserError, match="02_oneshot_weights.csv is not an xlprune results table"):
        results.make_results("minilm", [1], dest, only=["02"])             # without add too
    (dest / "02_oneshot_weights.csv").unlink()
    (dest / "02_ablation.provenance.json").write_text("{")
    bad = subprocess.run([sys.executable, "-m", "xlprune_lib.book", "results", "--profile", "minilm", "--seeds",
                          "1", "--only", "02", "--add", "--dest", str(dest)], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "02_ablation.provenance.json is not a" in bad.stderr


def test_results_refuses_repeated_or_negative_seeds(tmp_path):
    from xlprune_lib.book.results import make_results

    for seeds in ([0, 0], [-1], []):
        with pytest.raises(UserError, match="distinct integers"):
            make_results("smoke", seeds, tmp_path, only=["02"])


def test_base_shape_table_is_written_checked_and_refused_cleanly(tmp_path, monkeypatch):
    """``make results``' base-shape table (timed on a small shape here: the function is the same), its provenance,
    and the refusal of a script table without its columns (a bad ``--repeats``: tests/book/test___main__.py)."""
    import xlprune_lib.book.results as results
    from xlprune_lib.book.results import base_shape_results, check_table, read_provenance, save_script_table
    from xlprune_lib.deploy import base_shape

    small = {"n_layer": 2, "d_model": 32, "n_head": 4, "d_inner": 64, "vocab_size": 50}
    monkeypatch.setattr(results, "speed_table", lambda **kw: base_shape.speed_table(shape=small, **kw))
    path = base_shape_results(tmp_path, batch=2, seq_len=8, repeats=2)
    frame = read_table("05_speed_base_shape", tmp_path)
    assert check_table(path) and frame.requested.tolist() == [0.0, 0.25, 0.5, 0.75]
    assert (frame.repeats == 2).all() and frame.latency_ratio.iloc[0] == 1.0
    assert read_provenance("05_speed_base_shape", tmp_path)["config"]["batch"] == 2
    with pytest.raises(ValueError, match=r"missing columns \['device'"):
        save_script_table([{"model": "dense"}], "05_speed_gpu", tmp_path / "gpu.csv", {})
    with pytest.raises(ValueError, match="unknown script table"):
        save_script_table(frame.to_dict("records"), "99_nothing", tmp_path / "x.csv", {})
    assert not (tmp_path / "gpu.csv").exists() and not (tmp_path / "x.csv").exists()
