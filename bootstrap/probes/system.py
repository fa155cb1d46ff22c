"""The machine itself: Python, CPUs, RAM, free disk space."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from bootstrap.core.records import DiskFree as DiskFree
from bootstrap.core.records import SystemInfo as SystemInfo

if TYPE_CHECKING:
    from pathlib import Path


def system_info() -> SystemInfo:
    """Shell: ``python3 --version; nproc; free -b``."""
    import psutil

    vm = psutil.virtual_memory()
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return SystemInfo(python_version=".".join(map(str, sys.version_info[:3])), cpu_count=cpus,
                      ram_total_bytes=int(vm.total), ram_available_bytes=int(vm.available))


def fs_usage(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(size, free for an ordinary user) in bytes of the filesystem holding existing ``path``: ``df -B1 PATH``'s
    Size and Avail (``f_bavail``, not the root-reserved ``f_bfree``). Raises OSError."""
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists: what decides whether ``path`` can be created (and where its
    bytes would land)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def is_writable_dir(path: Path) -> bool:
    """``path`` is a directory this process may create files in (``test -d PATH -a -w PATH``)."""
    return path.is_dir() and os.access(path, os.W_OK)


def disk_free(path: Path) -> DiskFree:
    """Free space of the filesystem that holds (or would hold) ``path``. Shell: ``df -B1 PATH``."""
    from pathlib import Path

    probe = nearest_existing(Path(path).expanduser().absolute())
    total, free = fs_usage(probe)
    return DiskFree(path=str(path), checked_path=str(probe), free_bytes=free, total_bytes=total,
                    writable=is_writable_dir(probe), is_dir=probe.is_dir())
