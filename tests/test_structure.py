"""The shape of src/: files a reader can hold, settings passed as types, no import circles.

Checked statically (ast), so the rules hold for every change, not just the one that introduced them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "loraflow"
MAX_LINES = 400
MAX_PARAMS = 8
# Tables that are data, not code: a list of prompts is read, not followed.
GENERATED = {"data/builtin/general_prompts.py", "data/builtin/templates.py"}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def params_of(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    names = [*a.posonlyargs, *a.args, *a.kwonlyargs]
    n = len(names) + (a.vararg is not None) + (a.kwarg is not None)
    return n - (1 if names and names[0].arg in ("self", "cls") else 0)


def test_no_file_over_the_line_limit():
    long = {
        str(p.relative_to(SRC)): n
        for p in SRC.rglob("*.py")
        if str(p.relative_to(SRC)) not in GENERATED
        and (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"files over {MAX_LINES} lines (split them along their seams): {long}"


def test_no_function_takes_more_than_eight_parameters():
    wide = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and params_of(node) > MAX_PARAMS:
                wide.append(f"{name}.{node.name} ({params_of(node)})")
    assert not wide, f"functions over {MAX_PARAMS} parameters (group settings in a frozen dataclass): {wide}"


def imports(path: Path, package: str, known: set[str]) -> set[str]:
    """The loraflow modules a module imports, at any depth (a lazy import closes a circle too):
    `from pkg import sub` counts as pkg.sub where that is a module, else as pkg."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            for alias in node.names:
                found.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in known}


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = imports(path, package, set(mods)) - {name}
    return graph


def find_circles(graph: dict[str, set[str]]) -> list[str]:
    circles: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return circles


def test_no_import_circle():
    circles = find_circles(import_graph())
    assert not circles, f"import circles: {circles}"


def test_a_circle_is_found():
    graph = import_graph()
    assert "loraflow.model.counts" in graph["loraflow.train.loop"]
    graph["loraflow.model.counts"] = {*graph["loraflow.model.counts"], "loraflow.train.loop"}
    assert find_circles(graph) == ["loraflow.model.counts -> loraflow.train.loop -> loraflow.model.counts"]


@pytest.mark.parametrize("fn_source, expected", [("def f(a, b, *c, d, **e): pass", 5), ("def f(self, a): pass", 1)])
def test_the_parameter_count_counts_what_a_caller_passes(fn_source, expected):
    assert params_of(ast.parse(fn_source).body[0]) == expected
