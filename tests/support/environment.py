"""Every test's own environment: built from the one list of variables vboot reads (bootstrap.core.environ.READS).

Each of those variables is removed, except the few that describe the machine rather than the user (where
programs are, who runs them, where pip finds its wheels); HOME, the XDG directories vboot writes to and the
ModelScope cache then point into the test's own directory. So a developer's MODELSCOPE_CACHE,
CUDA_VISIBLE_DEVICES, VBOOT_DEBUG or a systemd NOTIFY_SOCKET never changes what a test sees, and nothing a test
runs writes to the real home. tests/conftest.py applies it to every test; the end-to-end tests hand the same
environment to the processes they start.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from bootstrap.core.environ import READS

# Read by vboot, but facts of the machine the tests run on, not a user's choice: kept as they are.
MACHINE = frozenset({"PATH", "SHELL", "USER", "LOGNAME", "TMPDIR", "PIP_FIND_LINKS"})
# Read by the libraries vboot prints with (rich): they would change the human view's width and colours.
RENDERING = ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "LINES", "JUPYTER_COLUMNS",
             "JUPYTER_LINES")
REMOVED = (frozenset(READS) - MACHINE) | frozenset(RENDERING)


def isolated_environ(base: Mapping[str, str], root: Path) -> dict[str, str]:
    """``base`` without any variable of :data:`REMOVED`, with HOME, XDG_CONFIG_HOME, XDG_STATE_HOME,
    XDG_CACHE_HOME and MODELSCOPE_CACHE under ``root`` (HOME is ``root/home``, created here)."""
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in base.items() if k not in REMOVED}
    env.update({
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "MODELSCOPE_CACHE": str(root / "ms-cache"),
    })
    return env
