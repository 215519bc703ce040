"""No import circles between crossreid's modules, and no import from a lower layer back up
(methods -> engine): every import (at module level, inside a function or under
``TYPE_CHECKING``) and every ``importlib.import_module("crossreid...")`` string counts as an edge."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "crossreid"


def module_names() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the package that ``name`` imports (a name imported from a package counts as
    the package, unless it is itself a submodule)."""
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.add(arg.value)
    return {m for m in found if m in modules and m != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


# A layer and the layers above it that it never imports: a method gets what it needs from the
# engine through its stage context and step output, never by importing it.
UPWARD = {
    "crossreid.models": ("crossreid.methods", "crossreid.engine", "crossreid.retrieval"),
    "crossreid.methods": ("crossreid.engine", "crossreid.retrieval", "crossreid.experiment", "crossreid.report"),
}
# Leaf modules every layer may use; they import nothing of crossreid but each other.
LEAVES = ("crossreid.errors", "crossreid.io", "crossreid.modality", "crossreid.registry", "crossreid.distributed",
          "crossreid.device", "crossreid.tensor_cache")


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(module, import) pairs that break the layering: a lower layer importing an upper one, or
    a leaf importing anything but a leaf."""
    bad = []
    for module, deps in graph.items():
        for dep in deps:
            above = any(within(module, low) and any(within(dep, up) for up in ups) for low, ups in UPWARD.items())
            if above or (module in LEAVES and dep not in LEAVES):
                bad.append((module, dep))
    return sorted(bad)


def test_the_layer_check_finds_upward_imports():
    graph = {"crossreid.methods.smmd": {"crossreid.engine.distributed", "crossreid.models"},
             "crossreid.distributed": {"crossreid.config"}, "crossreid.engine.trainer": {"crossreid.methods"}}
    assert upward_imports(graph) == [("crossreid.distributed", "crossreid.config"),
                                     ("crossreid.methods.smmd", "crossreid.engine.distributed")]


def test_no_import_from_a_lower_layer_back_up():
    modules = module_names()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert all(leaf in modules for leaf in LEAVES)
    assert upward_imports(graph) == []


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a"}}) is None


def test_no_import_cycles_between_modules():
    modules = module_names()
    assert "crossreid.evaluation.protocols" in modules
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert "crossreid.evaluation.metrics" in graph["crossreid.evaluation.protocols"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
