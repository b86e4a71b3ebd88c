"""No import cycle in ``trio_culler/``: the package's modules, read with ``ast``, form a graph without loops.

Every import counts as an edge, wherever it stands:

- at module level, of course;
- under ``if TYPE_CHECKING:``: it names a type the module's annotations depend on, so the two modules know each
  other as much as through a runtime import; only Python's import machinery would not trip over the loop;
- inside a function: importing late avoids the circular-import error at start-up, and hides the loop it would
  report. (The command line imports the status page, ``--demo`` and ``--explain`` lazily to keep start-up
  light; that is fine as long as none of them imports the command line back.)

``trio_culler.testing`` counts as one module: how its own files import each other is that package's business,
but a loop through it (``_demo`` -> ``testing`` -> ``_demo``) counts like any other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "trio_culler"
#: Packages whose internal imports are not examined; each is one node of the graph.
COLLAPSED = ("trio_culler.testing",)


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return _collapse(".".join(parts))


def _collapse(name: str) -> str:
    for package in COLLAPSED:
        if name == package or name.startswith(package + "."):
            return package
    return name


def _resolve(current: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of ``from <level dots><target> import ...`` written in module ``current``."""
    if level == 0:
        return target or ""
    base = current.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def imported_modules(path: Path, modules: frozenset[str], package: Path = PACKAGE) -> Iterator[str]:
    """The package's modules that the file at ``path`` imports, anywhere in it."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    current = ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__")
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(current, is_package, node.level, node.module)
            # `from . import _x` imports the module _x; `from ._x import name` imports _x (name is in it).
            candidates = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for candidate in candidates:
            name = _collapse(candidate)
            if name in modules:
                yield name


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    files = sorted(package.rglob("*.py"))
    modules = frozenset(module_name(path, package) for path in files)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for path in files:
        source = module_name(path, package)
        graph[source] |= {target for target in imported_modules(path, modules, package) if target != source}
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_in_the_package() -> None:
    graph = import_graph()
    found = cycles(graph)
    described = [
        " <-> ".join(cycle) + ": " + "; ".join(f"{a} -> {sorted(graph[a] & set(cycle))}" for a in cycle)
        for cycle in found
    ]
    assert not found, "import cycles:\n" + "\n".join(described)


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    # The checker itself, on a package made for it: a loop closed by a TYPE_CHECKING import, one closed by a
    # function-level import, one through the collapsed testing package (whose own inner loop does not count),
    # and a module that imports nothing of the package.
    package = tmp_path / "trio_culler"
    (package / "testing").mkdir(parents=True)
    files = {
        "__init__.py": "from ._a import A\n",
        "_a.py": "from typing import TYPE_CHECKING\nfrom ._b import B\nA = 1\n",
        "_b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ._a import A\nB = 2\n",
        "_c.py": "def late():\n    from . import _d\n",
        "_d.py": "from ._c import late\n",
        "_e.py": "from .testing import X\n",
        "_f.py": "import os\n",
        "testing/__init__.py": "from ._x import X\n",
        "testing/_x.py": "from . import _y\nfrom .._e import X\nX = 3\n",
        "testing/_y.py": "from ._x import X\n",
    }
    for name, text in files.items():
        (package / name).write_text(text, encoding="utf-8")
    graph = import_graph(package)
    assert graph["trio_culler"] == {"trio_culler._a"}
    assert graph["trio_culler._f"] == set()
    assert graph["trio_culler.testing"] == {"trio_culler._e"}
    assert cycles(graph) == [
        ["trio_culler._a", "trio_culler._b"],
        ["trio_culler._c", "trio_culler._d"],
        ["trio_culler._e", "trio_culler.testing"],
    ]


def test_the_real_graph_is_not_empty() -> None:
    # A walk that found no import at all would pass the first test vacuously.
    graph = import_graph()
    assert "trio_culler._rules" in graph["trio_culler._config"]
    assert "trio_culler._policy" in graph["trio_culler._rules"]
    assert "trio_culler.testing" in graph["trio_culler._demo"]
    assert "trio_culler.web" in graph["trio_culler.cli"], "function-level imports count"
