"""The package's shape: no import cycles between its modules, imports at module top (a local import must say
why in a comment on its line or the line above), and the layers of docs/architecture.md respected."""
import ast
from pathlib import Path

import xlprune_lib

PACKAGE = Path(xlprune_lib.__file__).parent
# a subpackage may import from the ones listed (and from the top-level config); nothing imports cli
LAYERS = {
    "xlnet": set(),
    "measure": {"xlnet"},
    "train": {"xlnet", "measure"},
    "prune": {"xlnet", "measure"},          # scorers and rules are pure: what trains lives in loops/
    "deploy": {"xlnet", "measure", "train", "prune"},
    "loops": {"xlnet", "measure", "train", "prune", "deploy"},
    "book": {"xlnet", "measure", "train", "prune", "deploy", "loops"},
}


def _modules():
    if not _PARSED:
        for path in sorted(PACKAGE.rglob("*.py")):
            parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            _PARSED.append((name, path, ast.parse(path.read_text())))
    return _PARSED


_PARSED = []


def _target(name: str, path: Path, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The xlprune_lib modules an import statement reads (``from . import a`` counts as ``pkg.a``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("xlprune_lib")]
    if node.level == 0:
        base = node.module or ""
        if not base.startswith("xlprune_lib"):
            return []
    else:
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
    known = {m for m, _, _ in _modules()}
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]


def _graph(local: bool):
    graph = {}
    for name, path, tree in _modules():
        top = set(tree.body)
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and (local or node in top):
                edges.update(t for t in _target(name, path, node) if t != name)
        graph[name] = edges
    return graph


def _cycle(graph):
    state, stack = {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == "open":
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        state[n] = "done"
        stack.pop()
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_import_cycles_even_through_local_imports():
    cycle = _cycle(_graph(local=True))
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_local_imports_say_why():
    """An import inside a function hides a dependency; it is allowed for heavy optional libraries, with a
    comment that says so."""
    unexplained = []
    for name, path, tree in _modules():
        lines = path.read_text().splitlines()
        top = set(tree.body)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and node not in top and not (
                    isinstance(node, ast.ImportFrom) and node.module == "__future__"):
                here = lines[node.lineno - 1] + lines[node.lineno - 2]
                if "#" not in here:
                    unexplained.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not unexplained, f"local imports without a reason: {unexplained}"


def test_subpackages_respect_the_layers():
    wrong = []
    for name, edges in _graph(local=True).items():
        parts = name.split(".")
        if len(parts) < 3:
            continue
        for target in edges:
            tparts = target.split(".")
            if len(tparts) >= 3 and tparts[1] != parts[1] and tparts[1] not in LAYERS[parts[1]]:
                wrong.append(f"{name} -> {target}")
            if tparts[1:2] == ["cli"]:
                wrong.append(f"{name} -> {target}")
    assert not wrong, f"imports against the layering of docs/architecture.md: {wrong}"


def _private_uses(tree, name: str, path: Path) -> list[str]:
    """Private names of *other* xlprune_lib modules this module reads: ``from m import _x`` and ``alias._x`` where
    ``alias`` is an imported xlprune_lib module (dunders aside)."""
    def private(attr: str) -> bool:
        return attr.startswith("_") and not (attr.startswith("__") and attr.endswith("__"))

    known = {m for m, _, _ in _modules()}
    aliases, found = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            targets = _target(name, path, node)
            if not targets:
                continue
            for alias, target in zip(node.names, targets):
                if target in known and target.endswith("." + alias.name):
                    aliases[alias.asname or alias.name] = target       # ``from . import gates``: a module
                elif private(alias.name) and target != name:
                    found.append(f"from {target} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("xlprune_lib"):
                    aliases[alias.asname or alias.name] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and private(node.attr):
            target = aliases.get(node.value.id)
            if target is not None and target != name:
                found.append(f"{node.value.id}.{node.attr} ({target})")
    return found


def test_no_module_reads_a_private_name_of_another():
    """A ``_name`` is its module's own: reading it from elsewhere is a dependency nobody can see. Shared
    helpers get a public name (the run context of ``loops/rounds.py``, the gate helpers of ``xlnet/gates.py``)."""
    wrong = [f"{path.relative_to(PACKAGE.parent)}: {use}" for name, path, tree in _modules()
             for use in _private_uses(tree, name, path)]
    assert not wrong, f"private names read across modules: {wrong}"


def test_the_private_name_check_sees_both_forms():
    """The check above must see ``from m import _x`` and ``m._x`` (a narrower check would pass the old l0.py)."""
    source = ("from ..xlnet import gates as unit_gate\nfrom ..xlnet.masks import _copyable\n"
              "x = unit_gate._tensor_name\n")
    uses = _private_uses(ast.parse(source), "xlprune_lib.prune.l0", PACKAGE / "prune" / "l0.py")
    assert uses == ["from xlprune_lib.xlnet.masks import _copyable", "unit_gate._tensor_name (xlprune_lib.xlnet.gates)"]


def test_prune_imports_nothing_that_trains():
    """Scorers and rules are pure functions of a model: ``prune/`` imports no module of ``train/`` and no
    ``transformers.Trainer``."""
    wrong = [f"{name} -> {t}" for name, edges in _graph(local=True).items() if name.startswith("xlprune_lib.prune")
             for t in edges if t.startswith("xlprune_lib.train")]
    for name, path, tree in _modules():
        for node in ast.walk(tree):
            if name.startswith("xlprune_lib.prune") and isinstance(node, ast.ImportFrom) and \
                    (node.module or "").startswith("transformers"):
                wrong += [f"{name} imports {a.name}" for a in node.names if "Train" in a.name]
    assert not wrong, wrong
