"""The package's import graph, module-level and in-function imports alike (read from the source with
`ast`, nothing is imported): no cycles, and no lower layer importing a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Each layer may import only itself, `errors` and the layers listed before it.
LAYERS = ["errors", "io", "data", "metrics", "generate", "config", "models", "engine", "stats", "study", "report",
          "pipelines", "cli"]
# The modules `synthgap/__init__.py` and `synthgap/__main__.py` sit above every layer.


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _graph() -> dict[str, set[str]]:
    """module -> the synthgap modules it imports (a `from pkg import name` of a submodule counts as that
    submodule; of an attribute, as the package)."""
    modules = {_module_name(p): p for p in (SRC / "synthgap").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
            else:
                continue
            deps.update(t for t in targets if t.split(".")[0] == "synthgap" and t in modules and t != name)
        graph[name] = deps
    return graph


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_no_import_cycles():
    graph = _graph()
    # a package's __init__ importing its own submodules is how re-exports work: leave those edges out
    edges = {m: {d for d in ds if not d.startswith(m + ".")} for m, ds in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_lower_layers_do_not_import_higher_ones():
    bad = []
    for module, deps in _graph().items():
        here = _layer(module)
        if here is None or here not in LAYERS:
            continue
        for dep in deps:
            there = _layer(dep)
            if there is None and dep == "synthgap":
                continue
            if there in LAYERS and LAYERS.index(there) > LAYERS.index(here):
                bad.append(f"{module} imports {dep} ({here} is below {there})")
    assert not bad, "\n".join(sorted(bad))


@pytest.mark.parametrize("layer", LAYERS)
def test_every_module_is_in_a_layer(layer):
    names = {p.stem if p.is_file() else p.name for p in (SRC / "synthgap").iterdir()
             if p.name not in ("__init__.py", "__main__.py", "__pycache__", "resources") and not p.name.endswith(".egg-info")}
    assert names <= set(LAYERS), f"top-level modules outside the layers: {sorted(names - set(LAYERS))}"
