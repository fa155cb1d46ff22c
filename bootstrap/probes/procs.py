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


# --- vLLM processes -----------------------------------------------------------------------------------------

import os  # noqa: E402
import socket  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from dataclasses import replace  # noqa: E402
from typing import Any  # noqa: E402

from bootstrap.core.ownership import ProcessFacts, Standing, classify_role, judge_vllm_processes  # noqa: E402
from bootstrap.core.records import PortHolder as PortHolder  # noqa: E402
from bootstrap.core.records import VllmProcess as VllmProcess  # noqa: E402
from bootstrap.core.vllm_args import redact  # noqa: E402

_ATTRS = ["pid", "ppid", "name", "cmdline", "create_time", "memory_info", "status"]


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return -1


def _exe(pid: int) -> str:
    """``readlink /proc/PID/exe``; "" when it cannot be read (another user's process, without root)."""
    try:
        return psutil.Process(pid).exe()
    except psutil.Error:
        return ""


def facts_of(info: dict) -> ProcessFacts:
    """ProcessFacts from one row of ``psutil.process_iter(_ATTRS)`` (missing or denied values become empty)."""
    return ProcessFacts(pid=info["pid"], ppid=info.get("ppid") or 0, pgid=_pgid(info["pid"]),
                        create_time=info.get("create_time") or 0.0, name=info.get("name") or "",
                        cmdline=tuple(info.get("cmdline") or ()), exe=info.get("exe") or "",
                        zombie=info.get("status") == psutil.STATUS_ZOMBIE)


def vllm_processes(process_iter: Callable[[list[str]], Iterable[psutil.Process]] | None = None,
                   exe: Callable[[int], str] | None = None) -> list[VllmProcess]:
    """Every process of a vLLM tree, each with its standing (served, unmanaged, orphan) as
    :func:`bootstrap.core.ownership.judge_vllm_processes` decides it from one scan of the process table."""
    process_iter = process_iter or psutil.process_iter
    exe = exe or _exe
    table: dict[int, ProcessFacts] = {}
    infos: dict[int, dict] = {}
    for proc in process_iter(_ATTRS):
        info = proc.info
        table[info["pid"]] = facts_of(info)
        infos[info["pid"]] = info
    # The rule looks at the executable of a vLLM process's parent only: read just those (a readlink each).
    for ppid in {f.ppid for f in table.values() if classify_role(f.name, f.cmdline)}:
        if ppid in table and not table[ppid].exe:
            table[ppid] = replace(table[ppid], exe=exe(ppid))
    judged = judge_vllm_processes(table)
    return [_row(table[pid], infos[pid], j.role, j.standing, j.launcher_pid, j.reason)
            for pid, j in sorted(judged.items())]


def _row(f: ProcessFacts, info: dict, role: str, standing: Standing, launcher_pid: int, reason: str) -> VllmProcess:
    mem = info.get("memory_info")
    name = {"engine_core": "VLLM::EngineCore", "api_server": "vllm api server",
            "resource_tracker": "resource_tracker"}.get(role) or (f.cmdline[0] if f.cmdline and
                                                                  f.cmdline[0].startswith("VLLM::") else f.name or "?")
    return VllmProcess(pid=f.pid, ppid=f.ppid, pgid=f.pgid, name=name, role=role,
                       rss_bytes=int(mem.rss) if mem else 0, create_time=f.create_time,
                       cmdline=" ".join(redact(list(f.cmdline)))[:500], orphan=standing is Standing.ORPHAN,
                       standing=standing.value, launcher_pid=launcher_pid, reason=reason)


def inspect(pid: int) -> ProcessFacts | None:
    """What runs at ``pid`` now (None: nothing). Shell: ``ps -o pid,ppid,pgid,lstart,args -p PID``."""
    if pid <= 0:
        return None
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            info: dict[str, Any] = {"pid": pid, "ppid": proc.ppid(), "create_time": proc.create_time(),
                                    "status": proc.status()}
            for attr in ("name", "cmdline", "exe"):
                try:
                    info[attr] = getattr(proc, attr)()
                except psutil.AccessDenied:
                    info[attr] = None
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return None
    return facts_of(info)


# --- ports --------------------------------------------------------------------------------------------------


def port_is_free(host: str, port: int) -> bool:
    """Can a server bind ``host:port`` now (as uvicorn does, with SO_REUSEADDR)? Shell: ``ss -ltnp 'sport = :PORT'``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now, chosen by the kernel (bind to port 0). Another program may take it before
    it is bound again; vLLM then fails with "address already in use", which serve's diagnosis names."""
    bind = "0.0.0.0" if host in ("", "0.0.0.0") else ("::" if host == "::" else host)
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((bind, 0))
        except OSError:  # a host name or an address not on this box: vLLM will refuse it; pick on loopback
            with socket.socket() as s2:
                s2.bind(("127.0.0.1", 0))
                port: int = s2.getsockname()[1]
                return port
        port = s.getsockname()[1]
        return port


def port_holder(port: int) -> PortHolder | None:
    """The process listening on TCP ``port`` (any address), if it can be seen."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return None
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port:
            if c.pid is None:
                return PortHolder(pid=None, name="?", cmdline="")
            try:
                p = psutil.Process(c.pid)
                return PortHolder(pid=c.pid, name=p.name(), cmdline=" ".join(redact(p.cmdline()))[:300])
            except psutil.Error:
                return PortHolder(pid=c.pid, name="?", cmdline="")
    return None


def process_name(pid: int) -> str:
    try:
        p = psutil.Process(pid)
        cmd = p.cmdline()
        if cmd and cmd[0].startswith("VLLM::"):
            return cmd[0]
        return p.name()
    except psutil.Error:
        return "?"


def process_cmdline(pid: int) -> str:
    try:
        return " ".join(redact(psutil.Process(pid).cmdline()))[:300]
    except psutil.Error:
        return ""


# --- process groups -----------------------------------------------------------------------------------------


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``. Shell: ``pgrep -g PGID``."""
    out = []
    for proc in psutil.process_iter(["pid", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if os.getpgid(proc.info["pid"]) == pgid:
                out.append(proc.info["pid"])
        except OSError:
            continue
    return out


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the whole group; False when the group is already gone. Group 0 (our own) and 1 are never
    signalled."""
    if pgid <= 1:
        return False
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def signal_pid(pid: int, sig: int, create_time: float) -> bool:
    """Signal one process, only if it is still the one we mean: its create time must match ``create_time``
    (PID-reuse safe). Without a create time nothing proves that, and nothing is sent."""
    if not create_time or create_time <= 0 or pid <= 1 or not pid_alive(pid, create_time):
        return False
    try:
        os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False
