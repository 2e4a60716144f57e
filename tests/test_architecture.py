"""The architecture's rules, checked on the source: no import cycle among the project's modules (imports
inside functions count too), and the runtime never imports the speed tooling."""
import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGES = ("benchmark", "callbacks", "datamodules")


def _modules():
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _imports(name, path, modules):
    """Project modules imported by ``name`` (anywhere in the file); ``from package import x`` counts as the
    submodule ``package.x`` when it is one, else as the package."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _graph():
    modules = _modules()
    # a package's __init__ importing its own submodules is how a registry registers: not a cycle edge back
    return {name: {t for t in _imports(name, path, modules) if not t.startswith(name + ".")}
            for name, path in modules.items()}


def test_no_import_cycle():
    assert _cycles(_graph()) == []


def _imports_of(graph, rooms):
    return {name: sorted(t for t in targets) for name, targets in graph.items() if name.startswith(rooms)}


def test_the_rooms_import_downstream_only():
    """The runtime (and the explainers and metrics it runs) never import the runner or the reporting; the
    reporting never imports the runtime; the shared types import nothing of the project."""
    graph = _graph()
    for name, targets in _imports_of(graph, ("benchmark.runtime", "benchmark.explainers", "benchmark.metrics")).items():
        assert not [t for t in targets if t.startswith(("benchmark.runner", "benchmark.report"))], name
    for name, targets in _imports_of(graph, ("benchmark.report",)).items():
        assert not [t for t in targets if t.startswith("benchmark.runtime")], name
    assert graph["benchmark.catalog"] == set()  # the listing's data: imports nothing, so `cam-bench list` is light
    assert graph["benchmark.runner.offline"] == set()
    for name in ("benchmark.runtime.preprocessing", "benchmark.runtime.checkpoints"):
        assert not [t for t in graph[name] if t.split(".")[0] in PACKAGES and t != "benchmark.runtime"], name
    assert not [t for name, targets in graph.items() if name.startswith("benchmark.runtime.backbones")
                for t in targets if t.startswith("datamodules")]


def test_the_runtime_never_imports_the_speed_tooling():
    graph = _graph()
    assert not [name for name, targets in graph.items() if any(t.split(".")[0] == "perf" for t in targets)]
    assert not (ROOT / "benchmark" / "perf").exists()
