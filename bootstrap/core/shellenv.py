"""A profile's variables outside vboot: shell exports and .env lines (`vboot env`) and a Jupyter kernel spec
that carries them (`vboot kernel`).

Kept apart from :mod:`bootstrap.core.setup` so those commands do not import the setup planner.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bootstrap.core.environ import Environ
from bootstrap.core.errors import UsageError
from bootstrap.core.paths import data_home

# ---------------------------------------------------------------------------------------------- vboot env

SHELLS = ("bash", "zsh", "fish")


def quote_single(value: str) -> str:
    """``value`` in single quotes where ``\\'`` and ``\\\\`` are the only escapes, as both fish and .env readers
    (python-dotenv, docker compose) read them: no ``$`` or ``${VAR}`` expansion, and a newline stands as itself."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def render_exports(variables: Mapping[str, str], shell: str = "bash", dotenv: bool = False) -> str:
    """Lines that set ``variables``: ``export N=V`` (bash, zsh), ``set -gx N V`` (fish) or ``N=V`` (.env)."""
    lines = []
    for name, value in variables.items():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise UsageError(f"{name!r} is not a valid environment variable name", hint="fix the profile's [env] table")
        if dotenv:
            lines.append(f"{name}={quote_single(value)}")
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
    """Write ``kernels_dir/name/kernel.json`` (atomically; an existing spec of that name is replaced)."""
    target = kernels_dir / name
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / "kernel.json.tmp"
    tmp.write_text(json.dumps(spec, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, target / "kernel.json")
    return target
