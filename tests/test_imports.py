"""The package's import graph, built from the source: no cycles, and the arrows point down."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tabembed"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    """tabembed modules that ``name`` imports anywhere in its source (lazily or not)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            # ``from package import module`` imports the module itself.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target.startswith("tabembed") and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return [*stack[stack.index(target):], target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_tabembed_modules():
    graph = import_graph()
    assert graph.get("tabembed.estimators")
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


# Layers from the bottom up: a module may import only from its own layer or below.
LAYERS = [
    {"tabembed._version", "tabembed._io", "tabembed.column_statistics", "tabembed.plotting",
     "tabembed.datasets", "tabembed.native"},
    {"tabembed.preprocessing", "tabembed.targets", "tabembed.batches", "tabembed.models",
     "tabembed.persistence", "tabembed._validation", "tabembed.metrics",
     "tabembed.ranking_metrics", "tabembed.interaction_splits", "tabembed.sampling"},
    {"tabembed.streaming"},
    {"tabembed.training"},
    {"tabembed.config"},
    {"tabembed.estimators", "tabembed.recommender", "tabembed.export", "tabembed.pretraining",
     "tabembed.transfer", "tabembed.ensembles"},
    {"tabembed.cli", "tabembed.__main__", "tabembed"},
]


def _layer(module: str) -> int:
    for index, layer in enumerate(LAYERS):
        for prefix in layer:
            # The root package is a layer of its own, not a prefix of every module.
            if module == prefix or (prefix != "tabembed" and module.startswith(prefix + ".")):
                return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_imports.py")


@pytest.mark.parametrize("module", sorted(_modules()))
def test_arrows_point_down(module):
    for target in import_graph()[module]:
        assert _layer(target) <= _layer(module), f"{module} imports {target}, a higher layer"
