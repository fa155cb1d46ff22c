"""bootstrap.core.environ's READS is the one list of variables vboot reads: every name read in the source is on it
(so the tests' isolation, built from it, leaves no variable of the user's that vboot would see)."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

from bootstrap.core.environ import KNOWN, READS
from tests.support.e2e import REPO

NAME = re.compile(r"^[A-Z][A-Z0-9_]{2,}$")
# A receiver of a read: an Environ, os.environ, a mapping of environment variables (env, user_env, unit_env, ...).
ENVIRONMENT = re.compile(r"(^|\.|_)(env|environ)\b|^environ|Environ\(", re.I)


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level NAME = "TEXT" assignments (MARGIN_ENV = "VBOOT_PULL_MARGIN")."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            out.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
    return out


def reads() -> dict[str, str]:
    """Every variable name the source reads literally, with one place it is read: ``env.get("X")``,
    ``env.flag/path(X)``, ``os.getenv("X")``, ``"X" in env``, ``env["X"]``."""
    found: dict[str, str] = {}
    for path in sorted((REPO / "bootstrap").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        consts = _constants(tree)

        def value(node: ast.expr) -> str | None:
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                return node.value
            return consts.get(node.id) if isinstance(node, ast.Name) else None  # noqa: B023 - called in this loop

        for node in ast.walk(tree):
            name, receiver = None, None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args and \
                    node.func.attr in ("get", "flag", "path", "getenv", "pop"):
                name, receiver = value(node.args[0]), ast.unparse(node.func.value)
            elif isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.In):
                name, receiver = value(node.left), ast.unparse(node.comparators[0])
            elif isinstance(node, ast.Subscript):
                name, receiver = value(node.slice), ast.unparse(node.value)
            if name and NAME.match(name) and receiver and (ENVIRONMENT.search(receiver) or receiver == "os"):
                found.setdefault(name, f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_every_variable_vboot_reads_is_on_the_one_list():
    found = reads()
    assert len(found) > 15  # the scan sees the reads (HOME, XDG_*, VBOOT_*, MODELSCOPE_*, ...)
    missing = {name: where for name, where in found.items() if name not in READS}
    assert not missing, f"add these to bootstrap.core.environ (KNOWN or OTHER_READS): {missing}"


def test_the_list_names_each_variable_once_and_keeps_doctors_report_first():
    assert len(READS) == len(set(READS)) and READS[: len(KNOWN)] == KNOWN


def test_a_test_sees_none_of_the_users_variables(isolated_env, tmp_path):
    """The autouse isolation (tests/conftest.py): HOME and the XDG dirs are the test's own, nothing else vboot
    reads survives from the environment the suite was started in."""
    import pwd

    from tests.support.environment import MACHINE

    home = Path(os.environ["HOME"])
    assert home.is_dir() and home != Path(pwd.getpwuid(os.getuid()).pw_dir)
    assert os.environ["XDG_CONFIG_HOME"].startswith(str(home))
    leaked = {k for k in READS if k in os.environ} - MACHINE - {"HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME",
                                                              "XDG_CACHE_HOME", "MODELSCOPE_CACHE"}
    assert leaked == set()
    assert isolated_env["HOME"] == str(home)
