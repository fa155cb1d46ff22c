"""Processes: liveness with PID-reuse protection, vLLM process discovery, port holders. The only psutil user."""

from __future__ import annotations

import psutil


def pid_alive(pid: int, create_time: float | None = None) -> bool:
    """True when ``pid`` runs and (when given) started at ``create_time`` (so a recycled PID does not count)."""
    if pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if create_time:
            return abs(proc.create_time() - create_time) < 0.5
        return True
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def create_time(pid: int) -> float:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0.0
