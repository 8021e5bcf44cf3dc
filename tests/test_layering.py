"""The import graph of ``src/qmamba``, read with ``ast`` (module-level and function-level imports, relative
imports resolved): no import cycle between modules, and the layers import only downwards:

    qmamba.ops      -> qmamba.ops, qmamba.errors, qmamba.utils
    qmamba.infer    -> none of models, data, train, eval, bench, commands, pipeline
    qmamba.models   -> none of infer, data, train, eval, bench, commands, pipeline, cli, micro, quickstart
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src"

MODELS_MAY_NOT_IMPORT = ("infer", "data", "train", "eval", "bench", "commands", "pipeline", "cli", "micro",
                         "quickstart")
INFER_MAY_NOT_IMPORT = ("models", "data", "train", "eval", "bench", "commands", "pipeline")
OPS_MAY_IMPORT = ("ops", "errors", "utils")


# ------------------------------------------------------------------------------------------ the graph
def module_names(src: Path, package: str = "qmamba") -> dict[str, Path]:
    """Every module under ``src/package``: dotted name -> file (a package is named by its ``__init__.py``)."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def imported_names(module: str, source: str, package: bool) -> set[str]:
    """The dotted names a module's source imports anywhere (module level, functions, TYPE_CHECKING blocks):
    ``import a.b`` gives a.b, ``from a import b`` gives a.b (``resolve`` finds the module it lands in: a.b if
    b is a module, else a); relative imports are resolved against ``module`` (``package``: whether it is a
    package's ``__init__``)."""
    here = module.split(".") if package else module.split(".")[:-1]
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            target = ".".join(base + (node.module.split(".") if node.module else []))
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module an imported name lands in: the longest known module that is ``name`` or a prefix of it."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """module -> the qmamba modules it imports (itself excluded)."""
    modules = module_names(src)
    graph = {}
    for name, path in modules.items():
        found = imported_names(name, path.read_text(encoding="utf-8"), is_package(name, modules))
        targets = {resolve(n, modules) for n in found if n == "qmamba" or n.startswith("qmamba.")}
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


# ------------------------------------------------------------------------------------------ cycles
def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (each sorted), iteratively."""
    index, low, on_stack, stack, comps = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                comps.append(sorted(comp))
    return comps


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One import cycle per strongly connected component of several modules, as the path
    [m0, m1, ..., m0] through its first module (shortest), sorted."""
    cycles = []
    for comp in strongly_connected(graph):
        if len(comp) < 2:
            continue
        members, start = set(comp), comp[0]
        parent = {start: None}
        queue, last = deque([start]), None  # breadth first: the shortest way back to start
        while queue and last is None:
            node = queue.popleft()
            for child in sorted(graph.get(node, ())):
                if child == start:
                    last = node
                    break
                if child in members and child not in parent:
                    parent[child] = node
                    queue.append(child)
        path = [last]
        while path[-1] != start:
            path.append(parent[path[-1]])
        cycles.append([*reversed(path), start])
    return sorted(cycles)


def violations(graph: dict[str, set[str]], layer: str, forbidden=(), allowed=None) -> list[str]:
    """'importer -> imported' for every module of ``layer`` importing a forbidden qmamba sub-package (or,
    with ``allowed``, anything of qmamba outside the allowed ones)."""

    def within(module: str, names) -> bool:
        return any(module == f"qmamba.{n}" or module.startswith(f"qmamba.{n}.") for n in names)

    out = []
    for module, targets in sorted(graph.items()):
        if not within(module, [layer]):
            continue
        for target in sorted(targets):
            bad = within(target, forbidden) if allowed is None else not within(target, allowed)
            if bad:
                out.append(f"{module} -> {target}")
    return out


# ------------------------------------------------------------------------------------------ the finder itself
def test_cycle_finder_on_a_hand_made_graph():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": {"e"}, "g": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["e", "f", "e"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_imports_are_read_everywhere_and_relative_ones_resolved():
    source = (
        "import qmamba.ops\n"
        "from . import sibling\n"
        "from ..utils.config import read_json\n"
        "def f():\n"
        "    from qmamba.infer.loop import generation_loop\n"
    )
    names = imported_names("qmamba.models.block", source, package=False)
    assert names == {"qmamba.ops", "qmamba.models.sibling", "qmamba.utils.config.read_json",
                     "qmamba.infer.loop.generation_loop"}
    assert imported_names("qmamba.models", "from . import block\n", package=True) == {"qmamba.models.block"}
    modules = {"qmamba.ops": Path("__init__.py"), "qmamba.ops.gemv": Path("gemv.py")}
    assert resolve("qmamba.ops.gemv", modules) == "qmamba.ops.gemv"  # from qmamba.ops import gemv (a module)
    assert resolve("qmamba.ops.add_norm", modules) == "qmamba.ops"  # from qmamba.ops import add_norm (a name)
    graph = {"qmamba.models.block": {"qmamba.infer.loop"}, "qmamba.infer.loop": {"qmamba.ops"}}
    assert violations(graph, "models", MODELS_MAY_NOT_IMPORT) == ["qmamba.models.block -> qmamba.infer.loop"]
    assert violations(graph, "infer", allowed=OPS_MAY_IMPORT) == []


# ------------------------------------------------------------------------------------------ the tree
@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_graph_covers_the_package(graph):
    assert {"qmamba.models.mamba_lm", "qmamba.infer.cuda_graph", "qmamba.ops"} <= set(graph)
    assert "qmamba.models.block" in graph["qmamba.models.mamba_lm"]


# cycles in eval/ and ops/ that are being taken apart at the same time; any other cycle fails
def test_no_import_cycles(graph):
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_models_import_no_layer_above_them(graph):
    assert violations(graph, "models", MODELS_MAY_NOT_IMPORT) == []


def test_ops_import_only_ops_errors_and_utils(graph):
    assert violations(graph, "ops", allowed=OPS_MAY_IMPORT) == []


def test_infer_imports_no_model_data_or_application_code(graph):
    assert violations(graph, "infer", INFER_MAY_NOT_IMPORT) == []
