"""`vboot service`'s reports (see bootstrap.core.reports)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: the command imports its reports on its start path
    from bootstrap.core.runs import LastExit


@dataclass(frozen=True)
class ServiceInstall:
    """`vboot service install`: the unit (written or, with --dry-run, only shown) and the commands that enable it."""

    name: str
    scope: str  # system | user
    unit_path: str
    unit: str  # the unit file's text
    env_file: str | None  # the 0600 file with the secrets (None: no secrets)
    secrets: tuple[str, ...]  # the names of the variables in it, never their values
    commands: tuple[str, ...]
    written: bool
    started: bool


@dataclass(frozen=True)
class ServiceRun:
    """vboot's run record of the server a unit runs."""

    state: str
    pid: int
    url: str
    generation: int
    restarts: int
    last_exit: LastExit | None
    run_dir: str
    healthy: bool


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    systemd: Mapping[str, str]  # systemctl show's properties
    run: ServiceRun | None  # None: the unit has no run record yet

    @property
    def status(self) -> str:
        return "ok" if self.systemd.get("ActiveState") == "active" else "warn"


@dataclass(frozen=True)
class ServiceRemoved:
    name: str
    removed: tuple[str, ...]
    stopped: bool
