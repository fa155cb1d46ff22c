"""`vboot ps` and `vboot stop` as data: what runs (collected once from one process scan) and what to stop
(planned and verified first, then executed). The CLI only renders; who owns a process is decided in
:mod:`bootstrap.core.ownership`.

A stop never signals a process or a process group that the plan did not verify: a server's group only when its
recorded leader is alive with its recorded create time, in its recorded group, and is a vLLM API server; the
supervising `vboot serve` and Prometheus by the same rule; orphans and processes named with ``--pid`` one by
one, by PID and create time.
"""

from __future__ import annotations

import shlex
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bootstrap.core.envelope import for_people
from bootstrap.core.environ import Environ
from bootstrap.core.errors import NotFoundError, NotOursError, RunRecordInvalid, UsageError
from bootstrap.core.ownership import (
    PROMETHEUS,
    VBOOT,
    VLLM_API_SERVER,
    Claim,
    Ownership,
    ProcessFacts,
    Verdict,
    describe,
    judge,
)
from bootstrap.core.records import VllmProcess
from bootstrap.core.runs import RunProblem, RunRecord, find_run, live_runs
from bootstrap.core.supervisor import Clock, GroupOps, SystemClock, stop_group

# --- claims: what a run record says vboot started -----------------------------------------------------------


def server_claim(r: RunRecord) -> Claim:
    """The vLLM API server, leader of its own process group (serve starts it in a new session); for a route,
    vboot's own front process (`python -m bootstrap route-front`), leader of its group too."""
    if r.kind == "route":
        return Claim(f"route {r.name!r}", r.pid, r.pid_create_time, VBOOT, pgid=r.pgid)
    return Claim(f"server {r.name!r}", r.pid, r.pid_create_time, VLLM_API_SERVER, pgid=r.pgid)


def judge_server(r: RunRecord, inspect: Callable[[int], ProcessFacts | None]) -> Verdict:
    """:func:`judge` of the record's server; a server still waiting for its start lock has none yet (gone)."""
    if r.pid == 0 and r.state == "waiting":
        return Verdict(server_claim(r), Ownership.GONE, f"server {r.name!r} is waiting for its start lock")
    return judge(server_claim(r), inspect(r.pid))


def supervisor_claim(r: RunRecord) -> Claim | None:
    """The vboot process watching the server: the foreground `vboot serve`, or the detached `vboot supervise`
    of `serve --detach`. Its group is not recorded: it is only ever signalled by PID."""
    if not r.supervisor_pid:
        return None
    return Claim(f"the vboot serve supervising {r.name!r}", r.supervisor_pid, r.supervisor_create_time, VBOOT)


def prometheus_claim(r: RunRecord) -> Claim | None:
    """Prometheus started with ``--prometheus``, leader of its own group (also started in a new session)."""
    if not r.prometheus_pid:
        return None
    return Claim(f"Prometheus of {r.name!r}", r.prometheus_pid, r.prometheus_create_time, PROMETHEUS,
                 pgid=r.prometheus_pid)


# --- collaborators --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Probes:
    """How ps and stop see the machine (bootstrap.probes by default; fakes in tests)."""

    vllm_processes: Callable[[], Sequence[VllmProcess]]
    inspect: Callable[[int], ProcessFacts | None]
    pid_alive: Callable[[int, float], bool]
    healthy: Callable[[str], bool]
    gpu_bytes_by_pid: Callable[[], Mapping[int, int]]
    now: Callable[[], float] = time.time
    stale: Callable[[RunRecord], bool | None] = lambda _r: None  # the profile resolves to another fingerprint

    @classmethod
    def real(cls, env: Environ | None = None) -> Probes:
        from bootstrap.probes import procs

        def healthy(url: str) -> bool:
            from bootstrap.probes.http import healthy as probe  # only when a server is listed

            return probe(url, timeout=1.0)

        def gpu_bytes_by_pid() -> Mapping[int, int]:
            from bootstrap.probes import nvml  # only when there is something to show

            return nvml.snapshot().gpu_bytes_by_pid()

        def stale(record: RunRecord) -> bool | None:
            from bootstrap.core.serve_plan import current_fingerprint

            if not record.fingerprint:
                return None
            now = current_fingerprint(record, env or Environ())
            return None if now is None else now != record.fingerprint

        return cls(vllm_processes=procs.vllm_processes, inspect=procs.inspect, pid_alive=procs.pid_alive,
                   healthy=healthy, gpu_bytes_by_pid=gpu_bytes_by_pid, stale=stale)


# --- ps -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServerRow:
    """One of vboot's servers whose API server is alive (``verified``: it passes the ownership rule; a server
    that does not is listed with the reason in ``refused``, and `vboot stop` leaves it alone)."""

    name: str
    pid: int
    port: int
    host: str
    url: str
    profile: str
    model: str
    served_model_name: str
    uptime_s: float
    healthy: bool
    detached: bool
    run_dir: str
    supervised: bool
    gpu_bytes: int
    prometheus_port: int | None
    verified: bool = True
    refused: str | None = None
    state: str = "ready"  # starting | ready | restarting | failed | stopped (bootstrap.core.lifecycle)
    restarts: int = 0
    generation: int = 1
    restart: str = "no"  # the restart policy
    last_exit: dict[str, Any] | None = None  # the latest failure (LastExit) and its age_s
    stale: bool | None = None  # the profile resolves to something else now (None: cannot tell)
    device: str | None = None  # None for servers started before vboot recorded it
    device_reason: str = ""  # why that device: "GPU: profile qwen asks for it (device = "gpu")"
    kind: str = "server"  # server | route (the OpenAI endpoint in front of the servers)
    routes: dict[str, Any] | None = None  # a route's served model name -> server URL
    gpu_memory_utilization: float | None = None
    sleep_mode: bool = False


@dataclass(frozen=True)
class ProcessRow:
    """A vLLM process that is not part of one of vboot's servers."""

    pid: int
    name: str
    role: str
    ppid: int
    pgid: int
    rss_bytes: int
    gpu_bytes: int
    age_s: float
    cmdline: str
    standing: str = ""  # server | unmanaged | orphan
    launcher_pid: int = 0  # the live process it runs under (0 for an orphan)
    reason: str = ""


@dataclass(frozen=True)
class PsReport:
    servers: tuple[ServerRow, ...] = ()
    orphans: tuple[ProcessRow, ...] = ()  # engines, workers, trackers whose launcher is gone
    unmanaged: tuple[ProcessRow, ...] = ()  # vLLM API servers vboot did not start
    unmanaged_engines: tuple[ProcessRow, ...] = ()  # engines under a live launcher that is no API server
    warnings: tuple[str, ...] = ()  # run records that were skipped

    @property
    def status(self) -> str:
        """warn when something needs a look: orphaned processes hold memory, or run records were skipped."""
        return "warn" if self.orphans or self.warnings else "ok"


def _row(p: VllmProcess, gpu: Mapping[int, int], now: float) -> ProcessRow:
    return ProcessRow(pid=p.pid, name=p.name, role=p.role, ppid=p.ppid, pgid=p.pgid, rss_bytes=p.rss_bytes,
                      gpu_bytes=gpu.get(p.pid, 0), age_s=round(now - p.create_time, 1), cmdline=p.cmdline,
                      standing=p.standing, launcher_pid=p.launcher_pid, reason=p.reason)


def collect_ps(env: Environ, probes: Probes | None = None, root: Path | None = None) -> PsReport:
    """vboot's live servers, orphaned vLLM processes, vLLM servers vboot did not start, and engines of other
    programs (an offline ``vllm.LLM()`` script, ``vllm bench``).

    One process scan serves all of them (a server's processes are those of its process group); NVML and the
    HTTP probe are used only when there is something to show.
    """
    probes = probes or Probes.real(env)
    problems: list[RunProblem] = []
    found = list(probes.vllm_processes())
    runs = live_runs(env, probes.pid_alive, root, problems)
    warnings = tuple(str(p) for p in problems)
    verdicts = {r.name: judge_server(r, probes.inspect) for r in runs}
    managed_pgids = {r.pgid for r in runs if verdicts[r.name].owned}
    orphans = [p for p in found if p.orphan]
    unmanaged = [p for p in found if not p.orphan and p.role == "api_server" and p.pgid not in managed_pgids]
    engines = [p for p in found if p.standing == "unmanaged" and p.pgid not in managed_pgids]
    if not (runs or orphans or unmanaged or engines):
        return PsReport(warnings=warnings)
    gpu = probes.gpu_bytes_by_pid()
    pids_by_pgid: dict[int, set[int]] = {}
    for p in found:
        pids_by_pgid.setdefault(p.pgid, set()).add(p.pid)
    now = probes.now()
    servers = []
    for r in runs:
        v = verdicts[r.name]
        last = None
        if r.last_exit is not None:
            last = {**asdict(r.last_exit), "age_s": round(now - r.last_exit.at, 1)}
        servers.append(ServerRow(
            name=r.name, pid=r.pid, port=r.port, host=r.host, url=r.url, profile=r.profile, model=r.model_id,
            served_model_name=r.served_model_name, uptime_s=round(now - r.started_at, 1),
            healthy=probes.healthy(r.url), detached=r.detached, run_dir=r.run_dir,
            supervised=bool(r.supervisor_pid) and probes.pid_alive(r.supervisor_pid, r.supervisor_create_time),
            gpu_bytes=sum(gpu.get(p, 0) for p in pids_by_pgid.get(r.pgid, set()) | {r.pid}) if v.owned
            else gpu.get(r.pid, 0),
            prometheus_port=r.prometheus_port or None, verified=v.owned or v.gone,
            refused=v.reason if v.refused else None, state=r.state, restarts=r.restarts, generation=r.generation,
            restart=r.restart_mode, last_exit=last, stale=probes.stale(r) if r.is_server else None,
            device=r.device or None, device_reason=r.device_reason, kind=r.kind,
            routes=dict(r.routes) if r.kind == "route" else None,
            gpu_memory_utilization=r.gpu_memory_utilization or None, sleep_mode=r.sleep_mode))
    return PsReport(servers=tuple(servers), orphans=tuple(_row(p, gpu, now) for p in orphans),
                    unmanaged=tuple(_row(p, gpu, now) for p in unmanaged),
                    unmanaged_engines=tuple(_row(p, gpu, now) for p in engines), warnings=warnings)


# --- stop: plan -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Refusal:
    """Something a stop was asked to touch (or a record named) that is not provably vboot's: left alone."""

    what: str
    pid: int
    reason: str
    hint: str


@dataclass(frozen=True)
class ServerStop:
    """A server whose group was verified when planned (None between two generations of a restarting server,
    when only its supervisor runs); its supervisor and Prometheus when verified too."""

    name: str
    server: Claim | None
    supervisor: Claim | None = None
    prometheus: Claim | None = None


@dataclass(frozen=True)
class PidStop:
    """One process signalled alone, by PID and create time (an orphan, or a process named with --pid)."""

    pid: int
    create_time: float
    name: str


@dataclass(frozen=True)
class StopPlan:
    servers: tuple[ServerStop, ...] = ()
    processes: tuple[PidStop, ...] = ()
    refused: tuple[Refusal, ...] = ()
    spared: tuple[ProcessRow, ...] = ()  # engines of live programs that --orphans leaves alone
    warnings: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()  # what was asked, for people: server names, "orphans", "PID 123"


def _stale_hint(r: RunRecord) -> str:
    return ("vboot signalled nothing of it; if that server no longer runs, remove its stale run directory: "
            f"rm -r {shlex.quote(r.run_dir)}")


def plan_server(r: RunRecord, inspect: Callable[[int], ProcessFacts | None]) -> tuple[ServerStop | None,
                                                                                      list[Refusal]]:
    """The verified stop of one recorded server (None when its server is gone or refused) and the refusals."""
    v = judge_server(r, inspect)
    if v.refused:
        return None, [Refusal(f"{r.kind} {r.name!r}", r.pid, v.reason, _stale_hint(r))]
    refused: list[Refusal] = []
    side: dict[str, Claim | None] = {}
    for key, claim in (("supervisor", supervisor_claim(r)), ("prometheus", prometheus_claim(r))):
        side[key] = None
        if claim is None:
            continue
        sv = judge(claim, inspect(claim.pid))
        if sv.owned:
            side[key] = claim
        elif sv.refused:
            refused.append(Refusal(claim.label, claim.pid, sv.reason,
                                   "vboot left that process alone; the run record is stale or was edited"))
    if v.gone and side["supervisor"] is None:
        return None, refused
    return ServerStop(r.name, None if v.gone else v.claim, side["supervisor"], side["prometheus"]), refused


def _descendants(root: Any, found: Sequence[Any]) -> list[Any]:
    children: dict[int, list[Any]] = {}
    for p in found:
        children.setdefault(p.ppid, []).append(p)
    out, todo, seen = [], [root], {root.pid}
    while todo:
        p = todo.pop()
        out.append(p)
        for c in children.get(p.pid, []):
            if c.pid not in seen:
                seen.add(c.pid)
                todo.append(c)
    return sorted(out, key=lambda p: p.pid)


def plan_stop(env: Environ, *, name: str | None = None, stop_all: bool = False, orphans: bool = False,
              pids: Sequence[int] = (), probes: Probes | None = None, root: Path | None = None) -> StopPlan:
    """What `vboot stop` will signal, verified: servers by NAME or --all, orphans, processes named by PID.

    A named server that is not running is NotFoundError; one whose record is malformed RunRecordInvalid; one
    whose process fails the ownership rule NotOursError (nothing is signalled). With --all such servers become
    refusals in the plan. A --pid that is not a vLLM process, or that belongs to one of vboot's servers, is a
    usage error.
    """
    probes = probes or Probes.real()
    problems: list[RunProblem] = []
    servers: list[ServerStop] = []
    refused: list[Refusal] = []
    labels: list[str] = []
    if stop_all:
        records = live_runs(env, probes.pid_alive, root, problems)
    elif name:
        rec = find_run(env, name, root, problems)
        if rec is None:
            mine = [p for p in problems if Path(p.path).name == name or Path(p.path).parent.name == name]
            if mine:
                raise RunRecordInvalid(f"the run record of {name!r} is malformed: {mine[0].reason}",
                                       hint="vboot will not stop what it cannot verify; check for its processes "
                                            f"(`vboot ps`), then remove {shlex.quote(mine[0].path)}")
        if rec is None or not (probes.pid_alive(rec.pid, rec.pid_create_time) or (
                rec.supervisor_pid > 0 and probes.pid_alive(rec.supervisor_pid, rec.supervisor_create_time))):
            known = ", ".join(r.name for r in live_runs(env, probes.pid_alive, root)) or "none running"
            raise NotFoundError(f"no running server named {name!r} ({known})", hint="`vboot ps` lists them")
        records = [rec]
    else:
        records = []
    for r in records:
        stop, refusals = plan_server(r, probes.inspect)
        if name and stop is None and refusals:
            raise NotOursError(f"refusing to stop {refusals[0].reason}", hint=refusals[0].hint)
        refused.extend(refusals)
        if stop is not None:
            servers.append(stop)
            labels.append(r.name)
    processes: list[PidStop] = []
    spared: tuple[ProcessRow, ...] = ()
    if orphans or pids:
        found = list(probes.vllm_processes())
        now = probes.now()
        if orphans:
            processes += [PidStop(p.pid, p.create_time, p.name) for p in found if p.orphan]
            spared = tuple(_row(p, {}, now) for p in found if p.standing == "unmanaged")
            labels.append("orphans")
        if pids:
            processes += _plan_pids(env, pids, found, probes, root)
            labels += [f"PID {pid}" for pid in pids]
    unique = {p.pid: p for p in processes}
    return StopPlan(servers=tuple(servers), processes=tuple(unique[pid] for pid in sorted(unique)),
                    refused=tuple(refused), spared=spared, warnings=tuple(str(p) for p in problems),
                    labels=tuple(labels))


def _plan_pids(env: Environ, pids: Sequence[int], found: Sequence[Any], probes: Probes,
               root: Path | None) -> list[PidStop]:
    by_pid = {p.pid: p for p in found}
    ours: dict[int, str] = {}  # process group -> the vboot server it belongs to
    for r in live_runs(env, probes.pid_alive, root):
        if judge_server(r, probes.inspect).owned:
            ours[r.pgid] = r.name
    out: list[PidStop] = []
    for pid in pids:
        p = by_pid.get(pid)
        if p is None:
            seen = probes.inspect(pid) if pid > 0 else None
            if seen is None:
                raise NotFoundError(f"no process with PID {pid}", hint="`vboot ps` lists vLLM processes")
            raise UsageError(f"PID {pid} ({describe(seen)}) is not a vLLM process: `vboot stop --pid` stops only "
                             "vLLM API servers, engines, workers and their resource trackers",
                             hint=f"stop other programs with kill(1): `kill {pid}`")
        if p.pgid in ours:
            raise UsageError(f"PID {pid} ({p.name}) belongs to vboot's server {ours[p.pgid]!r}",
                             hint=f"`vboot stop {ours[p.pgid]}` stops it with its whole tree")
        out += [PidStop(q.pid, q.create_time, q.name) for q in _descendants(p, found)]
    return out


# --- stop: execute --------------------------------------------------------------------------------------------

@dataclass
class StopOps:
    """The operations a stop performs (bootstrap.probes.procs by default)."""

    group: GroupOps
    signal_pid: Callable[[int, int, float], bool]
    pid_alive: Callable[[int, float], bool]
    inspect: Callable[[int], ProcessFacts | None]
    clock: Clock = field(default_factory=SystemClock)

    @classmethod
    def real(cls) -> StopOps:
        from bootstrap.probes import procs

        return cls(group=GroupOps.real(), signal_pid=procs.signal_pid, pid_alive=procs.pid_alive,
                   inspect=procs.inspect)


def process_ops(targets: Sequence[PidStop], signal_pid: Callable[[int, int, float], bool],
                pid_alive: Callable[[int, float], bool]) -> GroupOps:
    """stop_group's operations over ``targets``, as if they were one group.

    Orphans keep their old process group, which may also hold unrelated processes of whoever launched vLLM
    by hand: each target is signalled alone, by PID and create time, and the members are those still alive.
    """
    def signal_each(_pgid: int, sig: int) -> bool:
        return any([signal_pid(p.pid, sig, p.create_time) for p in targets])

    def alive(_pgid: int) -> list[int]:
        return [p.pid for p in targets if pid_alive(p.pid, p.create_time)]

    return GroupOps(signal_group=signal_each, members=alive)


@dataclass(frozen=True)
class StopReport:
    stopped: tuple[int, ...]
    survivors: tuple[int, ...]
    escalated: bool
    servers: tuple[str, ...]
    refused: tuple[Refusal, ...] = ()
    spared: tuple[ProcessRow, ...] = ()
    warnings: tuple[str, ...] = ()
    labels: tuple[str, ...] = for_people(())  # what was asked, for people (the JSON's ``servers`` names them)

    @property
    def status(self) -> str:
        return "fail" if self.survivors else "warn" if self.refused or self.warnings else "ok"


def execute_stop(plan: StopPlan, ops: StopOps | None = None, grace_s: float = 20.0) -> StopReport:
    """Stop what ``plan`` lists: SIGTERM, then SIGKILL after ``grace_s``; returns once every process is gone
    (checked by PID) or reports the survivors."""
    ops = ops or StopOps.real()
    stopped: list[int] = []
    survivors: list[int] = []
    refused = list(plan.refused)
    escalated = False
    done: list[str] = []
    for s in plan.servers:
        pgid = (s.server.pgid or s.server.pid) if s.server is not None else 0
        members = ops.group.members(pgid) if pgid else []
        sup = s.supervisor
        if sup is not None and ops.signal_pid(sup.pid, signal.SIGTERM, sup.create_time):
            # A vboot supervisor (the foreground `vboot serve` or a detached one) watches this server: let it
            # run its own shutdown (it exits 143), and only then make sure of the group ourselves.
            deadline = ops.clock.monotonic() + grace_s + 15
            while ops.clock.monotonic() < deadline and ((pgid and ops.group.members(pgid)) or
                                                        ops.pid_alive(sup.pid, sup.create_time)):
                ops.clock.sleep(0.2)
            if ops.pid_alive(sup.pid, sup.create_time):  # stuck: its children have PR_SET_PDEATHSIG
                ops.signal_pid(sup.pid, signal.SIGKILL, sup.create_time)
                escalated = True
                deadline = ops.clock.monotonic() + 5
                while ops.clock.monotonic() < deadline and ops.pid_alive(sup.pid, sup.create_time):
                    ops.clock.sleep(0.1)
            (survivors if ops.pid_alive(sup.pid, sup.create_time) else stopped).append(sup.pid)
        if s.server is None:  # between two generations: the supervisor was all there was
            done.append(s.name)
            continue
        # Judge the leader again right before its group is signalled. Exited is fine: the members left keep
        # the group's ID from being reused, and stop_group looks at the members before each signal.
        v = judge(s.server, ops.inspect(s.server.pid))
        if v.refused:
            refused.append(Refusal(s.server.label, s.server.pid, v.reason, "vboot signalled nothing of it"))
            continue
        out = stop_group(pgid, ops.group, ops.clock, grace_s=grace_s)
        stopped.extend(members or [s.server.pid])
        survivors.extend(out.survivors)
        escalated |= out.escalated
        done.append(s.name)
        prom = s.prometheus
        if prom is not None and judge(prom, ops.inspect(prom.pid)).owned:
            pout = stop_group(prom.pgid or prom.pid, ops.group, ops.clock, grace_s=10.0)
            stopped.extend(pout.signalled)
            survivors.extend(pout.survivors)
    if plan.processes:
        out = stop_group(0, process_ops(plan.processes, ops.signal_pid, ops.pid_alive), ops.clock, grace_s=grace_s)
        stopped.extend(out.signalled)
        survivors.extend(out.survivors)
        escalated |= out.escalated
    return StopReport(stopped=tuple(sorted(set(stopped))), survivors=tuple(sorted(set(survivors))),
                      escalated=escalated, servers=tuple(done), refused=tuple(refused), spared=plan.spared,
                      warnings=plan.warnings, labels=plan.labels)
