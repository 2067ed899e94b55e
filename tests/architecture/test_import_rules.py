"""The house rules, read from the source: imports run downward only.

    dealflow  (composition root: runtime, HTTP assembly, CLI, processes, bench, demo)
      |-> projections, workflows   (each may import engine, never each other's internals... and never dealflow)
      '-> engine                   (imports none of the others)

Every ``import`` and ``from ... import`` statement is read with :mod:`ast`, including those
inside functions (a lazy import is still an import), so the rule cannot be dodged.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AREAS = ("engine", "projections", "workflows", "dealflow")
# What each area may import, besides itself and third-party packages.
ALLOWED = {
    "engine": set(),
    "projections": {"engine"},
    "workflows": {"engine"},
    "dealflow": {"engine", "projections", "workflows"},
}
MAX_PRODUCT_MODULE_LINES = 500


def _modules(area: str) -> list[Path]:
    return sorted((ROOT / area).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = package[: len(package) - node.level + 1]
                found.append(".".join([*base, node.module] if node.module else base))
            elif node.module:
                found.append(node.module)
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for area in AREAS:
        for path in _modules(area):
            name = _module_name(path)
            graph[name]
            for target in _imports(path):
                if target.split(".")[0] in AREAS:
                    graph[name].add(target)
    return graph


@pytest.mark.parametrize("area", AREAS)
def test_each_area_imports_only_downward(area: str) -> None:
    offenders = []
    for path in _modules(area):
        for target in _imports(path):
            top = target.split(".")[0]
            if top in AREAS and top != area and top not in ALLOWED[area]:
                offenders.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not offenders, "upward imports:\n" + "\n".join(offenders)


def test_nothing_imports_the_composition_root() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {target}"
        for area in AREAS
        if area != "dealflow"
        for path in _modules(area)
        for target in _imports(path)
        if target.split(".")[0] == "dealflow"
    ]
    assert not offenders, "\n".join(offenders)


def _resolve(name: str, modules: set[str]) -> str | None:
    """`from engine.api import deps` names a module; `from engine.api.deps import x` names
    the module too. Map an import target to the module it loads."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def test_no_import_cycle_between_modules() -> None:
    graph = _graph()
    modules = set(graph)
    edges = {
        module: {
            resolved
            for target in targets
            if (resolved := _resolve(target, modules))
            and resolved != module
            # a package's __init__ importing its own submodules is not a cycle of concern
            and not resolved.startswith(module + ".")
            and not module.startswith(resolved + ".")
        }
        for module, targets in graph.items()
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_rules_catch_a_violation(tmp_path: Path) -> None:
    """The reader sees lazy and relative imports (so the tests above can fail)."""
    module = tmp_path / "engine" / "sample.py"
    module.parent.mkdir()
    (tmp_path / "engine" / "__init__.py").write_text("")
    module.write_text(
        "def f():\n    from projections.api import router\n    from . import x\n    import workflows.bridge\n"
    )
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert _imports(module) == ["projections.api", "engine", "workflows.bridge"]
    finally:
        ROOT = saved


@pytest.mark.parametrize("area", AREAS)
def test_no_product_module_is_over_500_lines(area: str) -> None:
    long = [
        f"{path.relative_to(ROOT)}: {n} lines"
        for path in _modules(area)
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_PRODUCT_MODULE_LINES
    ]
    assert not long, "split these by concern:\n" + "\n".join(long)
