"""The per-device start lock: ``fcntl.flock`` on one file per GPU (or the one CPU lock) under vboot's state
directory, held by a server's supervisor from spawn until vLLM reports its KV cache size (or is ready, or
failed). The kernel drops a lock when its holder dies, so a killed supervisor never leaves a device locked.

Each lock file says who holds it (run name, supervisor PID, since when) so a waiting `vboot serve` can show what
it waits for. Several locks (tensor parallel) are taken in sorted order, all or none: two servers never hold
one each and wait for each other.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class LockHolder:
    """Who holds a start lock (what the lock file says)."""

    name: str  # the run
    pid: int  # its supervisor
    since: float  # wall time it took the lock
    lock: str = ""  # which lock ("gpu-GPU-...", "cpu")


class StartLock(Protocol):
    """What the lifecycle needs of a start lock (a fake in unit tests)."""

    def try_acquire(self) -> LockHolder | None:
        """Take every lock now, or none: None when taken, else the holder of the first one that is busy."""
        ...

    def release(self) -> None: ...

    @property
    def held(self) -> bool: ...


class FileStartLock:
    """The real lock: ``locks_dir/NAME.lock`` for each name, flock(LOCK_EX | LOCK_NB)."""

    def __init__(self, locks_dir: Path, names: tuple[str, ...], me: LockHolder, wall: object = None) -> None:
        self.dir = locks_dir
        self.names = tuple(sorted(names))
        self.me = me
        self._fds: list[int] = []
        import time

        self._wall = wall or time.time

    @property
    def held(self) -> bool:
        return bool(self._fds)

    def try_acquire(self) -> LockHolder | None:
        if self._fds:
            return None
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        taken: list[int] = []
        for name in self.names:
            path = self.dir / f"{name}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd, name)
                os.close(fd)
                for other in taken:
                    os.close(other)  # closing drops the lock
                return holder
            except BaseException:
                os.close(fd)
                for other in taken:
                    os.close(other)
                raise
            doc = {"name": self.me.name, "pid": self.me.pid, "since": self._wall(), "lock": name}  # type: ignore[operator]
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(doc) + "\n").encode(), 0)
            taken.append(fd)
        self._fds = taken
        return None

    def release(self) -> None:
        for fd in self._fds:
            try:
                os.ftruncate(fd, 0)  # a stale holder line would mislead the next waiter's message
            except OSError:
                pass
            os.close(fd)
        self._fds = []


def _read_holder(fd: int, name: str) -> LockHolder:
    try:
        raw = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        doc = json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    pid = doc.get("pid")
    since = doc.get("since")
    return LockHolder(name=str(doc.get("name") or "?"), pid=pid if isinstance(pid, int) else 0,
                      since=float(since) if isinstance(since, (int, float)) else 0.0, lock=name)
