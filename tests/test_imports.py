"""The package's import graph has no cycle: a module never imports (even inside a
function) a module that imports it back, so the layers read bottom-up."""

import ast
from pathlib import Path

import networkx as nx

import mixsim

PACKAGE = Path(mixsim.__file__).parent


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["mixsim", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def import_graph() -> nx.DiGraph:
    """Module -> module it imports, at the top or inside a function."""
    modules = _modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from mixsim.optim import bits` imports the submodule bits.
                targets = [f"{node.module}.{alias.name}"
                           if f"{node.module}.{alias.name}" in modules else node.module
                           for alias in node.names]
            else:
                continue
            graph.add_edges_from((name, t) for t in targets if t in modules and t != name)
    return graph


def test_the_graph_sees_a_lazy_import():
    graph = import_graph()
    # mixsim.cli imports mixsim.learning only inside a function.
    assert graph.has_edge("mixsim.cli", "mixsim.learning")
    assert graph.has_edge("mixsim.sweep", "mixsim.scenario")


def test_no_import_cycle():
    cycles = sorted(sorted(cycle) for cycle in nx.simple_cycles(import_graph()))
    assert cycles == []
