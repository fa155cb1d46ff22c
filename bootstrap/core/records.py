"""The records the probes fill and core judges: a Python environment, torch's build, the machine, free disk space,
a vLLM process, a port's holder. Plain frozen data (the GPU's are in bootstrap.core.gpu): core's collaborators
are typed with them, and nothing here reads the machine; bootstrap.probes does that."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


def normalize_dist(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503): ``Foo_Bar.baz`` -> ``foo-bar-baz``."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class PythonEnv:
    """One Python environment as seen on disk."""

    python: str  # the interpreter path
    prefix: str  # venv root or sys.prefix
    site_packages: tuple[str, ...]
    dists: dict[str, str] = field(default_factory=dict)  # normalised name -> version
    python_version: str = ""
    exists: bool = True

    def version(self, name: str) -> str | None:
        return self.dists.get(normalize_dist(name))


@dataclass(frozen=True)
class TorchBuild:
    version: str  # "2.11.0+cu130"
    cuda: str | None  # "13.0", None for CPU builds
    hip: str | None = None


@dataclass(frozen=True)
class SystemInfo:
    python_version: str
    cpu_count: int
    ram_total_bytes: int
    ram_available_bytes: int


@dataclass(frozen=True)
class DiskFree:
    path: str  # the path asked about
    checked_path: str  # the nearest existing ancestor that was measured
    free_bytes: int  # f_bavail: what an ordinary user can still write
    total_bytes: int
    writable: bool = True  # checked_path is a directory this process may create files in
    is_dir: bool = True  # checked_path is a directory (False: a file stands where a directory must be created)


@dataclass(frozen=True)
class VllmProcess:
    """One process of a vLLM tree. Shell: ``ps -eo pid,ppid,pgid,rss,args | grep -i vllm``."""

    pid: int
    ppid: int
    pgid: int
    name: str  # "VLLM::EngineCore", "VLLM::Worker", "vllm api server", "resource_tracker"
    role: str  # api_server | engine_core | worker | resource_tracker
    rss_bytes: int
    create_time: float
    cmdline: str
    orphan: bool  # its launcher is gone (bootstrap.core.ownership decides)
    standing: str = ""  # server | served | unmanaged | orphan (see bootstrap.core.ownership.Standing)
    launcher_pid: int = 0  # the live process it runs under; 0 for an orphan
    reason: str = ""  # why it stands where it does, for people


@dataclass(frozen=True)
class PortHolder:
    pid: int | None  # None when the socket's owner is not visible to us
    name: str
    cmdline: str
