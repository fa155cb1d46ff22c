"""Every read of the process environment goes through here.

Code takes an :class:`Environ` parameter (production default: the real ``os.environ``), so tests pass a plain
dict and doctor can list exactly which variables vboot looked at.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

_SECRET = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|APIKEY|ACCESS_KEY|PRIVATE|CREDENTIAL|AUTH)", re.I)

# Variables vboot understands; doctor reports these (set or not) and judges some of them.
KNOWN = (
    "PYTORCH_CUDA_ALLOC_CONF",
    "PYTORCH_ALLOC_CONF",
    "VLLM_USE_MODELSCOPE",
    "MODELSCOPE_CACHE",
    "MS_CACHE_HOME",
    "MODELSCOPE_ENDPOINT",
    "MODELSCOPE_LOG_LEVEL",
    "CUDA_EMPTY_CACHE",
    "HF_HUB_OFFLINE",
    "HF_HOME",
    "HF_HUB_CACHE",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "VLLM_PORT",
    "VLLM_CACHE_ROOT",
    "VLLM_CPU_KVCACHE_SPACE",
    "XDG_CONFIG_HOME",
    "XDG_STATE_HOME",
    "XDG_CACHE_HOME",
    "VBOOT_VLLM_PYTHON",
    "VBOOT_DEBUG",
    "VBOOT_PULL_MARGIN",
    "VBOOT_ROUTER_PYTHON",
    "PIP_CACHE_DIR",
    "UV_CACHE_DIR",
    "TORCH_HOME",
    "TORCHINDUCTOR_CACHE_DIR",
    "TRITON_CACHE_DIR",
    "TRITON_HOME",
)

# Every other variable vboot itself reads somewhere (where a file or process is, how wide the terminal is, what
# systemd or sudo handed over). Not judged by doctor; with KNOWN, the one list of what vboot reads: the tests
# give every test a clean copy of exactly these (tests/conftest.py), and tests/test_environ_reads.py holds the
# source to this list.
OTHER_READS = (
    "HOME",
    "PATH",
    "SHELL",
    "USER",
    "LOGNAME",
    "TMPDIR",
    "SUDO_USER",
    "COLUMNS",
    "PYTHONPATH",
    "XDG_DATA_HOME",
    "JUPYTER_DATA_DIR",
    "PIP_FIND_LINKS",
    "NOTIFY_SOCKET",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
    "VBOOT_ROUTE_KEY",  # internal: the route's key, from its supervisor to its front (never in argv)
    "VLLM_API_KEY",
    "VBOOT_DISK_HEAD_START",
)
READS = KNOWN + OTHER_READS


def is_secret(name: str) -> bool:
    """True for names that look like they hold a credential (their values are masked in output)."""
    return bool(_SECRET.search(name))


def mask(name: str, value: str) -> str:
    """The value as it may be shown to people: secrets keep only a hint of their length."""
    if not is_secret(name) or not value:
        return value
    return value[:2] + "***" if len(value) > 8 else "***"


class Environ:
    """A read-only view of environment variables that remembers which names were read."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values: Mapping[str, str] = os.environ if values is None else values
        self._read: set[str] = set()

    def get(self, name: str, default: str | None = None) -> str | None:
        self._read.add(name)
        return self._values.get(name, default)

    def __contains__(self, name: str) -> bool:
        self._read.add(name)
        return name in self._values

    def flag(self, name: str, default: bool = False) -> bool:
        """A boolean variable: 1/true/yes/on (any case) are true, 0/false/no/off/empty are false."""
        raw = self.get(name)
        if raw is None:
            return default
        return raw.strip().lower() in {"1", "true", "yes", "on"}

    def path(self, name: str) -> Path | None:
        """The variable as a path; ``~`` is this view's HOME (``~user`` is looked up as usual)."""
        raw = self.get(name)
        if not raw:
            return None
        if raw == "~" or raw.startswith("~/"):
            return self.home() / raw[2:]
        return Path(raw).expanduser()

    def home(self) -> Path:
        raw = self.get("HOME")
        return Path(raw) if raw else Path.home()

    def names(self) -> frozenset[str]:
        """Every variable's name; no value is read, so no name counts as read."""
        return frozenset(self._values)

    @property
    def read(self) -> frozenset[str]:
        """Names looked up so far, for doctor's report."""
        return frozenset(self._read)

    def as_dict(self) -> dict[str, str]:
        """A copy of every variable (to build a child's environment)."""
        return dict(self._values)


def debug_enabled(env: Environ | None = None) -> bool:
    """VBOOT_DEBUG is on: the entry point lets tracebacks through instead of printing one line."""
    return (env or Environ()).flag("VBOOT_DEBUG")
