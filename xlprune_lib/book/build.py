"""Execute the chapters with papermill; the book shows these executed copies.

The committed notebooks in ``notebooks/`` carry no outputs. ``execute`` runs each one with papermill, injecting
``profile`` / ``seed`` / ``output_dir`` into its ``parameters`` cell, and writes the executed copy to
``book/chapters/`` (git-ignored), which ``_toc.yml`` points at. Jupyter Book itself executes nothing
(``execute_notebooks: "off"`` in ``_config.yml``).

``python -m xlprune_lib.book execute --profile minilm`` is what ``make book`` runs; ``... results`` is
``make results`` (``results.make_results``).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import papermill as pm

from ..config import DEFAULT_PROFILE, cache_dir, ensure_dir, get_profile, repo_root, require_hub


def chapters(root: Path | None = None) -> list[Path]:
    """The committed chapter notebooks, in reading order."""
    return sorted(((root or repo_root()) / "notebooks").glob("[0-9][0-9]_*.ipynb"))


BUILD_ONLY = ("output_dir",)   # injected parameters that say where files go on the build machine, not what ran


def parameter_defaults(nb: dict) -> dict:
    """The values a notebook's ``parameters`` cell assigns (the committed notebook's own literals); ``{}``
    without one."""
    cell = next((c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])), None)
    values: dict = {}
    if cell is not None:
        exec("".join(cell["source"]), {}, values)
    return values


def show_parameters(path: Path, parameters: dict) -> None:
    """Make the cell papermill injected (tag ``injected-parameters``) readable on the page.

    Its ``output_dir`` is an absolute path of the build machine: it is dropped from what the page shows. When
    the other values equal the defaults of the chapter's ``parameters`` cell, the page already shows them and
    the cell is removed from the page (tag ``remove-cell``); otherwise it stays, saying that its values replace
    the defaults. The executed code is unchanged: only the cell's displayed source and tags are rewritten.
    """
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    injected = next((c for c in cells if "injected-parameters" in c["metadata"].get("tags", [])), None)
    if injected is None:
        return
    defaults = parameter_defaults(nb)
    shown = {k: v for k, v in parameters.items() if k not in BUILD_ONLY}
    tags = injected["metadata"].setdefault("tags", [])
    if all(k in defaults and defaults[k] == v for k, v in shown.items()):
        tags.append("remove-cell")
    else:
        injected["source"] = ["# This page was built with these values; they replace the defaults above.\n"] + \
            [f"{k} = {v!r}\n" for k, v in shown.items()]
        injected["source"][-1] = injected["source"][-1].rstrip("\n")
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def execute(profile: str = DEFAULT_PROFILE, seed: int = 0, root: Path | None = None, out_dir: Path | None = None,
            only: list[str] | None = None, log=print, chapter_parameters: dict | None = None,
            output_dir: Path | None = None) -> list[Path]:
    """Run every chapter with papermill; return the executed copies' paths.

    Each copy is written to a temporary name and renamed when papermill finishes, so a failed chapter never
    leaves a half-executed page that the book would publish. ``out_dir``: where the executed copies go (the
    book's ``book/chapters``); ``output_dir``: the chapters' ``output_dir`` parameter, where figures and tables
    go (``<cache>/figures/<profile>``). ``chapter_parameters`` maps a chapter's number ("01") to extra papermill
    parameters for it.
    """
    spec = get_profile(profile)  # validate the name before minutes of work
    if spec.hub_model:  # `base` reads the model and the task from the hub: stop now, not in chapter 1's third cell
        require_hub(f"profile {profile!r} ({spec.hub_model}, {spec.task})")
    root = root or repo_root()
    out_dir = out_dir or root / "book" / "chapters"
    ensure_dir(out_dir)
    done, figures = [], declared_figures(root)        # read once: the notebooks do not change during a build
    for nb in chapters(root):
        if only and not any(nb.stem.startswith(o) for o in only):
            continue
        target = out_dir / nb.name
        tmp = out_dir / f".{nb.stem}.running.ipynb"
        start = time.perf_counter()
        log(f"[book] executing {nb.name} (profile {profile})")
        parameters = {"profile": profile, "seed": seed,
                      "output_dir": str(output_dir or cache_dir() / "figures" / profile),
                      **(chapter_parameters or {}).get(nb.stem[:2], {})}
        pm.execute_notebook(str(nb), str(tmp), cwd=str(root), kernel_name="python3", progress_bar=False,
                            parameters=parameters)
        show_parameters(tmp, parameters)
        os.replace(tmp, target)
        copy_vector_figures(Path(parameters["output_dir"]), out_dir / "figures", figures)
        log(f"[book] {nb.name}: {time.perf_counter() - start:.0f} s")
        done.append(target)
    return done


def declared_figures(root: Path | None = None) -> list[str]:
    """The file names (without suffix) of the figures the chapters declare: each figure cell's
    ``mystnb.figure.name`` ``fig-02-weight-curves`` is the file ``02_weight_curves`` that ``plots.save`` writes.
    Only these are published, so a figure renamed or dropped since an older build never reappears."""
    names = []
    for nb in chapters(root or repo_root()):
        for cell in json.loads(nb.read_text())["cells"]:
            figure = cell.get("metadata", {}).get("mystnb", {}).get("figure")
            if figure and figure.get("name", "").startswith("fig-"):
                names.append(figure["name"][len("fig-"):].replace("-", "_"))
    return names


def copy_vector_figures(source: Path, target: Path, names) -> list[Path]:
    """Copy the SVG figures ``names`` (``plots.save``) that exist in ``source`` next to the executed copies, where
    the reference-results page links them with ``{download}``; each file is written under a temporary name and
    renamed. Returns the copies."""
    ensure_dir(target)
    copied = []
    for name in names:
        svg = source / f"{name}.svg"
        if not svg.is_file():
            continue
        tmp = target / f".{svg.name}.tmp"
        shutil.copyfile(svg, tmp)
        os.replace(tmp, target / svg.name)
        copied.append(target / svg.name)
    return copied
