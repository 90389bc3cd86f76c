"""Executing the chapters (``book/build.py``) without running one: papermill is replaced by a stand-in that
writes what papermill writes (the notebook with an ``injected-parameters`` cell after its ``parameters`` cell),
on hand-made notebooks in a temporary book folder."""
import json

import pytest

from xlprune_lib.book import build


def _cell(source, tags=(), cell_type="code", **metadata):
    meta = {**({"tags": list(tags)} if tags else {}), **metadata}
    return {"cell_type": cell_type, "metadata": meta, "source": source,
            **({"outputs": [], "execution_count": None} if cell_type == "code" else {})}


def _notebook(*cells):
    return {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _chapter(folder, name, defaults="profile = 'minilm'\nseed = 0\noutput_dir = None\nsteps = 3", figures=()):
    cells = [_cell(["# a chapter"], cell_type="markdown"), _cell(defaults.splitlines(True), tags=["parameters"])]
    cells += [_cell([f"plots.save(fig, output_dir, \"{f}\")"], mystnb={"figure": {"name": "fig-" + f.replace("_", "-")}})
              for f in figures]
    path = folder / name
    path.write_text(json.dumps(_notebook(*cells)))
    return path


@pytest.fixture
def book(tmp_path):
    """A book folder with two chapters (and two notebooks that are not chapters)."""
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _chapter(nbs, "02_second.ipynb", figures=["02_curves"])
    _chapter(nbs, "01_first.ipynb", figures=["01_shape", "01_sizes"])
    _chapter(nbs, "scratch.ipynb")
    _chapter(nbs, "3_no_two_digits.ipynb")
    return tmp_path


def _injected(nb: dict) -> dict | None:
    return next((c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])), None)


class FakePapermill:
    """``pm.execute_notebook``: the input with the injected cell after the parameters cell, and a figure SVG
    written to ``output_dir`` for each figure cell (as ``plots.save`` would). ``fail``: chapter stems that raise."""

    def __init__(self, fail=()):
        self.calls, self.fail = [], set(fail)

    def __call__(self, input_path, output_path, cwd=None, kernel_name=None, progress_bar=True, parameters=None):
        from pathlib import Path

        self.calls.append({"input": Path(input_path).name, "output": Path(output_path), "cwd": cwd,
                           "parameters": dict(parameters)})
        nb = json.loads(Path(input_path).read_text())
        at = next(i for i, c in enumerate(nb["cells"]) if "parameters" in c["metadata"].get("tags", []))
        source = [f"{k} = {v!r}\n" for k, v in parameters.items()]
        nb["cells"].insert(at + 1, _cell(source, tags=["injected-parameters"]))
        Path(output_path).write_text(json.dumps(nb))
        if Path(input_path).stem in self.fail:
            raise RuntimeError("a cell raised")
        out = Path(parameters["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        for cell in nb["cells"]:
            figure = cell["metadata"].get("mystnb", {}).get("figure")
            if figure:
                (out / (figure["name"][4:].replace("-", "_") + ".svg")).write_text("<svg/>")
        return nb


@pytest.fixture
def papermill(monkeypatch):
    fake = FakePapermill()
    monkeypatch.setattr(build.pm, "execute_notebook", fake)
    return fake


def test_chapters_are_the_numbered_notebooks_in_order(book):
    assert [p.name for p in build.chapters(book)] == ["01_first.ipynb", "02_second.ipynb"]
    assert build.chapters(book / "nowhere") == []


def test_parameter_defaults_are_the_parameters_cell_literals():
    """Only the ``parameters`` cell runs (another cell's ``x`` is not there), and it may read its own names."""
    nb = _notebook(_cell(["x = 1"]), _cell(["profile = 'smoke'\n", "sparsities = [0.5, 0.9]\n",
                                            "flag = profile == 'smoke'"], tags=["parameters"]), _cell(["z = 3"]))
    assert build.parameter_defaults(nb) == {"profile": "smoke", "sparsities": [0.5, 0.9], "flag": True}
    assert build.parameter_defaults(_notebook(_cell(["y = 2"]))) == {}
    assert build.parameter_defaults(_notebook(_cell(["# why"], cell_type="markdown"))) == {}


def test_injected_defaults_are_removed_from_the_page(book, tmp_path, papermill):
    """Values equal to the chapter's defaults: the page already shows them, the cell is tagged away. The
    build-machine ``output_dir`` never counts."""
    target = tmp_path / "page.ipynb"
    parameters = {"profile": "minilm", "seed": 0, "output_dir": str(tmp_path / "build" / "figures")}
    papermill(str(book / "notebooks" / "01_first.ipynb"), str(target), parameters=parameters)
    ran = _injected(json.loads(target.read_text()))
    build.show_parameters(target, parameters)
    cell = _injected(json.loads(target.read_text()))
    assert cell["metadata"]["tags"] == ["injected-parameters", "remove-cell"]
    assert cell["source"] == ran["source"]                           # the source itself is left as it ran


def test_injected_values_that_replace_defaults_stay_on_the_page(book, tmp_path, papermill):
    target = tmp_path / "page.ipynb"
    parameters = {"profile": "smoke", "seed": 0, "output_dir": str(tmp_path / "build"), "new_knob": 2}
    papermill(str(book / "notebooks" / "01_first.ipynb"), str(target), parameters=parameters)
    before = json.loads(target.read_text())
    build.show_parameters(target, parameters)
    after = json.loads(target.read_text())
    cell = _injected(after)
    assert "remove-cell" not in cell["metadata"]["tags"]
    assert cell["source"] == ["# This page was built with these values; they replace the defaults above.\n",
                              "profile = 'smoke'\n", "seed = 0\n", "new_knob = 2"]
    # nothing but that cell changed
    assert [c for c in after["cells"] if c is not cell] == [c for c in before["cells"] if c != _injected(before)]


def test_a_page_without_an_injected_cell_is_left_alone(book, tmp_path):
    path = tmp_path / "plain.ipynb"
    text = (book / "notebooks" / "01_first.ipynb").read_text()
    path.write_text(text)
    build.show_parameters(path, {"profile": "smoke"})
    assert path.read_text() == text


def test_execute_runs_every_chapter_with_its_parameters(book, tmp_path, papermill):
    logged = []
    out, figures = tmp_path / "chapters", tmp_path / "figures"
    done = build.execute("smoke", seed=3, root=book, out_dir=out, log=logged.append, output_dir=figures,
                         chapter_parameters={"02": {"steps": 9}})
    assert done == [out / "01_first.ipynb", out / "02_second.ipynb"]
    assert [c["input"] for c in papermill.calls] == ["01_first.ipynb", "02_second.ipynb"]
    assert papermill.calls[0]["parameters"] == {"profile": "smoke", "seed": 3, "output_dir": str(figures)}
    assert papermill.calls[1]["parameters"] == {"profile": "smoke", "seed": 3, "output_dir": str(figures), "steps": 9}
    assert all(c["cwd"] == str(book) for c in papermill.calls)
    # each copy was written under a temporary name, then renamed; no temporary is left
    assert all(c["output"].name.startswith(".") and c["output"].parent == out for c in papermill.calls)
    assert sorted(p.name for p in out.iterdir()) == ["01_first.ipynb", "02_second.ipynb", "figures"]
    # the SVGs the chapters declare are copied beside the pages
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["01_shape.svg", "01_sizes.svg", "02_curves.svg"]
    # the second chapter's steps replace its default, so its injected cell stays on the page
    assert "remove-cell" not in _injected(json.loads(done[1].read_text()))["metadata"]["tags"]
    assert sum("executing" in line for line in logged) == 2 and logged[0].startswith("[book] executing 01_first")


def test_execute_only_runs_the_chapters_asked_for(book, tmp_path, papermill):
    done = build.execute("smoke", root=book, out_dir=tmp_path / "chapters", only=["02"], log=lambda _: None,
                         output_dir=tmp_path / "figures")
    assert [p.name for p in done] == ["02_second.ipynb"] and len(papermill.calls) == 1


def test_a_failed_chapter_publishes_no_page(book, tmp_path, monkeypatch):
    fake = FakePapermill(fail={"02_second"})
    monkeypatch.setattr(build.pm, "execute_notebook", fake)
    out = tmp_path / "chapters"
    with pytest.raises(RuntimeError, match="a cell raised"):
        build.execute("smoke", root=book, out_dir=out, log=lambda _: None, output_dir=tmp_path / "figures")
    assert (out / "01_first.ipynb").is_file() and not (out / "02_second.ipynb").exists()


def test_an_unknown_profile_is_refused_before_any_chapter(book, tmp_path, papermill):
    from xlprune_lib.config import UserError

    with pytest.raises(UserError, match="unknown profile 'nosuch'"):
        build.execute("nosuch", root=book, out_dir=tmp_path / "chapters")
    assert papermill.calls == [] and not (tmp_path / "chapters").exists()


def test_declared_figures_are_read_from_the_figure_cells(book):
    assert build.declared_figures(book) == ["01_shape", "01_sizes", "02_curves"]
    nbs = book / "notebooks"
    nb = json.loads((nbs / "02_second.ipynb").read_text())
    nb["cells"].append(_cell(["x"], mystnb={"figure": {"name": "not-a-figure-label"}}))   # no fig- prefix
    nb["cells"].append(_cell(["y"], mystnb={"figure": {"caption": "no name"}}))
    (nbs / "02_second.ipynb").write_text(json.dumps(nb))
    assert build.declared_figures(book) == ["01_shape", "01_sizes", "02_curves"]


def test_copy_vector_figures_copies_only_the_declared_svgs_that_exist(tmp_path):
    svg = tmp_path / "figures" / "02_curves.svg"
    svg.parent.mkdir()
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg"><path d="M0 0"/></svg>')
    (tmp_path / "figures" / "02_curves.png").write_bytes(b"\x89PNG")
    (tmp_path / "figures" / "02_renamed_long_ago.svg").write_text("<svg/>")      # left by an older build
    copies = build.copy_vector_figures(tmp_path / "figures", tmp_path / "chapters" / "figures",
                                       ["02_curves", "03_not_saved"])
    assert [c.name for c in copies] == ["02_curves.svg"] and copies[0].read_bytes() == svg.read_bytes()
    assert sorted(p.name for p in (tmp_path / "chapters" / "figures").iterdir()) == ["02_curves.svg"]
    # a second build replaces the copy with the new figure
    svg.write_text("<svg>new</svg>")
    build.copy_vector_figures(tmp_path / "figures", tmp_path / "chapters" / "figures", ["02_curves"])
    assert (tmp_path / "chapters" / "figures" / "02_curves.svg").read_text() == "<svg>new</svg>"
    assert build.copy_vector_figures(tmp_path / "missing", tmp_path / "chapters" / "figures", ["02_curves"]) == []


def test_the_declared_figures_are_the_files_the_chapters_save():
    """Every figure cell's name maps to the file its plots.save call writes (fig-02-weight-curves ->
    02_weight_curves), so the published SVGs are exactly the chapters' figures."""
    names = build.declared_figures()
    assert len(names) == len(set(names)) >= 25 and "02_weight_curves" in names
    for nb in build.chapters():
        text = json.dumps(json.loads(nb.read_text())["cells"])
        for name in names:
            if name.startswith(nb.name[:2]):
                assert f'\\"{name}\\")' in text, (nb.name, name)   # plots.save(fig, output_dir, "<name>")
