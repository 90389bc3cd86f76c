"""The pins in constraints.txt, environment.yml and the ranges in pyproject.toml must agree."""
import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines):
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line and "==" in line:
            req = Requirement(line)
            (spec,) = req.specifier
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def constraints():
    return _pins((ROOT / "constraints.txt").read_text().splitlines())


def environment_yml():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    return env, conda, _pins(p for p in pip if not p.startswith("-"))


def test_environment_yml_pins_equal_constraints():
    env, conda, pins = environment_yml()
    assert pins == constraints()
    assert "conda-forge" in env["channels"]
    assert any(re.fullmatch(r"python=3\.11(\.\*)?", c) for c in conda)


def test_pyproject_ranges_admit_the_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for group in project["optional-dependencies"].values() for r in group]
    pins = constraints()
    for text in reqs:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if name == canonicalize_name(project["name"]):   # an extra that includes another one, e.g. xlprune[train]
            assert req.extras <= project["optional-dependencies"].keys() and not req.specifier
            continue
        assert name in pins, f"{name} has no exact pin in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} outside {req.specifier}"


def test_torch_is_pinned_exactly_where_make_installs_it():
    """The exact CPU pin lives in constraints.txt, which every ``make`` install passes to pip (``-c``); the
    package itself asks for a range (issue 16: a light install with version ranges)."""
    assert constraints()["torch"] == "2.13.0"
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_req = next(Requirement(r) for r in project["dependencies"] if Requirement(r).name == "torch")
    assert torch_req.specifier.contains("2.13.0") and not torch_req.specifier.contains("3.0")
    assert all(str(s.operator) != "==" for r in project["dependencies"] for s in Requirement(r).specifier)
