"""The library's architecture, read off its imports: every module of alignbench/ parsed with `ast`, its imports
(module-level and inside functions) as edges between modules. No cycle, no import that climbs to a higher layer,
no file over 400 lines (the ALIGN kernel stays whole)."""

import ast
from pathlib import Path

import pytest

from tests.support import REPO

ROOT = REPO / "alignbench"

# An import may point down or sideways within its own layer, never up.
LAYERS = {
    0: ("errors", "io", "registry", "config", "prompt", "metrics"),
    1: ("connector", "task", "plugins", "align_kernel"),
    2: ("data", "backbones"),
    3: ("model", "dist"),
    4: ("train", "evaluate"),
    5: ("run",),
    6: ("probes", "reporting", "lmms"),
    7: ("cli", "__main__"),
}
# Modules placed by what they are rather than by their package: the one learning-rate schedule is pure arithmetic
# that imports nothing, kept beside training, and the embedded backbones' pretraining uses it too.
LAYER_OF_MODULE = {"alignbench.train.schedule": 0}
# The one kind of upward import allowed: a configuration's `validate()` looks the names it holds up in the registries
# (tasks, connectors, backbones) when it is called, never at import, so importing a configuration stays torch-free.
REGISTRY_LOOKUPS = {"alignbench.task", "alignbench.connector", "alignbench.backbones"}
LONG_FILES = {"align_kernel.py"}
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = ["alignbench", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


MODULES = _modules()


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(name: str, path: Path) -> list[tuple[str, bool]]:
    """(imported alignbench module, whether the import is inside a function), imports under TYPE_CHECKING left out
    (they never run)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if _type_checking_only(node):
            for child in node.orelse:
                visit(child, in_function)
            return
        if isinstance(node, ast.Import):
            found.extend((a.name, in_function) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                found.append((f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target, in_function))
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return [(target, fn) for target, fn in found if target in MODULES and target != name]


def _layer(module: str) -> int:
    if module in LAYER_OF_MODULE:
        return LAYER_OF_MODULE[module]
    if module == "alignbench":
        return 0
    top = module.split(".")[1]
    return next(layer for layer, names in LAYERS.items() if top in names)


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_every_module_has_a_layer():
    unplaced = []
    for name in MODULES:
        try:
            _layer(name)
        except StopIteration:
            unplaced.append(name)
    assert not unplaced, f"modules in no layer: {unplaced}; add their package to LAYERS"


def test_no_import_climbs_to_a_higher_layer():
    climbing = [
        f"{name} (layer {_layer(name)}) imports {target} (layer {_layer(target)})"
        + (" inside a function" if in_function else "")
        for name, edges in GRAPH.items()
        for target, in_function in edges
        if _layer(target) > _layer(name)
        and not (in_function and name.startswith("alignbench.config.") and target in REGISTRY_LOOKUPS)
    ]
    assert not climbing, "\n".join(climbing)


def test_no_import_circle():
    """Depth-first search over every edge (function-level imports included): a back edge closes a circle."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    circles: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target, _ in GRAPH[name]:
            if state.get(target) == 1:
                circles.append(" -> ".join(path[path.index(target) :] + [target]))
            elif target not in state:
                visit(target)
        path.pop()
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)
    assert not circles, "\n".join(circles)


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_file_over_400_lines(path):
    if path.name in LONG_FILES and path.parent == ROOT:
        return
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT.parent)} has {lines} lines (at most {MAX_LINES})"


def test_package_inits_are_light():
    """A package's __init__ imports at most its own modules and the bottom layer (a registry), so importing one
    submodule never drags another package in."""
    heavy = [
        f"{name} imports {target}"
        for name, path in MODULES.items()
        if path.name == "__init__.py"
        for target, in_function in GRAPH[name]
        if not in_function and not target.startswith(f"{name}.") and _layer(target) > 0
    ]
    assert not heavy, "\n".join(heavy)


def test_importing_the_cli_or_a_configuration_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, alignbench.cli, alignbench.config.run, alignbench.config.cost, alignbench.config.launch, "
        "alignbench.backbones; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
