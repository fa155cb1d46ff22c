"""One way out and one renderer: commands return their exit code and only the entry points leave the process;
only the output layer talks to rich.

Read from the source with ast (nothing is imported), like tests/test_import_graph.py: every call counts, wherever
it is written.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.e2e import REPO

PACKAGE = REPO / "bootstrap"
SOURCES = sorted(PACKAGE.rglob("*.py"))

# Where the process may end. Commands return their exit code (output.emit's) to bootstrap.cli.main.
MAY_EXIT = {
    "bootstrap/cli/main.py": "the one place a command's exit code, or an error's, becomes the process's",
    "bootstrap/cli/entry.py": "the console script: Ctrl-C before the CLI has loaded, and the disk fast path that "
                              "prints its report without loading click",
    "bootstrap/core/duwalk.py": "a forked scan worker (os._exit): a child must never return into its parent's stack",
    "bootstrap/core/headstart.py": "the forked head-start scan (os._exit), as above",
}

# Who may import rich. Everything else renders through bootstrap.cli.output's helpers.
MAY_IMPORT_RICH = {
    "bootstrap/cli/output.py": "the output layer: consoles, tables, markup escaping, confirmation, progress",
    "bootstrap/cli/top.py": "the full-screen live view (rich.live, panels and grids), a renderer of its own",
}


def _calls(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted callee) of every call and every ``raise SystemExit`` in ``tree``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name) and exc.id == "SystemExit":
                found.append((node.lineno, "raise SystemExit"))
            continue
        if not isinstance(node, ast.Call):
            continue
        target = node.func
        parts = []
        while isinstance(target, ast.Attribute):
            parts.append(target.attr)
            target = target.value
        if isinstance(target, ast.Name):
            parts.append(target.id)
        found.append((node.lineno, ".".join(reversed(parts))))
    return found


EXITS = {"sys.exit", "os._exit", "raise SystemExit", "exit", "quit"}


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_only_the_entry_points_leave_the_process():
    offenders = [f"{_rel(p)}:{line}: {callee}" for p in SOURCES if _rel(p) not in MAY_EXIT
                 for line, callee in _calls(ast.parse(p.read_text(encoding="utf-8"), str(p))) if callee in EXITS]
    assert offenders == [], "return the exit code instead (output.emit returns it; cli/main.py exits):\n" + \
        "\n".join(offenders)


def test_the_exit_checker_sees_every_way_out():
    tree = ast.parse("import sys, os\nsys.exit(1)\nos._exit(2)\nraise SystemExit(3)\nraise SystemExit\n")
    assert sorted((line, c) for line, c in _calls(tree) if c in EXITS) == [
        (2, "sys.exit"), (3, "os._exit"), (4, "raise SystemExit"), (5, "raise SystemExit")]


def _imports_rich(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        if any(n == "rich" or n.startswith("rich.") for n in names):
            lines.append(node.lineno)
    return lines


def test_only_the_output_layer_imports_rich():
    offenders = [f"{_rel(p)}:{line}" for p in SOURCES if _rel(p) not in MAY_IMPORT_RICH
                 for line in _imports_rich(ast.parse(p.read_text(encoding="utf-8"), str(p)))]
    assert offenders == [], "render through bootstrap.cli.output (table, escape, confirm, console) instead:\n" + \
        "\n".join(offenders)


def test_the_rich_checker_sees_both_import_forms():
    tree = ast.parse("def f():\n    import rich.table\n    from rich.markup import escape\n    import richer\n")
    assert _imports_rich(tree) == [2, 3]
