"""The structure drawn from bootstrap's imports: no cycle, no arrow from core/ to cli/, and every arrow from core/
to probes/ a known production default.

Every import counts, wherever it is written: at the top of a module, inside a function (a lazy import is still
an arrow) or under ``if TYPE_CHECKING``. The graph is read from the source with ast, nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.e2e import REPO

PACKAGE = REPO / "bootstrap"

# core -> probes: each is where core's injected collaborator, or its scan/execute step, gets its real value in
# production (the logic takes the facts as arguments; tests pass fakes). Adding one needs a reason here.
CORE_TO_PROBES = {
    ("bootstrap.core.caches", "bootstrap.probes.system"): "execute_plan(usage=): df of a cache root before/after",
    ("bootstrap.core.disk", "bootstrap.probes.system"): "filesystem_usage: the df half of the du-style scanner",
    ("bootstrap.core.pull", "bootstrap.probes.modelscope_hub"): "ensure_model(hub=): the ModelScope client",
    ("bootstrap.core.profiles",
     "bootstrap.probes.procs"): "resolve_serve_settings(pick_port=): a free port for --port auto",
    ("bootstrap.core.pull", "bootstrap.probes.system"): "ensure_model(free_space=): df of the cache dir",
    ("bootstrap.core.runs", "bootstrap.probes.procs"): "live_runs(alive=): is a recorded PID still that process",
    ("bootstrap.core.servers", "bootstrap.probes.http"): "Probes.real(): /health of a listed server",
    ("bootstrap.core.servers", "bootstrap.probes.nvml"): "Probes.real(): the GPU memory each PID holds",
    ("bootstrap.core.servers", "bootstrap.probes.procs"): "Probes.real(), StopOps.real(): psutil and signals",
    ("bootstrap.core.setup", "bootstrap.probes.elf"): "verify(read_links=): the libcudart vLLM links",
    ("bootstrap.core.setup", "bootstrap.probes.pyenv"): "read_venv, linked_runtimes: what a venv holds",
    ("bootstrap.core.supervisor", "bootstrap.probes.procs"): "GroupOps.real(): killpg and group members",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str) -> set[str]:
    """The bootstrap modules ``name`` imports, anywhere in its source."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:  # `from bootstrap.cli import output` imports the module bootstrap.cli.output
                out.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target)
    return {m for m in out if m in MODULES and m != name}


GRAPH = {name: imports(name) for name in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each a cycle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def arrows(source: str, target: str) -> set[tuple[str, str]]:
    return {(a, b) for a, bs in GRAPH.items() if a.startswith(source) for b in bs if b.startswith(target)}


def test_the_graph_is_read_from_every_module_and_every_kind_of_import():
    assert {"bootstrap.cli.entry", "bootstrap.core.pull", "bootstrap.probes.nvml"} <= set(GRAPH)
    assert "bootstrap.cli.disk_request" in GRAPH["bootstrap.cli.entry"]  # imported inside main()
    assert "bootstrap.cli.output" in GRAPH["bootstrap.cli.main"]  # `from bootstrap.cli import output`
    assert "bootstrap.core.metrics" in GRAPH["bootstrap.probes.http"]  # under TYPE_CHECKING, and in scrape()


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle():
    assert cycles(GRAPH) == []


def test_core_never_imports_cli():
    assert arrows("bootstrap.core", "bootstrap.cli") == set()


def test_probes_never_import_cli():
    assert arrows("bootstrap.probes", "bootstrap.cli") == set()


def test_every_arrow_from_core_to_probes_is_a_listed_production_default():
    assert arrows("bootstrap.core", "bootstrap.probes") == set(CORE_TO_PROBES)


def test_cores_collaborators_name_the_records_they_return():
    """Issue 20: doctor's and ps's collaborators return the frozen records the probes fill (bootstrap.core.gpu,
    bootstrap.core.records), not Any, so mypy checks every check against what a probe really answers."""
    import typing

    from bootstrap.core import checks, servers

    for cls in (checks.Collaborators, servers.Probes):
        for name, hint in typing.get_type_hints(cls).items():
            assert "Any" not in str(hint), f"{cls.__qualname__}.{name}: {hint}"


def test_every_package_of_bootstrap_is_in_the_wheel():
    """pyproject.toml lists the packages the wheel ships; a new subpackage missing from the list installs without
    its modules (`pip install .` then an ImportError), which only the slow install test would otherwise show."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    present = {module_name(init.parent / "__init__.py") for init in PACKAGE.rglob("__init__.py")}
    assert present - listed == set()
