"""A small supervisor for one server process tree (after honcho's manager).

The child runs in its own session, so its process group holds vLLM's whole tree (API server, EngineCore,
workers, the multiprocessing resource tracker) and Ctrl-C in the terminal reaches only vboot. Stopping is
SIGTERM to the group, a grace period, then SIGKILL to whatever is left of the group; it returns once no member
is alive. In the foreground the child also gets PR_SET_PDEATHSIG=SIGTERM, so even a SIGKILLed vboot takes its
server down cleanly instead of leaving an engine holding VRAM.

Collaborators (process start, group signalling and listing, clock) are injected so tests replay scripted
histories without real processes.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def spawn(argv: Sequence[str], env: dict[str, str], log: IO[bytes], pdeathsig: bool = False) -> subprocess.Popen:
    """Start ``argv`` as the leader of a new session, stdout+stderr to ``log``, stdin closed."""
    return subprocess.Popen(
        list(argv), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True, close_fds=True, preexec_fn=_set_pdeathsig if pdeathsig else None,
    )


@dataclass
class GroupOps:
    """Process-group operations (real ones from bootstrap.probes.procs by default)."""

    signal_group: Callable[[int, int], bool]
    members: Callable[[int], list[int]]

    @classmethod
    def real(cls) -> GroupOps:
        from bootstrap.probes import procs

        return cls(signal_group=procs.signal_group, members=procs.group_members)


@dataclass(frozen=True)
class StopOutcome:
    pgid: int
    escalated: bool  # SIGKILL was needed
    survivors: tuple[int, ...]  # PIDs still alive after SIGKILL (should be empty)
    signalled: tuple[int, ...] = ()  # members found before the first signal
    duration_s: float = 0.0


def stop_group(pgid: int, ops: GroupOps, clock: Clock | None = None, grace_s: float = 20.0,
               kill_wait_s: float = 10.0, reap: Callable[[], Any] | None = None) -> StopOutcome:
    """SIGTERM the group, wait up to ``grace_s`` for every member to go, then SIGKILL and wait again."""
    clock = clock or SystemClock()
    t0 = clock.monotonic()
    before = tuple(ops.members(pgid))
    if not before:
        return StopOutcome(pgid, False, (), (), 0.0)
    ops.signal_group(pgid, signal.SIGTERM)
    # A stopped process (SIGSTOP, a debugger's Ctrl-Z) only acts on SIGTERM once it runs again, as kill(1) knows.
    ops.signal_group(pgid, signal.SIGCONT)

    def wait(limit: float) -> list[int]:
        deadline = clock.monotonic() + limit
        while True:
            if reap:
                reap()
            alive = ops.members(pgid)
            if not alive or clock.monotonic() >= deadline:
                return alive
            clock.sleep(0.1)

    alive = wait(grace_s)
    escalated = False
    if alive:
        escalated = True
        ops.signal_group(pgid, signal.SIGKILL)
        alive = wait(kill_wait_s)
    return StopOutcome(pgid, escalated, tuple(alive), before, clock.monotonic() - t0)


@dataclass
class Supervisor:
    """Runs one child process group and decides how it ends."""

    argv: Sequence[str]
    env: dict[str, str]
    log: IO[bytes]
    pdeathsig: bool = True
    popen: Callable[..., Any] = spawn
    ops: GroupOps = field(default_factory=GroupOps.real)
    clock: Clock = field(default_factory=SystemClock)
    grace_s: float = 20.0
    proc: Any = None
    stop_requested: int | None = None  # the signal number that asked us to stop

    def start(self) -> int:
        self.proc = self.popen(self.argv, self.env, self.log, pdeathsig=self.pdeathsig)
        return self.proc.pid

    @property
    def pgid(self) -> int:
        return self.proc.pid  # session leader: pgid == pid

    def request_stop(self, signum: int) -> None:
        """Called from a signal handler: only records the wish; the loop acts on it."""
        if self.stop_requested is None:
            self.stop_requested = signum

    def stop(self) -> StopOutcome:
        return stop_group(self.pgid, self.ops, self.clock, self.grace_s, reap=self.proc.poll)

    def wait(self, poll_s: float = 0.2) -> int:
        """Block until the child exits or a stop is requested; clean up the group; return the exit code.

        Our signals map to 128 + signum (130 for SIGINT, 143 for SIGTERM); otherwise the child's own code
        (a child killed by signal N gives 128 + N).
        """
        while self.proc.poll() is None and self.stop_requested is None:
            self.clock.sleep(poll_s)
        if self.stop_requested is not None:
            self.stop()
            return 128 + int(self.stop_requested)
        rc = self.proc.returncode
        # The API server is gone; make sure nothing of its tree (EngineCore, workers) outlives it.
        self.stop()
        return 128 - rc if rc < 0 else rc
