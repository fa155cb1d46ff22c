"""Every error a user can meet has its own code and the exit code README.md's table gives.

Three views of the same contract: the classes (every VbootError subclass), the raise sites (every place in
bootstrap/ that builds an error, read from the source with ast), and the entry point (what `vboot` prints and
exits with when each class is raised). The base class's generic `error` code must never reach a user.
"""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import re
from pathlib import Path

import pytest

import bootstrap
from bootstrap.core import errors
from bootstrap.core.errors import VbootError

REPO = Path(__file__).resolve().parent.parent
SOURCES = sorted((REPO / "bootstrap").rglob("*.py"))


def readme_table() -> dict[str, int]:
    """error code -> exit code, from the table under '### Exit codes' in README.md."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    table: dict[str, int] = {}
    for row in re.findall(r"^\| (\d+(?: / \d+)?) \|[^|]*\|([^|]*)\|$", section, re.M):
        exits, codes = row
        for code in re.findall(r"`([a-z_]+)`", codes):
            assert code not in table, f"{code} is listed twice in README's exit-code table"
            table[code] = int(exits.split(" / ")[0])
    assert table, "README.md has no exit-code table"
    return table


def error_classes() -> dict[str, type[VbootError]]:
    """Every VbootError subclass defined anywhere in bootstrap (every module imported first)."""
    for mod in pkgutil.walk_packages(bootstrap.__path__, "bootstrap."):
        if mod.name != "bootstrap.__main__":
            importlib.import_module(mod.name)
    found: dict[str, type[VbootError]] = {}
    todo = list(VbootError.__subclasses__())
    while todo:
        cls = todo.pop()
        assert cls.__name__ not in found, f"two error classes named {cls.__name__}"
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


TABLE = readme_table()
CLASSES = error_classes()


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_every_error_class_has_its_own_code_with_the_readmes_exit_code(name):
    cls = CLASSES[name]
    assert cls.code != VbootError.code, f"{name} inherits the generic '{VbootError.code}' code"
    assert cls.code in TABLE, f"{name}'s code {cls.code!r} is not in README's exit-code table"
    assert cls.exit_code == TABLE[cls.code], f"{name} exits {cls.exit_code}, README says {TABLE[cls.code]}"
    assert cls.__doc__, f"{name} has no docstring saying when it is raised"


def test_no_two_error_classes_share_a_code():
    codes = [cls.code for cls in CLASSES.values()]
    assert len(codes) == len(set(codes))


def test_error_classes_live_in_core_errors():
    assert {cls.__module__ for cls in CLASSES.values()} == {"bootstrap.core.errors"}


# Exceptions that may live elsewhere: private control flow of one module, and the signal carriers the console
# script raises before anything (core/errors included) is imported.
ELSEWHERE = {"bootstrap.cli.interrupt.Terminated", "bootstrap.cli.interrupt.Stopped"}


def test_every_exception_class_of_vboot_lives_in_core_errors():
    """Not only the VbootErrors: every exception a module of bootstrap defines (ScrapeError, RunRecordError,
    MountCrossing, NotElf lived beside their raisers) is in core/errors, unless it is private to its module."""
    todo, found = [BaseException], set()
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("bootstrap.") and not sub.__name__.startswith("_"):
                found.add(f"{sub.__module__}.{sub.__qualname__}")
    elsewhere = {name for name in found if not name.startswith("bootstrap.core.errors.")}
    assert elsewhere == ELSEWHERE, f"move these to bootstrap/core/errors.py: {sorted(elsewhere - ELSEWHERE)}"


# --- raise sites --------------------------------------------------------------------------------------------

def _callee(node: ast.Call) -> str | None:
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _exit_constant(node: ast.expr | None) -> int | None:
    """An exit code written as a literal or as one of core.errors' EXIT_* names."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
    return getattr(errors, name) if name and name.startswith("EXIT_") else None


def raise_sites() -> list[tuple[str, int, str]]:
    """(file, line, error class) for every construction of a VbootError class in bootstrap/."""
    sites = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Call) and _callee(node) in set(CLASSES) | {"VbootError"}:
                sites.append((str(path.relative_to(REPO)), node.lineno, _callee(node)))
    return sites


def code_literals() -> list[tuple[str, int, str, int | None]]:
    """(file, line, code, exit code) for errors written as {"code": ...} documents (CommandResult errors,
    report_error), with the exit code given beside them where it is written as a constant."""
    found: dict[tuple[str, int, str], int | None] = {}
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            exit_code = next((_exit_constant(k.value) for k in call.keywords if k.arg == "exit_code"), None)
            if exit_code is None and _callee(call) == "report_error" and len(call.args) > 1:
                exit_code = _exit_constant(call.args[1])
            for node in ast.walk(call):
                if isinstance(node, ast.Dict):
                    for key, value in zip(node.keys, node.values, strict=True):
                        if isinstance(key, ast.Constant) and key.value == "code" and isinstance(value, ast.Constant):
                            where = (str(path.relative_to(REPO)), node.lineno, value.value)
                            if found.get(where) is None:  # the innermost call that gives an exit code wins
                                found[where] = exit_code
    return [(*where, exit_code) for where, exit_code in sorted(found.items())]


SITES = raise_sites()


def test_the_base_class_is_never_raised_itself():
    generic = [f"{f}:{line}" for f, line, name in SITES if name == "VbootError"]
    assert generic == [], f"raise a subclass with its own code instead of VbootError at {generic}"


@pytest.mark.parametrize("site", SITES, ids=[f"{f}:{line}" for f, line, _ in SITES])
def test_every_raise_site_raises_a_code_in_the_table(site):
    path, line, name = site
    cls = CLASSES[name]
    assert TABLE.get(cls.code) == cls.exit_code, f"{path}:{line} raises {name} ({cls.code}, exit {cls.exit_code})"


def test_every_error_class_is_raised_somewhere():
    unused = set(CLASSES) - {name for _, _, name in SITES}
    assert unused == set(), f"error classes nothing raises (drop them, or raise them): {sorted(unused)}"


@pytest.mark.parametrize("site", code_literals(), ids=lambda s: f"{s[0]}:{s[1]}:{s[2]}")
def test_every_error_document_written_by_hand_uses_a_code_in_the_table(site):
    path, line, code, exit_code = site
    if path == "bootstrap/core/errors.py":
        return  # VbootError.to_dict, which writes each class's own code
    assert code in TABLE, f"{path}:{line} writes error code {code!r}, which README's table does not list"
    if exit_code is not None:
        assert exit_code == TABLE[code], f"{path}:{line}: {code!r} exits {exit_code}, README says {TABLE[code]}"


def test_the_table_lists_no_code_that_nothing_produces():
    produced = {cls.code for cls in CLASSES.values()} | {c for _, _, c, _ in code_literals()}
    assert set(TABLE) - produced == set()


# --- what the user sees --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CLASSES))
def test_the_entry_point_exits_with_each_errors_exit_code_and_prints_its_code(name, monkeypatch, capsys):
    from bootstrap.cli import main as entry
    from bootstrap.cli import output

    cls = CLASSES[name]

    def fail(**kwargs):
        raise cls("something is wrong", hint="do this next", exit_code=99)  # context cannot change the exit code

    monkeypatch.setattr(entry.cli, "main", fail)
    monkeypatch.delenv("VBOOT_DEBUG", raising=False)
    monkeypatch.setattr(output.STATE, "json", False)
    with pytest.raises(SystemExit) as exited:
        entry.main(["doctor", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert exited.value.code == cls.exit_code == doc["exit_code"]
    assert doc["errors"][0]["code"] == cls.code and doc["errors"][0]["hint"] == "do this next"


def test_export_files_that_cannot_be_written_have_their_own_code(tmp_path, isolated_env):
    """Found by the raise-site walk: export k8s raised the base class when --out could not be written."""
    from bootstrap.core import k8s
    from bootstrap.core.environ import Environ
    from bootstrap.core.errors import OutputUnwritableError
    from bootstrap.core.profiles import load_profile

    export = k8s.build_export(load_profile("qwen", Environ(isolated_env)), k8s.K8sOptions())
    out = tmp_path / "out"
    out.mkdir()
    plan = k8s.plan_writes(out, export)
    out.rmdir()
    out.write_text("a file where the directory was")  # (root ignores permissions; a file in the way does not)
    with pytest.raises(OutputUnwritableError) as info:
        k8s.write_files(plan, export)
    assert info.value.exit_code == TABLE["output_unwritable"] and "--out" in info.value.hint
