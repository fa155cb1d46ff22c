"""Which processes are vboot's to stop: the one place that decides.

Two questions, both answered here from facts that :mod:`bootstrap.probes.procs` gathered (so the rules are
tested on scripted process tables, and every command asks them the same way):

1. **Is this recorded PID still the process vboot started?** (:func:`judge`). A run record names PIDs (the
   vLLM API server and its process group, the `vboot serve` supervising it, Prometheus). A PID is vboot's
   only when *all* of these hold:

   - a create time was recorded (non-zero) and the PID's create time matches it: a recycled PID is another
     process, and a record without a create time proves nothing;
   - its process group is the recorded group (where a group was recorded; a PID whose group is not recorded
     is only ever signalled alone, never as a group);
   - it looks like what was started: a vLLM API server, the ``prometheus`` executable, a ``vboot`` process.

   Otherwise the verdict says why, and `vboot stop` signals nothing of it.

2. **Is this vLLM process an orphan?** (:func:`judge_vllm_processes`). vLLM's engine core, its workers and
   the multiprocessing resource tracker are started by a Python launcher: the API server of ``vllm serve``,
   or an offline ``vllm.LLM()`` script, ``vllm bench``, ``vllm run-batch``, a notebook. When the launcher
   dies without stopping them (SIGKILL, the OOM killer), the kernel reparents them to PID 1 or to the nearest
   subreaper (``systemd --user``, tini, a container's init), and they keep their memory. So:

   - under a live vLLM API server: part of that server (``served``);
   - under a live parent that could have launched it (a Python interpreter, or another vLLM process of the same
     tree): somebody's work (``unmanaged``). `vboot ps` lists it, doctor does not call it a leftover, and only
     ``vboot stop --pid PID`` stops it;
   - under anything else (PID 1, ``systemd --user``, tini, any program that is not Python): its launcher is
     gone (``orphan``). `vboot stop --orphans` stops it;
   - a parent that cannot be seen: not judged an orphan (nothing proves the launcher is gone).

   Limits, all on the side of leaving a process alone: an orphan reparented to a subreaper that is itself a
   Python program (a Python init in a container, a Jupyter server as PID 1) looks like somebody's work; name it
   with ``--pid``. Without root, another user's launcher whose executable cannot be read is judged by its
   command line (a launcher that rewrote its title to a non-Python one then looks gone; vboot could not signal
   another user's process anyway).
"""

from __future__ import annotations

import enum
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# Two readings of one process's create time agree to within this (psutil derives it from the boot time and
# the start tick; re-reading it gives the same value, a recycled PID a different one).
CREATE_TIME_TOLERANCE_S = 0.5

API_MARKERS = ("vllm.entrypoints.openai.api_server", "vllm.entrypoints.cli.main")
_PYTHON = re.compile(r"(python|pypy)(\d+(\.\d+)*)?[a-z]?")


@dataclass(frozen=True)
class ProcessFacts:
    """What a probe saw of one process at one moment. Shell: ``ps -o pid,ppid,pgid,lstart,comm,args -p PID``
    and ``readlink /proc/PID/exe``."""

    pid: int
    ppid: int
    pgid: int  # -1 when unknown
    create_time: float  # seconds since the epoch; 0.0 when unknown
    name: str = ""  # the kernel's comm (at most 15 characters; vLLM sets it to its title)
    cmdline: tuple[str, ...] = ()  # argv as /proc shows it (vLLM's setproctitle rewrites it)
    exe: str = ""  # the executable; "" when unreadable (another user's process, without root)
    zombie: bool = False


# --- what a process is --------------------------------------------------------------------------------------

def classify_role(name: str, cmdline: tuple[str, ...] | list[str]) -> str | None:
    """``api_server``, ``engine_core``, ``worker`` (any other ``VLLM::`` title) or ``resource_tracker`` for a
    process of a vLLM tree, else None. A resource tracker is any Python multiprocessing one: callers count it
    only beside a vLLM process (:func:`judge_vllm_processes`)."""
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


def _program(path: str) -> str:
    base = os.path.basename(path)
    return base[: -len(" (deleted)")] if base.endswith(" (deleted)") else base  # an upgraded binary, still running


def is_python(f: ProcessFacts) -> bool:
    """Is ``f`` a Python interpreter (by its executable, else its argv[0] or comm)? vLLM and everything that
    launches its engines is Python."""
    names = [_program(f.exe)] if f.exe else []
    names += [_program(f.cmdline[0])] if f.cmdline else []
    names.append(f.name)
    return any(_PYTHON.fullmatch(n) for n in names if n)


def describe(f: ProcessFacts) -> str:
    """A short name for messages: its title or program, e.g. ``VLLM::EngineCore``, ``python3``, ``sleep``."""
    if f.cmdline and f.cmdline[0]:
        first = f.cmdline[0]
        return first if first.startswith("VLLM::") else _program(first)
    return f.name or (_program(f.exe) if f.exe else "?")


def _runs_program(f: ProcessFacts, names: tuple[str, ...]) -> bool:
    # The executable decides when it can be read (argv[0] and comm are whatever a program says they are).
    if f.exe:
        return _program(f.exe) in names
    return bool(f.cmdline) and _program(f.cmdline[0]) in names or f.name in names


def _is_vboot(f: ProcessFacts) -> bool:
    if f.name == "vboot":
        return True
    args = list(f.cmdline[:2])
    if any(_program(a) == "vboot" for a in args):
        return True
    for i, arg in enumerate(f.cmdline[:-1]):  # python -m bootstrap [...]
        if arg == "-m" and (f.cmdline[i + 1] == "bootstrap" or f.cmdline[i + 1].startswith("bootstrap.")):
            return True
    return False


@dataclass(frozen=True)
class Expectation:
    """What a recorded process was started as, and how to recognise it."""

    what: str  # for messages: "a vLLM API server"
    matches: Callable[[ProcessFacts], bool]


def program(*names: str, what: str | None = None) -> Expectation:
    """A process running one of the executables ``names`` (Prometheus, Alertmanager, an exporter)."""
    return Expectation(what or " or ".join(names), lambda f: _runs_program(f, names))


VLLM_API_SERVER = Expectation("a vLLM API server", lambda f: classify_role(f.name, f.cmdline) == "api_server")
PROMETHEUS = program("prometheus", what="Prometheus")
VBOOT = Expectation("a vboot process", _is_vboot)


# --- 1. is a recorded PID still vboot's? --------------------------------------------------------------------

@dataclass(frozen=True)
class Claim:
    """A process a run record says vboot started."""

    label: str  # for messages: "server 'tiny'", "Prometheus of 'tiny'"
    pid: int
    create_time: float
    expect: Expectation
    pgid: int | None = None  # the recorded process group; None: not recorded, so never signalled as a group


class Ownership(str, enum.Enum):
    OWNED = "owned"  # the process vboot started, in its recorded group: vboot may signal it
    GONE = "gone"  # no such process any more (exited, or its PID now names another process)
    REFUSED = "refused"  # something runs there, but nothing proves it is vboot's


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    ownership: Ownership
    reason: str = ""  # why it is gone or refused, naming the PID

    @property
    def owned(self) -> bool:
        return self.ownership is Ownership.OWNED

    @property
    def gone(self) -> bool:
        return self.ownership is Ownership.GONE

    @property
    def refused(self) -> bool:
        return self.ownership is Ownership.REFUSED


def judge(claim: Claim, seen: ProcessFacts | None) -> Verdict:
    """Is ``claim`` still true of the process ``seen`` now runs at its PID (None: no such process)?"""
    label, pid = claim.label, claim.pid
    if pid <= 1:
        return Verdict(claim, Ownership.REFUSED, f"{label}: PID {pid} cannot be a process vboot started")
    if claim.pgid is not None and claim.pgid <= 1:
        return Verdict(claim, Ownership.REFUSED, f"{label}: process group {claim.pgid} cannot be one vboot started")
    if not (math.isfinite(claim.create_time) and claim.create_time > 0):
        return Verdict(claim, Ownership.REFUSED, f"{label}: no create time recorded for PID {pid}, so nothing "
                                                 "proves it is still the process vboot started")
    if seen is None or seen.zombie:
        return Verdict(claim, Ownership.GONE, f"{label}: PID {pid} has exited")
    if abs(seen.create_time - claim.create_time) >= CREATE_TIME_TOLERANCE_S:
        return Verdict(claim, Ownership.GONE, f"{label}: PID {pid} is now another process ({describe(seen)}, "
                                              "started after the recorded one)")
    if claim.pgid is not None and seen.pgid != claim.pgid:
        return Verdict(claim, Ownership.REFUSED, f"{label}: PID {pid} is in process group {seen.pgid}, not in the "
                                                 f"recorded group {claim.pgid}")
    if not claim.expect.matches(seen):
        return Verdict(claim, Ownership.REFUSED, f"{label}: PID {pid} ({describe(seen)}) is not "
                                                 f"{claim.expect.what}")
    return Verdict(claim, Ownership.OWNED)


# --- 2. orphans: is an engine's launcher gone? --------------------------------------------------------------

class Standing(str, enum.Enum):
    SERVER = "server"  # a vLLM API server (a launcher itself)
    SERVED = "served"  # under a live vLLM API server
    UNMANAGED = "unmanaged"  # under a live launcher that is not an API server: somebody's offline job
    ORPHAN = "orphan"  # its launcher is gone


@dataclass(frozen=True)
class VllmStanding:
    """One process of a vLLM tree and where it stands."""

    pid: int
    role: str  # api_server | engine_core | worker | resource_tracker
    standing: Standing
    launcher_pid: int  # the live process it runs under (its parent, or the one its engine runs under); 0: none
    reason: str  # why, for people: "reparented to PID 1 (init)"


def could_launch(f: ProcessFacts) -> bool:
    """Could ``f`` be the launcher of a vLLM engine (a Python interpreter, or a vLLM process)?"""
    return is_python(f) or classify_role(f.name, f.cmdline) is not None


def judge_vllm_processes(table: Mapping[int, ProcessFacts]) -> dict[int, VllmStanding]:
    """Every vLLM process in ``table`` (all processes of the machine, by PID) and where it stands.

    A multiprocessing resource tracker counts only when its process group also holds a vLLM engine or server
    (other Python programs have trackers too). Zombies count for nothing: they hold no memory and no signal
    removes them.
    """
    roles: dict[int, str] = {}
    for pid, f in table.items():
        if not f.zombie and (role := classify_role(f.name, f.cmdline)) is not None:
            roles[pid] = role
    vllm_groups = {table[pid].pgid for pid, role in roles.items() if role != "resource_tracker"}
    roles = {pid: role for pid, role in roles.items()
             if role != "resource_tracker" or table[pid].pgid in vllm_groups}

    out: dict[int, VllmStanding] = {}

    def stand(pid: int, seen: frozenset[int]) -> VllmStanding:
        if pid in out:
            return out[pid]
        f, role = table[pid], roles[pid]
        if role == "api_server":
            return VllmStanding(pid, role, Standing.SERVER, f.ppid, "a vLLM API server")
        parent = table.get(f.ppid)
        if f.ppid <= 0 or parent is None:
            # Nothing proves the launcher is gone: its parent is outside what we can see (a race with its exit,
            # another PID namespace, hidepid). Leave it alone.
            return VllmStanding(pid, role, Standing.UNMANAGED, f.ppid, f"its parent PID {f.ppid} is not visible")
        if parent.zombie:  # cannot happen on Linux (children are reparented at exit), but would mean "gone"
            return VllmStanding(pid, role, Standing.ORPHAN, 0, f"its launcher PID {f.ppid} has exited")
        if roles.get(f.ppid) == "api_server":
            return VllmStanding(pid, role, Standing.SERVED, f.ppid, f"runs under the vLLM API server PID {f.ppid}")
        if f.ppid in roles and f.ppid not in seen:  # a worker under its engine: the engine's standing is its own
            up = stand(f.ppid, seen | {pid})
            out[f.ppid] = up
            if up.standing is Standing.ORPHAN:
                return VllmStanding(pid, role, Standing.ORPHAN, 0, f"its {roles[f.ppid]} PID {f.ppid} is orphaned")
            return VllmStanding(pid, role, up.standing, up.launcher_pid, up.reason)
        if could_launch(parent):
            return VllmStanding(pid, role, Standing.UNMANAGED, f.ppid,
                                f"runs under PID {f.ppid} ({describe(parent)}), which is alive")
        return VllmStanding(pid, role, Standing.ORPHAN, 0,
                            f"its launcher is gone: reparented to PID {f.ppid} ({describe(parent)})")

    for pid in sorted(roles):
        out[pid] = stand(pid, frozenset())
    return out
