"""The package's layout: data flows one way, and every room stays small enough to read.

Every import among ``atcourse`` modules is read from the source (function-level imports
included) without importing anything, so the check sees what a reader sees.
"""

from __future__ import annotations

import ast
from pathlib import Path

import atcourse

ROOT = Path(atcourse.__file__).resolve().parent

#: The layers, lowest first: a module may import its own layer and the layers below it.
#: A package stands for all its modules.
LAYERS: list[set[str]] = [
    {"paths", "config", "runtime", "progress", "timing", "distributed"},
    {"data"},
    {"models"},
    {"metrics"},
    {"distill"},
    {"records", "checkpoints"},
    {"train"},
    {"zoo"},
    {"experiments"},
    {"anchors"},
    {"leaderboard"},
    {"viz", "widgets", "exercises", "student"},
    {"execute", "sweep", "bench"},
    {"cli", "__main__"},
]
LAYER_OF = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the atcourse modules it imports, anywhere in its source."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, path.name == "__init__.py", node)
                for alias in node.names:  # `from . import paths` imports a module
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_cycle_among_modules():
    graph = _imports(_modules())
    graph.pop("atcourse", None)  # the package's front door imports every room
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt == "atcourse":
                raise AssertionError(f"{node} imports the package's __init__ (import the module)")
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_every_module_has_a_layer_and_imports_only_below_or_beside_it():
    graph = _imports(_modules())
    graph.pop("atcourse", None)
    unplaced = sorted({_top(m) for m in graph} - set(LAYER_OF))
    assert not unplaced, f"modules with no layer in LAYERS: {unplaced}"
    upward = [
        f"{m} (layer {LAYER_OF[_top(m)]}) imports {t} (layer {LAYER_OF[_top(t)]})"
        for m, targets in graph.items()
        for t in targets
        if LAYER_OF[_top(t)] > LAYER_OF[_top(m)]
    ]
    assert not upward, "imports against the flow:\n" + "\n".join(upward)


def test_rooms_a_reader_can_hold():
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    too_big = {n: s for n, s in sizes.items() if s > 600}
    assert not too_big, f"modules over 600 lines: {too_big}"
    methods = {n: s for n, s in sizes.items() if n.startswith("atcourse.distill.") and s >= 400}
    assert not methods, f"method modules of 400 lines or more: {methods}"


def test_the_check_sees_function_level_and_relative_imports(tmp_path):
    # a module that imports upwards inside a function, as results once did
    (tmp_path / "records.py").write_text("def f():\n    from . import cli\n    return cli\n")
    (tmp_path / "cli.py").write_text("from .records import f\n")
    modules = {"atcourse.records": tmp_path / "records.py", "atcourse.cli": tmp_path / "cli.py"}
    graph = _imports(modules)
    assert graph == {"atcourse.records": {"atcourse.cli"}, "atcourse.cli": {"atcourse.records"}}
