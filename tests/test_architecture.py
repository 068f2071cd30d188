"""The house rules of docs/ARCHITECTURE.md: no import circle anywhere in maivar, no module over 450 lines, every
stage one thin entry point that converts its settings and passes them on by name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from maivar.stage_deps import imported_modules, read_stages

from conftest import REPO

MAX_LINES = 450


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted((REPO / "maivar").rglob("*.py")):
        rel = path.relative_to(REPO)
        name = ".".join(rel.with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = rel
    return mods


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (lazy imports too; not those under TYPE_CHECKING, nor the
    packages above it, which Python runs first anyway)."""
    mods = _modules()
    graph = {}
    for name, rel in mods.items():
        deps = set()
        for imported in imported_modules(REPO, rel):
            parts = imported.split(".")
            for i in range(len(parts), 0, -1):
                if ".".join(parts[:i]) in mods:
                    deps.add(".".join(parts[:i]))
                    break
        graph[name] = {d for d in deps if d != name and not name.startswith(d + ".")}
    return graph


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (its modules in order, the first again at the end), or None."""
    state: dict[str, str] = {}

    def visit(node: str, path: tuple[str, ...]) -> list[str] | None:
        state[node] = "open"
        for other in sorted(graph.get(node, ())):
            if state.get(other) == "open":
                return [*path[path.index(other):], other] if other in path else [*path, other]
            if other not in state and (found := visit(other, (*path, other))):
                return found
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, (node,))):
            return found
    return None


def test_no_module_imports_in_a_circle():
    circle = find_circle(import_graph())
    assert circle is None, f"import circle: {' -> '.join(circle)}"


def test_a_circle_would_be_found():
    """The check above finds the edges and a circle (so that it cannot pass by finding nothing)."""
    graph = import_graph()
    assert graph["maivar.audio.render"] >= {"maivar.audio.drawing", "maivar.core.feature_store"}
    assert "maivar.audio.drawing" not in graph["maivar.audio.raster"]
    circled = {**graph, "maivar.audio.raster": {*graph["maivar.audio.raster"], "maivar.audio.render"}}
    circle = find_circle(circled)
    assert circle is not None and circle[0] == circle[-1] and {"maivar.audio.raster", "maivar.audio.render"} <= set(
        circle), circle


@pytest.mark.parametrize("name", sorted(_modules()))
def test_no_module_is_over_the_limit(name):
    lines = len((REPO / _modules()[name]).read_text().splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines (split it by job)"


@pytest.mark.parametrize("stage", sorted(read_stages(REPO)))
def test_each_stage_reads_params_once_through_settings_types(stage):
    """stages/<stage>.py reads params.yaml with read_params and converts its sections with settings types: no raw
    section goes into the library (no params["..."] and no load_params)."""
    source = (REPO / "stages" / f"{stage}.py").read_text()
    tree = ast.parse(source)
    assert "read_params(args.params)" in source
    assert ".from_params(params" in source
    subscripts = [n for n in ast.walk(tree) if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name)
                  and n.value.id == "params"]
    assert not subscripts, f"stages/{stage}.py hands a raw params section on"
    assert "load_params" not in source
