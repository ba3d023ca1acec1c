"""The package's shape (docs/ARCHITECTURE.md): no import cycles, every dependency pointing
down the data flow, small modules and classes. Read from the source with `ast`, so optional
dependencies (torch, vllm, ray) need not be installed."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "servegen_fast"
KERNELS = ROOT / "kernels"

# Layers, lowest first: a module may import from its own layer or any lower one.
LAYERS = {
    "kernels": 0, "version": 0, "data": 0,
    "model": 1, "progress": 1,
    "io": 2,
    "sample": 3,
    "characterize": 4,
    "compat": 5, "replay": 5,
    "testing": 6, "simulate": 6,
    "distributed": 7,
    "cli": 8,
    "": 9, "generate": 9, "pool_file": 9,   # the package root and its re-export shims
}
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 150


def _modules() -> dict[str, Path]:
    out = {}
    for base, prefix in ((PACKAGE, "servegen_fast"), (KERNELS, "servegen_fast.kernels")):
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([prefix, *parts])] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Package modules that `name` imports anywhere in its body (lazy imports included)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from p import x`: the submodule p.x where x is one, else the module p
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _layer(name: str) -> int:
    parts = name.split(".")
    key = parts[1] if len(parts) > 1 else ""
    return LAYERS[key]


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_every_module_has_a_layer():
    unknown = sorted(n for n in MODULES if (n.split(".") + [""])[1] not in LAYERS)
    assert not unknown, f"add these to LAYERS (and docs/ARCHITECTURE.md): {unknown}"


def test_no_import_cycles():
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_dependencies_point_down_the_data_flow():
    upward = sorted(f"{a} -> {b}" for a, deps in GRAPH.items() for b in deps if _layer(b) > _layer(a))
    assert not upward, "imports against the data flow:\n" + "\n".join(upward)


def test_the_checker_sees_imports():
    # guard against a silently empty graph: known edges must be found
    assert "servegen_fast.model.pool" in GRAPH["servegen_fast.io.pool_file"]
    assert "servegen_fast.kernels.philox" in GRAPH["servegen_fast.model.population"]
    assert "servegen_fast.sample.plan" in GRAPH["servegen_fast.characterize.fit"]  # a lazy import


def test_only_distributed_imports_ray():
    def imports_ray(path: Path) -> bool:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "ray" for a in node.names):
                return True
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "ray":
                return True
        return False

    users = sorted(n for n, p in MODULES.items() if imports_ray(p))
    assert users, "the checker should see distributed/'s ray imports"
    assert all(n.startswith("servegen_fast.distributed") for n in users), users


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_and_classes_are_small(name):
    path = MODULES[name]
    text = path.read_text()
    assert text.count("\n") <= MAX_MODULE_LINES, f"{path} has {text.count(chr(10))} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            n = node.end_lineno - node.lineno + 1
            assert n <= MAX_CLASS_LINES, f"class {node.name} in {path} has {n} lines"
