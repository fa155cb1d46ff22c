"""Small hand-written fakes for unit tests: a clock that moves only when slept, a process group and a child
that obey a script (the supervisor), a scripted process table (who owns what: bootstrap.core.ownership,
bootstrap.core.servers) and the free space of a disk (doctor's collaborators). The fake NVML, with its named
scenarios, is tests.support.fake_nvml.

In the process table, processes are ProcessFacts by PID. Signals are recorded and obey a script: SIGTERM ends a
process unless it is listed in ``ignores_sigterm``; SIGKILL always does. Nothing here touches a real process.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from bootstrap.core.ownership import ProcessFacts, judge_vllm_processes
from bootstrap.core.servers import Probes, StopOps
from bootstrap.core.supervisor import GroupOps
from bootstrap.probes.system import DiskFree, is_writable_dir, nearest_existing

PY = "/venv/bin/python3"
API = (PY, "-m", "vllm.entrypoints.openai.api_server", "--model", "/m")
ENGINE = ("VLLM::EngineCore",)
WORKER = ("VLLM::Worker_TP0",)
TRACKER = (PY, "-B", "-c", "from multiprocessing.resource_tracker import main;main(32)")
INIT = ("/sbin/init",)


def proc(pid: int, ppid: int, cmd: tuple[str, ...] = ("sleep", "600"), pgid: int | None = None,
         ct: float | None = None, name: str | None = None, exe: str | None = None,
         zombie: bool = False) -> ProcessFacts:
    """One process; its comm, executable and create time follow from its command unless given."""
    first = cmd[0] if cmd else ""
    if name is None:
        name = first[:15] if first.startswith("VLLM::") else first.rsplit("/", 1)[-1][:15]
    if exe is None:
        exe = "/usr/bin/python3.11" if first.startswith("VLLM::") or "python" in first else (
            first if first.startswith("/") else f"/usr/bin/{first}")
    return ProcessFacts(pid=pid, ppid=ppid, pgid=pid if pgid is None else pgid,
                        create_time=1000.0 + pid if ct is None else ct, name=name, cmdline=tuple(cmd), exe=exe,
                        zombie=zombie)


class FakeMachine:
    def __init__(self, *procs: ProcessFacts, ignores_sigterm: tuple[int, ...] = (), with_init: bool = True):
        self.procs: dict[int, ProcessFacts] = {}
        if with_init:
            self.procs[1] = proc(1, 0, INIT, pgid=1, ct=1.0)
        self.procs.update({p.pid: p for p in procs})
        self.ignores_sigterm = set(ignores_sigterm)
        self.sent: list[tuple[str, int, int]] = []  # ("pid" or "group", PID or PGID, signal)
        self.hit: set[int] = set()  # every PID a signal reached, alone or through its group

    # --- what probes see
    def inspect(self, pid: int) -> ProcessFacts | None:
        return self.procs.get(pid)

    def pid_alive(self, pid: int, create_time: float | None = None) -> bool:
        p = self.procs.get(pid)
        return p is not None and not p.zombie and (not create_time or abs(p.create_time - create_time) < 0.5)

    def members(self, pgid: int) -> list[int]:
        return sorted(pid for pid, p in self.procs.items() if p.pgid == pgid and not p.zombie)

    def vllm_processes(self) -> list:
        from bootstrap.probes.procs import _row

        judged = judge_vllm_processes(self.procs)
        return [_row(self.procs[pid], {"memory_info": SimpleNamespace(rss=1000)}, j.role, j.standing,
                     j.launcher_pid, j.reason) for pid, j in sorted(judged.items())]

    # --- what stop does
    def _deliver(self, pid: int, sig: int) -> None:
        self.hit.add(pid)
        if sig == signal.SIGKILL or (sig == signal.SIGTERM and pid not in self.ignores_sigterm):
            del self.procs[pid]

    def signal_pid(self, pid: int, sig: int, create_time: float) -> bool:
        if not create_time or not self.pid_alive(pid, create_time):
            return False
        self.sent.append(("pid", pid, sig))
        self._deliver(pid, sig)
        return True

    def signal_group(self, pgid: int, sig: int) -> bool:
        members = self.members(pgid)
        if not members or pgid <= 1:
            return False
        self.sent.append(("group", pgid, sig))
        for pid in members:
            self._deliver(pid, sig)
        return True

    def probes(self, healthy: bool = True, now: float = 5000.0) -> Probes:
        return Probes(vllm_processes=self.vllm_processes, inspect=self.inspect, pid_alive=self.pid_alive,
                      healthy=lambda url: healthy, gpu_bytes_by_pid=lambda: {}, now=lambda: now)

    def ops(self, clock) -> StopOps:
        return StopOps(group=GroupOps(signal_group=self.signal_group, members=self.members),
                       signal_pid=self.signal_pid, pid_alive=self.pid_alive, inspect=self.inspect, clock=clock)


class FakeClock:
    """A monotonic clock that only moves when somebody sleeps."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class FakeGroup:
    """A process group whose members obey a script: which signal ends them, and when."""

    def __init__(self, members, dies_on=signal.SIGTERM, after_s=1.0, clock=None):
        self.members_ = list(members)
        self.dies_on = dies_on
        self.after_s = after_s
        self.clock = clock
        self.sent = []
        self.dead_at = None

    def signal_group(self, pgid, sig):
        self.sent.append(sig)
        if sig == signal.SIGKILL or sig == self.dies_on:
            delay = 0.0 if sig == signal.SIGKILL else self.after_s
            self.dead_at = self.clock.monotonic() + delay
        return True

    def members(self, pgid):
        if self.dead_at is not None and self.clock.monotonic() >= self.dead_at:
            return []
        return list(self.members_)

    def ops(self):
        return GroupOps(signal_group=self.signal_group, members=self.members)


class FakeChild:
    """A child process (as ``subprocess.Popen`` looks to the supervisor) that exits with ``code`` at ``exits_at``."""

    def __init__(self, pid=100, exits_at=None, code=0, clock=None):
        self.pid = pid
        self.exits_at = exits_at
        self.code = code
        self.clock = clock
        self.returncode = None

    def poll(self):
        if self.exits_at is not None and self.clock.monotonic() >= self.exits_at:
            self.returncode = self.code
        return self.returncode


@dataclass
class FakeDiskFree:
    """doctor's ``disk_free`` collaborator with made-up sizes. Where a path lands and whether it can be written
    are the real filesystem's (tests build those in tmp_path), unless ``writable`` forces the answer."""

    free: int = 500 * 1024**3
    total: int = 1000 * 1024**3
    writable: bool | None = None

    def __call__(self, path: Path) -> DiskFree:
        if self.writable is None:
            probe = nearest_existing(Path(path).expanduser().absolute())
            return DiskFree(path=str(path), checked_path=str(probe), free_bytes=self.free, total_bytes=self.total,
                            writable=is_writable_dir(probe), is_dir=probe.is_dir())
        return DiskFree(path=str(path), checked_path=str(path), free_bytes=self.free, total_bytes=self.total,
                        writable=self.writable, is_dir=Path(path).is_dir())
