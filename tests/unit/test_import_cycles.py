"""No import cycle between froq_ray's subpackages and top-level modules (``docs/architecture.md``, "Modules and
dependency direction").

The graph is built statically from the source (``ast``): every ``import`` and ``from ... import`` anywhere in
a file -- at module level, inside functions, under ``if TYPE_CHECKING`` -- with relative imports resolved
against the file's package. A node is a direct child of the package: a subpackage (``storage``, ``engine``,
...) or a top-level module (``config``, ``errors``, ``status``, ``cli``); ``from froq_ray import __version__``
counts as the package's own ``__init__``. Imports inside one node are not edges.
"""

from __future__ import annotations

import ast
from pathlib import Path

import froq_ray

Graph = dict[str, dict[str, list[str]]]  # node -> imported node -> import sites ("path:line")


def _module_of(root: Path, path: Path) -> tuple[list[str], bool]:
    """Dotted parts of the module at ``path`` (``[package, ...]``) and whether it is a package ``__init__``."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        return parts[:-1], True
    return parts, False


def _targets(stmt: ast.Import | ast.ImportFrom, here: list[str], package: str) -> list[str]:
    """The dotted modules ``stmt`` imports; ``here`` is the package the importing file lives in."""
    if isinstance(stmt, ast.Import):
        return [alias.name for alias in stmt.names]
    if stmt.level:
        if stmt.level - 1 > len(here) - 1:
            raise ValueError(f"relative import beyond the top-level package: level {stmt.level} in {here}")
        base = here[: len(here) - (stmt.level - 1)]
        module = ".".join(base + ([stmt.module] if stmt.module else []))
    else:
        module = stmt.module or ""
    if module == package:  # `from froq_ray import status`: the names are the nodes
        return [f"{package}.{alias.name}" for alias in stmt.names]
    return [module]


def import_graph(root: Path) -> Graph:
    """Edges between the direct children of the package at ``root`` (its folder; the name is ``root.name``)."""
    package = root.name
    children = {p.stem for p in root.glob("*.py") if p.stem != "__init__"} | {
        p.parent.name for p in root.glob("*/__init__.py")
    }
    graph: Graph = {}
    for path in sorted(root.rglob("*.py")):
        parts, is_package = _module_of(root, path)
        node = parts[1] if len(parts) > 1 else "__init__"
        here = parts if is_package else parts[:-1]
        for stmt in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(stmt, (ast.Import, ast.ImportFrom)):
                continue
            for target in _targets(stmt, here, package):
                dotted = target.split(".")
                if dotted[0] != package:
                    continue  # another library
                other = dotted[1] if len(dotted) > 1 and dotted[1] in children else "__init__"
                if other != node:
                    where = f"{path.relative_to(root.parent)}:{stmt.lineno}"
                    graph.setdefault(node, {}).setdefault(other, []).append(where)
    return graph


def find_cycle(graph: Graph) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]`` (depth first from the nodes in sorted order), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for other in sorted(graph.get(node, {})):
            if state.get(other) == 1:
                return path[path.index(other) :] + [other]
            if other not in state and (cycle := visit(other)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def cycle_message(graph: Graph, cycle: list[str]) -> str:
    """``import cycle: a -> b -> a`` and, per edge, where the import is written."""
    lines = [f"import cycle between subpackages: {' -> '.join(cycle)}"]
    for a, b in zip(cycle, cycle[1:], strict=False):  # strict=False: consecutive pairs of one list
        lines.append(f"  {a} -> {b}: {', '.join(graph[a][b])}")
    return "\n".join(lines)


def assert_no_cycle(root: Path) -> Graph:
    graph = import_graph(root)
    cycle = find_cycle(graph)
    if cycle is not None:  # raised, not asserted: pytest would re-indent the message of a failed assert
        raise AssertionError(cycle_message(graph, cycle))
    return graph


def test_froq_ray_has_no_import_cycle_between_subpackages():
    graph = assert_no_cycle(Path(froq_ray.__file__).parent)
    # the graph is not empty by accident: the job drivers import the engine, config imports storage
    assert "engine" in graph["pipeline"] and "storage" in graph["config"]
    assert "config" not in graph.get("storage", {})  # the direction docs/architecture.md states


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


FAKE = {
    "pkg/__init__.py": "VERSION = '1'\n",
    "pkg/errors.py": "class Oops(Exception): ...\n",
    "pkg/c.py": "from . import errors\nfrom pkg import VERSION\n",
    "pkg/a/__init__.py": "from .x import f\n",
    "pkg/a/x.py": "import os\nfrom ..b.y import g\nfrom ..errors import Oops\n\ndef f(): return g()\n",
    "pkg/b/__init__.py": "",
    # the cycle is closed only by an import inside a function, two packages deep
    "pkg/b/y.py": "def g():\n    from ..a import x\n    return x\n",
    "pkg/b/z/__init__.py": "from ...c import errors\nimport pkg.b.y\n",
}


def test_the_graph_resolves_relative_absolute_and_function_level_imports(tmp_path):
    graph = import_graph(_write(tmp_path, FAKE) / "pkg")
    assert {node: sorted(edges) for node, edges in graph.items()} == {
        "a": ["b", "errors"],
        "b": ["a", "c"],
        "c": ["__init__", "errors"],
    }
    assert graph["b"]["a"] == ["pkg/b/y.py:2"] and graph["b"]["c"] == ["pkg/b/z/__init__.py:1"]


def test_an_artificial_cycle_fails_naming_the_cycle_and_its_imports(tmp_path):
    root = _write(tmp_path, FAKE) / "pkg"
    try:
        assert_no_cycle(root)
    except AssertionError as exc:
        message = str(exc)
    else:
        raise AssertionError("the cycle a -> b -> a was not found")
    assert message.startswith("import cycle between subpackages: a -> b -> a\n")
    assert "  a -> b: pkg/a/x.py:2\n  b -> a: pkg/b/y.py:2" in message
    (root / "b" / "y.py").write_text("def g():\n    return None\n")  # break it: no cycle is left
    assert find_cycle(import_graph(root)) is None


def test_find_cycle_on_longer_cycles_and_self_free_graphs():
    three = {"a": {"b": ["1"]}, "b": {"c": ["2"]}, "c": {"a": ["3"]}, "d": {"a": ["4"]}}
    assert find_cycle(three) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": ["1"]}, "b": {"c": ["2"]}, "d": {"c": ["3"]}}) is None
