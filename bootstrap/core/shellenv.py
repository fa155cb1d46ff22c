"""A profile's variables outside vboot: shell exports and .env lines (`vboot env`) and a Jupyter kernel spec
that carries them (`vboot kernel`).

Kept apart from :mod:`bootstrap.core.setup` so those commands do not import the setup planner.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bootstrap.core.environ import Environ
from bootstrap.core.errors import UsageError
from bootstrap.core.paths import data_home
from bootstrap.core.textsafe import one_line

# ---------------------------------------------------------------------------------------------- vboot env

SHELLS = ("bash", "zsh", "fish")


def quote_single(value: str) -> str:
    """``value`` in single quotes where ``\\'`` and ``\\\\`` are the only escapes, as fish reads them: no ``$``
    expansion, and a newline stands as itself. (.env files need more care: :func:`quote_dotenv`.)"""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# ---- .env files ------------------------------------------------------------------------------------------------
#
# One file, read the same by the readers people point at a .env file (checked against their sources):
#
# - POSIX shells, `set -a; . ./.env` in bash, dash or zsh: '...' is literal and cannot hold '; "..." expands
#   $, ` and \ (and ends at ").
# - python-dotenv (dotenv/parser.py, variables.py): '...' decodes \\ and \' and a backslash pairs with the next
#   character; "..." decodes backslash escapes; in *both*, ${NAME} and ${NAME:-default} are expanded (interpolate
#   defaults to on); the file is read in text mode, so a carriage return becomes a line break.
# - docker compose env_file (compose-go dotenv/parser.go): '...' is literal except that \' does not end it; "..."
#   decodes escapes and expands $. Quoted values may span lines.
#
# So a value is written 'v' when it holds no ' (nor a backslash before another backslash or at the end, nor
# ${...}), else "v" when it holds none of $ ` " and no backslash that some reader decodes there, and is refused
# otherwise. `docker run --env-file` is no reader of this format: it takes every line literally, quotes included.

DOTENV_READERS = "bash/dash/zsh (set -a; . ./.env), python-dotenv and docker compose env_file"

#: python-dotenv's ${NAME} / ${NAME:-default} (dotenv/variables.py ``_posix_variable``).
_DOTENV_EXPANSION = re.compile(r"\$\{[^}:]*(?::-[^}]*)?\}")
#: Characters a backslash escapes inside "..." for at least one reader: the shell ($ ` " \ newline), python-dotenv
#: (\ ' " a b f n r t v) or docker compose (a b c f n r t v $ " \ 0). After any other character, and only there,
#: a backslash is literal for all of them.
_DOUBLE_QUOTE_ESCAPED = frozenset("$`\"\\\n'abcfnrtv0")


def _double_quote_problem(value: str) -> str | None:
    """Why ``"value"`` would not read back as ``value`` in every reader, or None."""
    special = next((c for c in ("$", "`", '"') if c in value), None)
    if special is not None:
        return f"{special}, which the shell (and python-dotenv or docker compose) expands or ends on in double quotes"
    for i, ch in enumerate(value):
        if ch == "\\":
            after = value[i + 1:i + 2]
            if not after or after in _DOUBLE_QUOTE_ESCAPED:
                return (f"a backslash before {after!r}, which some reader decodes in double quotes" if after else
                        "a backslash at the end, which would escape the closing quote")
    return None


def dotenv_problem(value: str) -> str | None:
    """Why no quoting carries ``value`` unchanged through every reader of :data:`DOTENV_READERS`, or None."""
    if "\r" in value:
        return "a carriage return, which python-dotenv reads as a line break"
    if "'" in value:
        problem = _double_quote_problem(value)
        return None if problem is None else f"both ' (single quotes cannot hold it) and {problem}"
    if value.endswith("\\"):
        return "a backslash at the end, which python-dotenv and docker compose take for escaping the closing quote"
    if "\\\\" in value:
        return "two backslashes in a row, which python-dotenv reads as one"
    expansion = _DOTENV_EXPANSION.search(value)
    if expansion:
        return f"{expansion.group()}, which python-dotenv expands inside any quotes"
    return None


def quote_dotenv(value: str) -> str:
    """``value`` quoted for a .env line that every reader of :data:`DOTENV_READERS` reads back as ``value``
    (see above); raises ValueError with :func:`dotenv_problem`'s reason when there is none."""
    problem = dotenv_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return f"'{value}'" if "'" not in value else f'"{value}"'


def render_exports(variables: Mapping[str, str], shell: str = "bash", dotenv: bool = False) -> str:
    """Lines that set ``variables``: ``export N=V`` (bash, zsh), ``set -gx N V`` (fish) or ``N=V`` (.env, quoted by
    :func:`quote_dotenv`; raises :class:`UsageError` naming the variable whose value no .env quoting carries)."""
    lines = []
    for name, value in variables.items():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise UsageError(f"{name!r} is not a valid environment variable name", hint="fix the profile's [env] table")
        if dotenv:
            try:
                lines.append(f"{name}={quote_dotenv(value)}")
            except ValueError as exc:
                raise UsageError(
                    f"cannot write {name} to a .env file: its value holds {one_line(str(exc))}",
                    hint=f"a .env file is read by {DOTENV_READERS}, and none of them can be given this value "
                         "safely; use `vboot env PROFILE --shell bash` (shell quoting carries any value) or change "
                         "the value", variable=name) from None
        elif shell == "fish":
            lines.append(f"set -gx {name} {quote_single(value)}")
        elif shell in ("bash", "zsh"):
            lines.append(f"export {name}={shlex.quote(value)}")
        else:
            raise UsageError(f"unknown shell {shell!r}", hint=f"use one of {', '.join(SHELLS)}")
    return "\n".join(lines) + ("\n" if lines else "")


def shell_from_env(env: Environ) -> str:
    """The user's shell from ``$SHELL`` when it is one we render for, else bash."""
    name = Path(env.get("SHELL") or "").name
    return name if name in SHELLS else "bash"


# ---------------------------------------------------------------------------------------------- vboot kernel

_KERNEL_NAME = re.compile(r"^[a-z0-9._-]+$", re.I)  # jupyter_client's rule for kernel names


def jupyter_data_dir(env: Environ) -> Path:
    """Where Jupyter looks for user kernels, as jupyter_core computes it (``jupyter --data-dir``)."""
    explicit = env.path("JUPYTER_DATA_DIR")
    if explicit:
        return explicit
    if sys.platform == "darwin":
        return env.home() / "Library" / "Jupyter"
    return data_home(env) / "jupyter"


def user_kernels_dir(env: Environ) -> Path:
    return jupyter_data_dir(env) / "kernels"


def kernel_name_for(profile_name: str, name: str | None) -> str:
    """``--name`` or ``vboot-PROFILE``, checked against Jupyter's kernel-name rule."""
    chosen = name or f"vboot-{profile_name}".lower()
    if not _KERNEL_NAME.match(chosen):
        raise UsageError(f"{chosen!r} is not a valid Jupyter kernel name (letters, digits, '.', '_', '-')",
                         hint="pass --name with such a name")
    return chosen


def kernel_spec(python: str, profile_name: str, variables: Mapping[str, str], display_name: str | None = None) -> dict:
    """The kernel.json of an ipykernel in ``python`` that starts with ``variables`` in its environment."""
    return {
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": display_name or f"vLLM ({profile_name})",
        "language": "python",
        "env": dict(variables),
        "metadata": {"debugger": True, "vboot": {"profile": profile_name, "python": python}},
    }


@dataclass(frozen=True)
class KernelInfo:
    name: str
    path: str
    display_name: str
    python: str
    profile: str | None  # set for kernels vboot wrote
    env: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None


def read_kernel(path: Path) -> KernelInfo:
    """One kernelspec folder; a missing or malformed kernel.json becomes ``error``."""
    try:
        raw = json.loads((path / "kernel.json").read_text(encoding="utf-8"))
        argv = raw.get("argv") or [""]
        meta = (raw.get("metadata") or {}).get("vboot") or {}
        return KernelInfo(path.name, str(path), str(raw.get("display_name", "")), str(argv[0]),
                          meta.get("profile"), dict(raw.get("env") or {}))
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        return KernelInfo(path.name, str(path), "", "", None, {}, error=f"unreadable kernel.json: {exc}")


def list_kernels(kernels_dir: Path) -> tuple[KernelInfo, ...]:
    if not kernels_dir.is_dir():
        return ()
    return tuple(read_kernel(p) for p in sorted(kernels_dir.iterdir()) if p.is_dir())


def write_kernel(kernels_dir: Path, name: str, spec: Mapping) -> Path:
    """Write ``kernels_dir/name/kernel.json`` (an existing spec of that name is replaced). Through a temporary file
    created exclusively beside it and renamed into place (:func:`bootstrap.core.runs.write_json_atomic`): no
    predictable ``kernel.json.tmp`` a link could be planted at, and readable by the user only, since the spec
    carries the profile's environment."""
    from bootstrap.core.runs import write_json_atomic

    target = kernels_dir / name
    write_json_atomic(target / "kernel.json", spec)
    return target
