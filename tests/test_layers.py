"""The package's import graph (docs/layout.md): no cycle among module-level imports of teachfit's own
modules, and no import from a lower layer to a higher one (module-level and function-level alike).

The graph is read from the source with ``ast`` (nothing is imported). The layers, highest first, are
:data:`LAYERS`; a module's layer is its first name under ``teachfit`` (``teachfit.studies.evolver.gate``
-> ``studies``). A module may import its own layer and any lower one; :data:`FORBIDDEN` lists the pairs
of one layer that must stay apart.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: highest first; "" is the package's own ``__init__``
LAYERS: tuple[tuple[str, ...], ...] = (
    ("workflow", "rehearsal"),  # the composition root: rules, scripts and the CLI enter here; no library module imports it. rehearsal: make rehearsal's tiny hub and config (tests/slurm/rehearsal.py)
    ("studies", "data"),  # the three studies and recommend; data/: lm-eval task hooks shipped as package data
    ("evaluation", "training"),
    ("generation", "scoring"),
    ("checkpoints", "models", "prompts", "pairs", "seeds", "figures", "correlate"),
    ("schema", "io", "logs", "settings", "processes", ""),
)
#: (importer layer, imported layer) pairs forbidden although the rank allows them, with the reason
FORBIDDEN: dict[tuple[str, str], str] = {
    ("evaluation", "training"): "evaluation reads finished runs through teachfit.checkpoints, not training code",
    ("training", "evaluation"): "training does not evaluate; the workflow wires evaluation after it",
}


@dataclass(frozen=True)
class Edge:
    """One import of a teachfit module: ``source`` imports ``target`` at ``file:line``."""

    source: str
    target: str
    file: str
    line: int
    top_level: bool  # runs when the module is imported (not inside a function, not under TYPE_CHECKING)

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def module_files(root: Path, package: str = "teachfit") -> dict[str, Path]:
    """Every module of ``package`` under ``root`` (a src folder): dotted name -> file."""
    out = {}
    for f in sorted((root / package).rglob("*.py")):
        parts = list(f.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module) -> Iterable[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement with whether it runs at import time of the module."""
    def walk(nodes: list[ast.stmt], top: bool) -> Iterable[tuple[ast.Import | ast.ImportFrom, bool]]:
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node, top
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from walk(node.body, False)
            elif isinstance(node, ast.If) and _is_type_checking(node):
                yield from walk(node.body, False)
                yield from walk(node.orelse, top)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    yield from walk(getattr(node, field, []) or [], top)
    return walk(tree.body, True)


def import_graph(files: Mapping[str, Path], package: str = "teachfit") -> list[Edge]:
    """The imports of ``package``'s modules among ``files`` (dotted name -> file); ``from package.x import y``
    points at ``package.x.y`` when that is a module, else at ``package.x``."""
    edges = []
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node, top in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative import
                    anchor = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for t in dict.fromkeys(targets):
                if t == package or t.startswith(package + "."):
                    edges.append(Edge(mod, t, str(path), node.lineno, top))
    return edges


def layer_of(module: str, package: str = "teachfit") -> str:
    """``teachfit.studies.evolver.gate`` -> ``studies``; the package itself -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == package else ""


def layer_violations(edges: Iterable[Edge], layers: tuple[tuple[str, ...], ...] = LAYERS,
                     forbidden: Mapping[tuple[str, str], str] = FORBIDDEN) -> list[str]:
    """One message per import that goes up a layer, is forbidden, or names a layer not in ``layers``."""
    rank = {name: len(layers) - i for i, group in enumerate(layers) for name in group}
    out = []
    for e in edges:
        a, b = layer_of(e.source), layer_of(e.target)
        if a not in rank or b not in rank:
            out.append(f"{e.where()}: {e.source} imports {e.target}: layer {a if a not in rank else b!r} is not in "
                       f"LAYERS (tests/test_layers.py); add it where it belongs")
        elif rank[b] > rank[a]:
            out.append(f"{e.where()}: {e.source} ({a}) imports {e.target} ({b}), a higher layer")
        elif (a, b) in forbidden:
            out.append(f"{e.where()}: {e.source} imports {e.target}: {forbidden[(a, b)]}")
    return out


def find_cycle(edges: Iterable[Edge]) -> list[Edge] | None:
    """A cycle among the module-level imports (the edges that run at import time), or None."""
    graph: dict[str, list[Edge]] = {}
    for e in edges:
        if e.top_level and e.source != e.target:
            graph.setdefault(e.source, []).append(e)
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[Edge] = []

    def visit(node: str) -> list[Edge] | None:
        state[node] = 1
        for e in graph.get(node, []):
            if state.get(e.target) == 1:
                start = next(i for i, s in enumerate(stack) if s.source == e.target) if e.target != node else len(stack)
                return [*stack[start:], e]
            if e.target not in state:
                stack.append(e)
                found = visit(e.target)
                if found:
                    return found
                stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def describe_cycle(cycle: list[Edge]) -> str:
    return " -> ".join([cycle[0].source, *[f"{e.target} ({e.where()})" for e in cycle]])


# --------------------------------------------------------------------------- the package


@pytest.fixture(scope="module")
def edges() -> list[Edge]:
    return import_graph(module_files(SRC))


def test_graph_is_read(edges):
    """The graph has the imports the package is known to make (the checker sees both kinds)."""
    pairs = {(e.source, e.target, e.top_level) for e in edges}
    assert ("teachfit.studies.evolver.gate", "teachfit.studies.evolver.gate_checks", True) in pairs
    assert len({e.source for e in edges}) > 40


def test_no_import_cycle(edges):
    cycle = find_cycle(edges)
    assert cycle is None, f"import cycle among module-level imports: {describe_cycle(cycle)}"


def test_no_upward_import(edges):
    bad = layer_violations(edges)
    assert not bad, "imports against the layer rule (docs/layout.md):\n" + "\n".join(bad)


def test_library_never_imports_workflow(edges):
    bad = [f"{e.where()}: {e.source} imports {e.target}" for e in edges
           if layer_of(e.target) == "workflow" and layer_of(e.source) != "workflow"]
    assert not bad, "library modules import the composition root:\n" + "\n".join(bad)


# --------------------------------------------------------------------------- negative control


def _write(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        p = root / "teachfit" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return module_files(root)


def test_checker_reports_a_cycle_and_an_upward_import(tmp_path):
    files = _write(tmp_path, {
        "__init__.py": "",
        "io.py": "import os\n\n\ndef f():\n    from teachfit.workflow.config import x  # upward, inside a function\n",
        "studies/__init__.py": "",
        "studies/a.py": "from teachfit.studies import b\n",
        "studies/b.py": "from . import c\n",
        "studies/c.py": "import teachfit.studies.a\n",
        "evaluation/__init__.py": "",
        "evaluation/e.py": "from teachfit.training.t import fit\n",
        "training/__init__.py": "",
        "training/t.py": "fit = 1\n",
        "workflow/__init__.py": "",
        "workflow/config.py": "x = 1\n",
        "novel.py": "from teachfit import io\n",
    })
    edges = import_graph(files)
    cycle = find_cycle(edges)
    assert cycle is not None
    assert {e.source for e in cycle} == {"teachfit.studies.a", "teachfit.studies.b", "teachfit.studies.c"}
    text = describe_cycle(cycle)
    assert "studies/c.py:1" in text and text.split(" -> ")[0] == cycle[-1].target
    bad = layer_violations(edges)
    assert any("io.py:5" in m and "a higher layer" in m for m in bad), bad
    assert any("evaluation/e.py:1" in m and "not training code" in m for m in bad), bad
    assert any("novel.py:1" in m and "'novel' is not in LAYERS" in m for m in bad), bad
    assert len(bad) == 3, bad


def test_checker_ignores_function_level_and_type_checking_imports_for_cycles(tmp_path):
    files = _write(tmp_path, {
        "__init__.py": "",
        "io.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from teachfit.logs import L\n",
        "logs.py": "def f():\n    import teachfit.io\n",
    })
    edges = import_graph(files)
    assert len(edges) == 2 and not any(e.top_level for e in edges)
    assert find_cycle(edges) is None
