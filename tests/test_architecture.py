"""The import graph: no cycles, and every import points down the layers of docs/architecture.md.

Every `import` counts, including those inside functions (a lazy import is still a dependency).
A new module must be placed in LAYERS below, which is the point: its place is a decision.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("gpt4tools", "tools")

# Lowest first. A module may import modules of its own layer or of lower ones, never higher.
# Names are module names or package prefixes ("gpt4tools.data" covers gpt4tools.data.*).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundations", ("gpt4tools", "gpt4tools.paths", "gpt4tools.hardware", "gpt4tools.records", "gpt4tools.react",
                     "gpt4tools.progress", "gpt4tools.model_cache", "gpt4tools.convert")),
    ("weights and models", ("gpt4tools.weights", "gpt4tools.models")),
    ("tool contract", ("gpt4tools.images", "gpt4tools.tool")),
    ("tools", ("tools",)),
    ("registry and LLM backends", ("gpt4tools.registry", "gpt4tools.llm", "gpt4tools.embed")),
    ("agent core", ("gpt4tools.prompt", "gpt4tools.history", "gpt4tools.retrieval", "gpt4tools.references",
                    "gpt4tools.unserved",
                    "gpt4tools.agent", "gpt4tools.session", "gpt4tools.options")),
    ("pipelines", ("gpt4tools.metrics", "gpt4tools.data", "gpt4tools.train", "gpt4tools.bench",
                   "gpt4tools.report", "gpt4tools.export", "gpt4tools.inventory", "gpt4tools.chatbench")),
    ("UI and CLI", ("gpt4tools.ui", "gpt4tools.cli", "gpt4tools.__main__", "app")),
]
# What a tool may import from gpt4tools: the tool contract and what loads its weights, nothing else.
TOOL_MAY_IMPORT = {"gpt4tools.tool", "gpt4tools.images", "gpt4tools.weights", "gpt4tools.model_cache",
                   "gpt4tools.paths", "gpt4tools.hardware"}


def modules() -> dict[str, Path]:
    out = {"app": REPO / "app.py"}
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `name` imports, anywhere in its file."""

    def owner(dotted: str) -> str | None:  # the module that defines `dotted` (a module or a name in one)
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {owner(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            found |= {owner(f"{base}.{a.name}") for a in node.names}
    return {m for m in found if m and m != name}


def layer_of(module: str) -> int:
    best, depth = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > depth:
                best, depth = i, len(p)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_architecture.py")
    return best


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_every_module_has_a_layer(graph):
    for module in graph:
        layer_of(module)


def test_imports_point_down(graph):
    upward = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {d} ({LAYERS[layer_of(d)][0]})"
              for m, deps in sorted(graph.items()) for d in sorted(deps) if layer_of(d) > layer_of(m)]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_no_import_cycles(graph):
    # Tarjan's strongly connected components: any component with more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_tools_know_only_the_tool_contract(graph):
    wrong = [f"{m} imports {d}" for m, deps in sorted(graph.items()) if m.split(".")[0] == "tools"
             for d in sorted(deps) if d.split(".")[0] != "tools" and d not in TOOL_MAY_IMPORT]
    assert not wrong, "\n".join(wrong)


def test_the_scorer_is_pure(graph):
    """metrics.py: text in, numbers out. It reads the ReAct format through react, and nothing else of ours."""
    assert graph["gpt4tools.metrics"] <= {"gpt4tools.react"}
    tree = ast.parse((REPO / "gpt4tools" / "metrics.py").read_text(encoding="utf-8"))
    top = {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    top |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert top <= {"__future__", "gpt4tools", "collections", "dataclasses", "math", "re", "typing"}, top


def test_the_checker_sees_function_level_imports_and_cycles(tmp_path):
    """The checks above would pass vacuously if `imports` missed lazy imports: check it on a known case."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("def f():\n    from pkg import b\n")
    b.write_text("import pkg.a\n")
    known = {"pkg.a": a, "pkg.b": b, "pkg": tmp_path / "__init__.py"}
    assert imports("pkg.a", a, known) == {"pkg.b"} and imports("pkg.b", b, known) == {"pkg.a"}
