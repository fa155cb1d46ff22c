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
from dataclasses import dataclass  # noqa: E402

from bootstrap.core.vllm_args import redact  # noqa: E402

API_MARKERS = ("vllm.entrypoints.openai.api_server", "vllm.entrypoints.cli.main")


@dataclass(frozen=True)
class VllmProcess:
    """One process of a vLLM server tree. Shell: ``ps -eo pid,ppid,pgid,rss,args | grep -i vllm``."""

    pid: int
    ppid: int
    pgid: int
    name: str  # "VLLM::EngineCore", "VLLM::Worker", "vllm api server", "resource_tracker"
    role: str  # api_server | engine_core | worker | resource_tracker
    rss_bytes: int
    create_time: float
    cmdline: str
    orphan: bool  # its API server (launcher) is gone


def _role(name: str, cmdline: list[str]) -> str | None:
    first = cmdline[0] if cmdline else ""
    title = first if first.startswith("VLLM::") else name
    if title.startswith("VLLM::EngineCor"):
        return "engine_core"
    if title.startswith("VLLM::"):
        return "worker"
    joined = " ".join(cmdline)
    if any(m in joined for m in API_MARKERS):
        return "api_server"
    if len(cmdline) >= 2 and os.path.basename(cmdline[0]).startswith("vllm") and cmdline[1] == "serve":
        return "api_server"
    if len(cmdline) >= 3 and os.path.basename(cmdline[1]) == "vllm" and cmdline[2] == "serve":
        return "api_server"
    if "multiprocessing.resource_tracker" in joined:
        return "resource_tracker"
    return None


def vllm_processes(process_iter=None) -> list[VllmProcess]:
    """Every process that belongs to a vLLM server, with orphans (launcher gone) marked.

    An engine core or worker is orphaned when no API server is among its ancestors; a multiprocessing
    resource tracker is counted only when it shares a process group with a vLLM process and is orphaned
    when that group has no live API server.
    """
    process_iter = process_iter or psutil.process_iter
    rows: dict[int, tuple[str, psutil.Process, dict]] = {}
    trackers: list[tuple[psutil.Process, dict]] = []
    for proc in process_iter(["pid", "ppid", "name", "cmdline", "create_time", "memory_info", "status"]):
        info = proc.info
        if info.get("status") == psutil.STATUS_ZOMBIE:
            # Already dead, holding no memory, waiting for a parent (or a container's PID 1) to reap it;
            # no signal can remove it, so it is nobody's leftover.
            continue
        cmd = info.get("cmdline") or []
        role = _role(info.get("name") or "", cmd)
        if role == "resource_tracker":
            trackers.append((proc, info))
        elif role:
            rows[info["pid"]] = (role, proc, info)

    def pgid_of(pid: int) -> int:
        try:
            return os.getpgid(pid)
        except OSError:
            return 0

    api_pids = {pid for pid, (role, _, _) in rows.items() if role == "api_server"}
    parents = {pid: info["ppid"] for pid, (_, _, info) in rows.items()}

    def has_api_ancestor(pid: int) -> bool:
        seen = set()
        cur = parents.get(pid)
        while cur and cur not in seen:
            if cur in api_pids:
                return True
            seen.add(cur)
            cur = parents.get(cur)
        return False

    out: list[VllmProcess] = []
    groups: dict[int, bool] = {}  # pgid -> has a live API server
    for pid, (role, proc, info) in rows.items():
        pgid = pgid_of(pid)
        orphan = role in ("engine_core", "worker") and not has_api_ancestor(pid)
        if role == "api_server":
            groups[pgid] = True
        else:
            groups.setdefault(pgid, False)
        out.append(_row(proc, info, role, pgid, orphan))
    for proc, info in trackers:
        pgid = pgid_of(info["pid"])
        if pgid in groups:
            parent_alive = info["ppid"] in api_pids
            out.append(_row(proc, info, "resource_tracker", pgid, orphan=not parent_alive and not groups[pgid]))
    return sorted(out, key=lambda p: p.pid)


def _row(proc: psutil.Process, info: dict, role: str, pgid: int, orphan: bool) -> VllmProcess:
    cmd = info.get("cmdline") or []
    mem = info.get("memory_info")
    name = {"engine_core": "VLLM::EngineCore", "api_server": "vllm api server",
            "resource_tracker": "resource_tracker"}.get(role) or (cmd[0] if cmd and cmd[0].startswith("VLLM::")
                                                                  else info.get("name") or "?")
    return VllmProcess(pid=info["pid"], ppid=info.get("ppid") or 0, pgid=pgid, name=name, role=role,
                       rss_bytes=int(mem.rss) if mem else 0, create_time=info.get("create_time") or 0.0,
                       cmdline=" ".join(redact(cmd))[:500], orphan=orphan)


# --- ports --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortHolder:
    pid: int | None  # None when the socket's owner is not visible to us
    name: str
    cmdline: str


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
    """Send ``sig`` to the whole group; False when the group is already gone."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def signal_pid(pid: int, sig: int, create_time: float | None = None) -> bool:
    """Signal one process, only if it is still the one we mean (PID-reuse safe)."""
    if not pid_alive(pid, create_time):
        return False
    try:
        os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False
