"""The package layout: no import cycles, recipes readable without torch."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "menpo_densereg"


def _module_name(path):
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _package_modules():
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def _imports(path, name, modules):
    """Package modules imported by ``path`` at any depth (functions included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                if not is_pkg:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for t in targets:
            # the longest package module that prefixes the target
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name and t != "menpo_densereg":
                found.add(t)
    return found


def _find_cycle(graph):
    state = {}
    stack = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state:
                cyc = visit(m)
                if cyc:
                    return cyc
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            cyc = visit(n)
            if cyc:
                return cyc
    return None


def test_import_graph_has_no_cycle():
    modules = _package_modules()
    graph = {n: _imports(p, n, modules) for n, p in modules.items()}
    assert "menpo_densereg.data.markups" in graph
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_flat_method_modules_left():
    flat = sorted(p.stem for p in PKG.glob("*.py"))
    assert set(flat) <= {"__init__", "atomic", "cache", "cli", "compat", "training"}


@pytest.mark.parametrize(
    "sub",
    [
        "data",
        "template",
        "densereg",
        "decafa",
        "mdm",
        "aam",
        "fitting",
        "evaluation",
        "tracking",
    ],
)
def test_subpackages_say_what_they_hold(sub):
    doc = ast.get_docstring(ast.parse((PKG / sub / "__init__.py").read_text()))
    assert doc and len(doc.split()) > 30


def test_recipes_and_registry_import_without_torch():
    code = (
        "import sys\n"
        "from menpo_densereg.fitting.recipes import load_recipe\n"
        "from menpo_densereg.fitting.registry import fitter_dir, list_fitters\n"
        "r = load_recipe(fitter_dir('densereg-face'))\n"
        "assert r['fitter']['kind'] == 'densereg'\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
