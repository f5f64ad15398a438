"""No import circles inside the `selfrag` package (issue #15).

Every module under `selfrag/` is parsed with `ast` (never imported, so the test needs neither torch nor faiss and
sees the imports of code paths that never run here). Its imports, wherever they stand, make the edges of a graph of
selfrag-internal modules; a strongly connected component of more than one module is a circle, and the test fails
naming each one as `a -> b -> a`, with the file and line of every import on the way.

Rules for the edges:

* Every `import` / `from ... import` statement counts, wherever it is: at the top of the module, inside a function
  or a method (a deferred import that closes a circle is still a circle: it only moves the failure to run time),
  inside `if TYPE_CHECKING:` (the modules still depend on each other; the annotation names one the other defines),
  inside `try:`.
* Relative imports are resolved against the importing module's package (`__init__.py` is its own package).
* `import selfrag.a.b` and `from selfrag.a.b import name` are edges to `selfrag.a.b`. `from selfrag.a import b`,
  where `b` is a submodule of `selfrag.a`, is an edge to `selfrag.a.b`; where `b` is a name defined in
  `selfrag/a/__init__.py`, it is an edge to `selfrag.a` (the `__init__`), as is `import selfrag.a`.
* The parent packages that Python runs before a submodule (`selfrag/a/__init__.py` before `selfrag.a.b`) are
  *not* edges: `selfrag.a.b` uses nothing of them unless it imports them by name. Counting them would make every
  `__init__` that re-exports from its submodules (`selfrag/server/__init__.py`, `selfrag/backends/__init__.py`) a
  false circle with each of them. With that rule no further exception is needed, so the edges from a package's
  `__init__` to its own submodules are all kept: a submodule that imports its package by name
  (`from selfrag.a import X`, X re-exported by `selfrag/a/__init__.py`, which imports that submodule) is a real
  circle and is reported.
* Dynamic imports (`importlib.import_module(name)`, as the lazy `__getattr__` of `selfrag/retrieval/__init__.py`)
  are not edges: they run on attribute access, after both modules are loaded.
* Imports of modules outside `selfrag` are ignored.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "selfrag"

# edge (importer, imported) -> "path:line" of the first import statement that makes it
Edges = dict[tuple[str, str], str]


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every `.py` under `root/package` (a package is its `__init__.py`)."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _base_package(module: str, path: Path, level: int) -> str:
    """The package a relative import of `level` dots starts from."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(level - 1):
        package = package.rpartition(".")[0]
    return package


def _target(name: str, modules: dict[str, Path]) -> str | None:
    """The selfrag module `name` names, or the longest selfrag module it starts with (`import a.b.c` of a
    non-module `c` is an error anyway); None outside the package."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> Iterable[tuple[str, int]]:
    """(imported selfrag module, line) for every import statement of `module`, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _target(alias.name, modules)
                if target:
                    yield target, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _base_package(module, path, node.level)
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                target = submodule if submodule in modules else _target(source, modules)
                if target:
                    yield target, node.lineno


def import_graph(root: Path, package: str) -> tuple[dict[str, set[str]], Edges]:
    modules = module_files(root, package)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    where: Edges = {}
    for module, path in modules.items():
        for target, line in imports_of(module, path, modules):
            if target == module:
                continue
            graph[module].add(target)
            where.setdefault((module, target), f"{path.relative_to(root)}:{line}")
    return graph, where


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative); components in a deterministic order, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return sorted(components)


def shortest_cycle(graph: dict[str, set[str]], start: str, within: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside the component `within` (breadth-first)."""
    previous: dict[str, str] = {}
    frontier = [start]
    seen = {start}
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & within):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if child not in seen:
                    seen.add(child)
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"{start} is on no cycle of its component")


def circles(root: Path, package: str) -> list[str]:
    """One line per distinct shortest circle through each module of every component of more than one module."""
    graph, where = import_graph(root, package)
    found: list[str] = []
    for component in strongly_connected(graph):
        if len(component) < 2:
            continue
        seen: set[tuple[str, ...]] = set()
        for module in component:
            cycle = shortest_cycle(graph, module, set(component))
            i = cycle.index(min(cycle[:-1]))
            key = tuple(cycle[i:-1] + cycle[:i])  # the same circle from another start
            if key in seen:
                continue
            seen.add(key)
            steps = ", ".join(where[(a, b)] for a, b in zip(cycle, cycle[1:]))
            found.append(f"{' -> '.join(cycle)}    ({steps})")
    return found


def test_no_import_circles_in_selfrag():
    found = circles(ROOT, PACKAGE)
    assert not found, "import circles inside selfrag (imports at that file:line):\n" + "\n".join(found)


def test_the_rules_on_a_small_package(tmp_path):
    """The parser sees deferred, relative, TYPE_CHECKING and `from pkg import submodule` imports; a package's
    `__init__` re-exporting its submodules is no circle, a submodule importing a name from its package is."""
    files = {
        "pkg/__init__.py": "from pkg.b import B\n",
        "pkg/a.py": "def f():\n    from . import b\n",  # deferred, relative, submodule
        "pkg/b.py": "from typing import TYPE_CHECKING\nB = 1\nif TYPE_CHECKING:\n    from pkg.sub.c import C\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "import pkg.a\nimport os\n",
        "pkg/d.py": "from pkg import B\n",  # a name of pkg/__init__.py: an edge to the package
        "pkg/e.py": "from .. import os\nimport pkg.sub\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph, where = import_graph(tmp_path, "pkg")
    assert graph == {
        "pkg": {"pkg.b"},
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.sub.c"},
        "pkg.sub": set(),
        "pkg.sub.c": {"pkg.a"},
        "pkg.d": {"pkg"},
        "pkg.e": {"pkg.sub"},
    }
    assert where[("pkg.a", "pkg.b")] == "pkg/a.py:2"
    assert circles(tmp_path, "pkg") == [
        "pkg.a -> pkg.b -> pkg.sub.c -> pkg.a    (pkg/a.py:2, pkg/b.py:4, pkg/sub/c.py:1)"
    ]

    (tmp_path / "pkg/b.py").write_text("from pkg import d\n")  # pkg -> pkg.b -> pkg.d -> pkg (a name of it)
    (tmp_path / "pkg/d.py").write_text("from pkg import B\n")
    assert circles(tmp_path, "pkg") == ["pkg -> pkg.b -> pkg.d -> pkg    (pkg/__init__.py:1, pkg/b.py:1, pkg/d.py:1)"]
