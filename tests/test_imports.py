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
     "tabembed.datasets", "tabembed.native", "tabembed.defaults", "tabembed.scaling",
     "tabembed.vocabulary", "tabembed._validation", "tabembed.column_kinds"},
    {"tabembed.preprocessor_state", "tabembed.preprocessing", "tabembed.targets",
     "tabembed.batches", "tabembed.models", "tabembed.persistence", "tabembed.metrics",
     "tabembed.ranking_metrics", "tabembed.interaction_splits", "tabembed.sampling"},
    {"tabembed.streaming"},
    {"tabembed.training"},
    {"tabembed.estimators"},
    {"tabembed.recommenders", "tabembed.recommender", "tabembed.export", "tabembed.pretraining",
     "tabembed.transfer", "tabembed.ensembles", "tabembed.tuning"},
    {"tabembed.cli", "tabembed.__main__", "tabembed", "tabembed.mlflow"},
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


# Private names read through another object, allowed, with why: external libraries' internals
# (torch tensors and optimizers), and a class's own private names on another instance of it.
PRIVATE_ACCESS_ALLOWED = {
    ("tabembed.training.lazy_adam", "_indices"): "a torch sparse tensor's index view",
    ("tabembed.training.lazy_adam", "_values"): "a torch sparse tensor's value view",
    ("tabembed.training.optimizers", "_optimizer_step_pre_hooks"): "torch's hook registry",
    ("tabembed.training.optimizers", "_optimizer_step_post_hooks"): "torch's hook registry",
    ("tabembed.models.tabular", "_version"): "a torch tensor's in-place version counter",
    ("tabembed.sampling", "_negative_seed"): "NegativeSampling on its own shard",
    ("tabembed.estimators.base", "_adopt"): "TrainedEstimator.from_state on its new instance",
    ("tabembed.estimators.base", "_restore_extra"): "the same",
    ("tabembed.estimators.base", "_default_batch_size"): "the same",
    ("tabembed.estimators.base", "_training_config"): "the same",
    ("tabembed.estimators.base", "_auto_values"): "the same",
    ("tabembed.estimators.transformer", "_adopt"): "EntityEmbeddingTransformer.from_state",
}


def _private_accesses(name: str, path: Path) -> set[tuple[str, str]]:
    """``(module, attribute)`` for every ``other._private`` in the module's source, where
    ``other`` is neither ``self``, ``cls``, ``super()`` nor an imported module."""
    tree = ast.parse(path.read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            modules.update(alias.asname or alias.name for alias in node.names)
    found = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            continue
        root = node.value
        while isinstance(root, ast.Attribute):
            root = root.value
        if isinstance(root, ast.Call) and getattr(root.func, "id", None) == "super":
            continue
        if isinstance(root, ast.Name) and ((root.id in ("self", "cls") and node.value is root)
                                           or root.id in modules):
            continue
        found.add((name, node.attr))
    return found


def test_no_module_calls_another_objects_private_names():
    found = set()
    for name, path in _modules().items():
        found |= _private_accesses(name, path)
    assert sorted(found - set(PRIVATE_ACCESS_ALLOWED)) == []
    assert sorted(set(PRIVATE_ACCESS_ALLOWED) - found) == [], "stale allowances"


def test_the_private_access_finder_sees_a_call_through_another_object(tmp_path):
    source = tmp_path / "module.py"
    source.write_text("import torch\n\ndef f(ranker, self):\n    torch._foreach_add_(1)\n"
                      "    self._ok()\n    self.ranker_._grid_scores(1)\n    ranker._x\n")
    assert _private_accesses("m", source) == {("m", "_grid_scores"), ("m", "_x")}
