"""A vLLM server's life under vboot: start, wait for ready, supervise, restart with judgement, stop.

After honcho's ``Manager``: every collaborator (process start, health and generation probes, the clock, the
process-group operations, the GPU-memory probe) is injected, and the lifecycle reports what happens as typed
events that the caller renders (the CLI's human view, the run record, systemd's notify socket). Unit tests
replay scripted histories with fakes and a fake clock; nothing here prints, sleeps for real or exits.

What counts as a failure of a ready server (vLLM issues #48966, #39863, #11996, PR #24897):
- vLLM exits when nobody asked it to, **whatever its exit code** (vLLM exits 0 when its EngineCore dies);
- ``/health`` answers 503 (the engine is known dead) or stops answering for longer than a timeout;
- the EngineCore process of the tree is gone while the API server lingers;
- a liveness probe (one real one-token generation) fails ``liveness_failures`` times in a row: a hung engine
  whose ``/health`` still says 200.

Restart policy ``no`` ends on the first failure (exit 8 with the diagnosis). ``on-failure`` restarts a server
that was ready at least once, unless the diagnosis says a restart cannot help (a bad argument, a missing
model); ``always`` restarts whatever failed, first start included. Both stop after ``max_restarts`` failures
within ``window_s`` (a crash loop). The first failure in a window restarts at once; further ones back off
(2 s doubling to 60 s by default).
"""

from __future__ import annotations

import signal as _signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bootstrap.core.colocate import IdleTracker, RequestCounts, kv_cache_tokens
from bootstrap.core.diagnosis import Diagnosis
from bootstrap.core.errors import EXIT_STARTUP
from bootstrap.core.profiles import RESTART_MODES
from bootstrap.core.startlock import LockHolder, StartLock
from bootstrap.core.supervisor import Clock, GroupOps, StopOutcome, stop_group

if TYPE_CHECKING:
    from concurrent.futures import Future

GPU_SETTLE_TOLERANCE_BYTES = 512 * 1024**2  # "back near the baseline": within this much (or 5 % of what it held)

# Diagnoses after which restarting the same command cannot help: the same start fails the same way.
PERMANENT_DIAGNOSES = frozenset({"bad_argument", "model_not_found", "modelscope_missing", "driver_too_old",
                                 "kv_cache_too_small"})


# --- settings ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RestartPolicy:
    """When to start vLLM again after a failure, and when to give up."""

    mode: str = "no"  # no | on-failure | always
    max_restarts: int = 5  # failures tolerated within window_s; one more and vboot gives up
    window_s: float = 600.0
    backoff_initial_s: float = 2.0  # the wait before the second restart within the window; doubles after that
    backoff_max_s: float = 60.0

    def __post_init__(self) -> None:
        if self.mode not in RESTART_MODES:
            raise ValueError(f"restart mode must be one of {', '.join(RESTART_MODES)}, not {self.mode!r}")


@dataclass(frozen=True)
class ProbeSettings:
    """How a running server is watched. Times in seconds."""

    poll_s: float = 0.5  # how often the child's exit and a stop request are looked at
    health_interval_s: float = 2.0
    health_timeout_s: float = 2.0  # one /health request
    unresponsive_after_s: float = 30.0  # /health not answering (no status at all) for this long is a failure
    liveness_interval_s: float = 30.0  # one-token generation every this many seconds; 0 turns it off
    liveness_timeout_s: float = 20.0
    liveness_failures: int = 2  # consecutive failed generations that mean "hung"
    liveness_retry_s: float = 2.0  # after a failed generation, the next one comes this soon
    engine_grace_s: float = 5.0  # an API server without its EngineCore this long is a failure
    ready_timeout_s: float = 900.0
    stop_grace_s: float = 20.0  # SIGTERM -> SIGKILL
    memory_settle_s: float = 60.0  # after a stop, how long to wait for the GPU to release the old engine's memory
    settle_sample_s: float = 1.0  # before a first start: used GPU memory must change less than the tolerance over this
    start_lock_report_s: float = 10.0  # while waiting for a start lock, a WaitingForStartLock at least this often
    idle_sleep_s: float = 0.0  # put a sleep-mode server to sleep after this long without requests; 0: never
    sleep_check_s: float = 5.0  # how often a sleep-mode server's /is_sleeping and /metrics are read


# --- collaborators -------------------------------------------------------------------------------------------

class Child(Protocol):
    """A started process (``subprocess.Popen`` in production)."""

    pid: int

    def poll(self) -> int | None: ...


@dataclass(frozen=True)
class HealthAnswer:
    """One ``GET /health``: ``status`` None when nothing answered."""

    status: int | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass(frozen=True)
class ProbeResult:
    """One real request (the smoke chat, a liveness generation): did it complete in time, and how fast?"""

    ok: bool
    latency_s: float
    completion_tokens: int = 0
    tokens_per_s: float = 0.0
    text: str = ""
    error: str = ""


@dataclass(frozen=True)
class ProcessRef:
    """A PID with its create time (a recycled PID is never mistaken for it)."""

    pid: int
    create_time: float


@dataclass(frozen=True)
class GpuRelease:
    """What waiting for the GPU to let go of a stopped server's memory found (NVML, bytes)."""

    held_bytes: int  # what the generation used: GPU memory in use while it ran, less the baseline
    released: bool  # memory in use came back to within the tolerance of the baseline
    waited_s: float
    baseline_bytes: int  # memory in use on its GPUs just before the generation started
    used_bytes: int  # memory in use when the wait ended
    holders: tuple[str, ...] = ()  # who holds GPU memory when it did not come back ("PID 4242 VLLM::EngineCore 16 GiB")


@dataclass
class Collaborators:
    """How the lifecycle touches the world. Production wiring: :mod:`bootstrap.cli.serve_wiring`."""

    spawn: Callable[[Sequence[str], dict[str, str], Path, bool], Child]  # argv, env, log, pdeathsig
    health: Callable[[str, float], HealthAnswer]  # base url, timeout
    generate: Callable[[str, str, str | None, float], Future[ProbeResult]]  # url, model, key, timeout
    smoke: Callable[[str, str, str | None], ProbeResult]  # url, model, key
    engines: Callable[[int], list[ProcessRef]]  # pgid -> its VLLM::EngineCore processes
    pid_alive: Callable[[int, float], bool]
    ops: GroupOps
    clock: Clock
    wall: Callable[[], float]  # time.time
    log_tail: Callable[[Path, int], list[str]]
    rotate_log: Callable[[Path], None]
    # Memory in use on the GPUs the server runs on (NVML), or None without a GPU: a restart then waits for nothing.
    gpu_used: Callable[[], int] | None = None
    tick: Callable[[], None] | None = None  # called on every turn of the loops (side processes' supervision)
    # Several servers on one box (bootstrap.core.colocate): the device's start lock, who holds GPU memory that
    # never lets go (for the report), and vLLM's sleep mode (None: a server without it).
    start_lock: StartLock | None = None
    gpu_holders: Callable[[], list[str]] | None = None
    is_sleeping: Callable[[str, str | None], bool | None] | None = None  # url, key -> /is_sleeping (None: no answer)
    request_counts: Callable[[str, str | None], RequestCounts | None] | None = None  # url, key -> /metrics
    sleep: Callable[[str, str | None, int], bool] | None = None  # url, key, level -> POST /sleep succeeded


# --- events --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Failure:
    """Why a generation of the server ended without being asked to."""

    reason: str  # exited | engine_dead | unresponsive | engine_gone | hung | startup_failed | startup_timeout
    summary: str  # one line for people
    during: str  # "startup" or "serving"
    at: float  # wall-clock time
    code: int | None = None  # the API server's exit code, when it exited
    signal: int | None = None  # the signal that killed it, when one did
    diagnosis: Diagnosis | None = None

    @property
    def permanent(self) -> bool:
        """A restart of the same command would fail the same way."""
        return self.diagnosis is not None and self.diagnosis.code in PERMANENT_DIAGNOSES


@dataclass(frozen=True)
class Starting:
    generation: int
    pid: int
    pgid: int
    log: str


@dataclass(frozen=True)
class Waiting:
    generation: int
    elapsed_s: float
    last_line: str


@dataclass(frozen=True)
class Ready:
    generation: int
    ready_s: float  # from the lifecycle's start (generation 1) or from this generation's start
    smoke: ProbeResult | None
    engines: tuple[int, ...]


@dataclass(frozen=True)
class ProbeSucceeded:
    generation: int
    latency_s: float


@dataclass(frozen=True)
class ProbeFailed:
    generation: int
    kind: str  # liveness | health
    detail: str
    consecutive: int


@dataclass(frozen=True)
class Failed:
    generation: int
    failure: Failure
    stop: StopOutcome | None  # how the rest of its tree was stopped


@dataclass(frozen=True)
class MemoryReleased:
    generation: int
    release: GpuRelease


@dataclass(frozen=True)
class Restarting:
    generation: int  # the generation about to start
    restarts: int  # restarts so far, this one included
    delay_s: float
    failure: Failure


@dataclass(frozen=True)
class GaveUp:
    generation: int
    failure: Failure
    why: str


@dataclass(frozen=True)
class WaitingForStartLock:
    """Another server holds the start lock of a device this one runs on: it is sizing its KV cache."""

    generation: int
    holder: LockHolder
    waited_s: float


@dataclass(frozen=True)
class StartLockReleased:
    """The start lock let go: vLLM logged its KV cache size (``kv_cache``), or the generation became ready,
    failed or was stopped first."""

    generation: int
    reason: str  # kv_cache | ready | failed | stopped
    waited_s: float  # how long this generation waited for the lock before it started
    kv_cache_tokens: int | None = None


@dataclass(frozen=True)
class GpuSettling:
    """Before a first start: the GPU's used memory was still changing (a server that just died releasing its
    memory, another one still allocating); the start waited for it (bounded)."""

    generation: int
    release: GpuRelease


@dataclass(frozen=True)
class Slept:
    """The server went to sleep: put there by vboot after ``idle_s`` without requests (``idle``), or by someone
    else (`vboot sleep`: ``outside``). Liveness probes pause while it sleeps: a probe would wake it or hang."""

    generation: int
    reason: str  # idle | outside
    level: int = 0  # 0: not known (put to sleep outside vboot's supervisor)
    idle_s: float = 0.0


@dataclass(frozen=True)
class Woke:
    generation: int


@dataclass(frozen=True)
class Stopping:
    signal: int


@dataclass(frozen=True)
class Stopped:
    exit_code: int
    stop: StopOutcome | None


Event = (Starting | Waiting | Ready | ProbeSucceeded | ProbeFailed | Failed | MemoryReleased | Restarting | GaveUp
         | Stopping | Stopped | WaitingForStartLock | StartLockReleased | GpuSettling | Slept | Woke)


EVENT_TYPES: dict[str, type] = {cls.__name__: cls for cls in (
    Starting, Waiting, Ready, ProbeSucceeded, ProbeFailed, Failed, MemoryReleased, Restarting, GaveUp, Stopping,
    Stopped, WaitingForStartLock, StartLockReleased, GpuSettling, Slept, Woke)}


def event_to_json(event: Event) -> dict[str, Any]:
    """An event as one JSON object (``{"event": "Ready", ...}``): the detached supervisor's status line."""
    from bootstrap.core.envelope import to_jsonable

    return {"event": type(event).__name__, **to_jsonable(event)}


def event_from_json(doc: dict[str, Any]) -> Event:
    """The event :func:`event_to_json` wrote. Raises KeyError, TypeError or ValueError for anything else."""
    from bootstrap.core.envelope import from_jsonable

    cls = EVENT_TYPES[doc["event"]]
    return from_jsonable(cls, {k: v for k, v in doc.items() if k != "event"})


@dataclass(frozen=True)
class Outcome:
    """How the lifecycle ended: the exit code vboot passes on, and the failure that ended it, if any."""

    exit_code: int
    failure: Failure | None = None
    restarts: int = 0
    ready_once: bool = False


@dataclass(frozen=True)
class Target:
    """What to run and how to reach it."""

    argv: tuple[str, ...]
    env: dict[str, str]
    log: Path  # vllm.log in the run directory
    url: str  # http://host:port
    served_model_name: str
    api_key: str | None = None
    smoke: bool = True
    pdeathsig: bool = True


# --- the lifecycle -------------------------------------------------------------------------------------------

class _StopRequested(Exception):
    pass


@dataclass
class Lifecycle:
    """Runs one server through its generations. ``run()`` returns the :class:`Outcome`; ``request_stop`` may be
    called from a signal handler at any time (it only records the wish; the loop acts on it within
    ``ProbeSettings.poll_s``)."""

    target: Target
    c: Collaborators
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    probes: ProbeSettings = field(default_factory=ProbeSettings)
    on_event: Callable[[Event], None] = lambda _e: None
    stop_requested: int | None = None
    generation: int = 0
    restarts: int = 0
    child: Child | None = None
    _failures: list[float] = field(default_factory=list, repr=False)  # monotonic times of recent failures
    _engines: list[ProcessRef] = field(default_factory=list, repr=False)  # this generation's EngineCores
    _gpu_baseline: int | None = None  # GPU memory in use just before this generation started
    _gpu_held: int = 0  # the most this generation was seen to add to it
    asleep: bool = False  # the server is in vLLM's sleep mode (liveness probes pause)
    _lock_waited_s: float = 0.0

    def request_stop(self, signum: int) -> None:
        if self.stop_requested is None:
            self.stop_requested = signum

    # -- the main loop

    def run(self, since: float | None = None) -> Outcome:
        """Run until the server is stopped or vboot gives up. ``since`` (a ``clock.monotonic()`` value) is when
        the user's command began, so the first ready time includes the pre-flight."""
        t0 = self.c.clock.monotonic() if since is None else since
        ready_once = False
        try:
            while True:
                self.generation += 1
                try:
                    ready_s = self._start_and_wait(t0 if self.generation == 1 else self.c.clock.monotonic())
                    if isinstance(ready_s, Failure):
                        failure = ready_s
                    else:
                        ready_once = True
                        failure = self._supervise()
                except _StopRequested:
                    return self._stop_everything()
                outcome = self._after_failure(failure, ready_once)
                if outcome is not None:
                    return outcome
        except BaseException:
            # Whatever went wrong in vboot (a renderer, a full disk under the run record), the server it started
            # must not outlive it unsupervised.
            self._stop_tree()
            raise

    def _start_and_wait(self, since: float) -> float | Failure:
        """Take the device's start lock, start a generation and wait until /health says 200: the seconds it took,
        or why it never did. The lock is let go when vLLM logs its KV cache size, or at ready, failure or stop."""
        self._take_start_lock()
        outcome = "stopped"
        try:
            result = self._spawn_and_wait(since)
            outcome = "failed" if isinstance(result, Failure) else "ready"
            return result
        finally:
            self._release_start_lock(outcome)

    def _take_start_lock(self) -> None:
        lock = self.c.start_lock
        if lock is None:
            return
        t0 = self.c.clock.monotonic()
        last: tuple[LockHolder, float] | None = None
        while True:
            self._check_stop()
            holder = lock.try_acquire()
            now = self.c.clock.monotonic()
            if holder is None:
                self._lock_waited_s = now - t0
                return
            if last is None or holder.name != last[0].name or holder.pid != last[0].pid or \
                    now - last[1] >= self.probes.start_lock_report_s:
                self.on_event(WaitingForStartLock(self.generation, holder, now - t0))
                last = (holder, now)
            self._pause(self.probes.poll_s)

    def _release_start_lock(self, reason: str, tokens: int | None = None) -> None:
        lock = self.c.start_lock
        if lock is None or not lock.held:
            return
        lock.release()
        self.on_event(StartLockReleased(self.generation, reason, self._lock_waited_s, tokens))

    def _spawn_and_wait(self, since: float) -> float | Failure:
        if self.generation == 1:
            self._wait_gpu_settled()
        if self.generation > 1 or self.target.log.exists():
            self.c.rotate_log(self.target.log.parent)
        self._engines, self._gpu_held = [], 0
        self._gpu_baseline = self.c.gpu_used() if self.c.gpu_used is not None else None
        self.child = self.c.spawn(self.target.argv, self.target.env, self.target.log, self.target.pdeathsig)
        self.on_event(Starting(self.generation, self.child.pid, self.child.pid, str(self.target.log)))
        deadline = self.c.clock.monotonic() + self.probes.ready_timeout_s
        last_note = -1e9
        lock = self.c.start_lock
        while True:
            self._check_stop()
            rc = self.child.poll()
            if rc is not None:
                return self._failure("startup_failed", rc, "startup")
            if lock is not None and lock.held:
                tokens = kv_cache_tokens(self.c.log_tail(self.target.log, 200))
                if tokens is not None:
                    self._release_start_lock("kv_cache", tokens)
            if self.c.health(self.target.url, self.probes.health_timeout_s).ok:
                break
            now = self.c.clock.monotonic()
            if now >= deadline:
                return self._failure("startup_timeout", None, "startup")
            if now - last_note >= 1.0:
                tail = self.c.log_tail(self.target.log, 5)
                line = next((ln.strip() for ln in reversed(tail) if ln.strip()), "")
                self.on_event(Waiting(self.generation, now - since, line))
                last_note = now
            self._pause(self.probes.poll_s)
        smoke = None
        if self.target.smoke:
            smoke = self.c.smoke(self.target.url, self.target.served_model_name, self.target.api_key)
        ready_s = self.c.clock.monotonic() - since
        self._engines = self.c.engines(self.child.pid)
        self._note_gpu_held()
        self.asleep = False
        self.on_event(Ready(self.generation, ready_s, smoke, tuple(e.pid for e in self._engines)))
        return ready_s

    def _supervise(self) -> Failure:
        """Watch a ready server until it fails (returned) or a stop is requested (raised)."""
        p = self.probes
        clock = self.c.clock
        assert self.child is not None
        now = clock.monotonic()
        next_health = now + p.health_interval_s
        next_probe = now + p.liveness_interval_s if p.liveness_interval_s > 0 else float("inf")
        unresponsive_since: float | None = None
        engine_gone_since: float | None = None
        probe: Future[ProbeResult] | None = None
        probe_started = 0.0
        failed_probes = 0
        sleepy = self.c.is_sleeping is not None
        idle = IdleTracker(p.idle_sleep_s, now) if sleepy and p.idle_sleep_s > 0 else None
        next_sleep_check = now + p.sleep_check_s if sleepy else float("inf")
        while True:
            self._check_stop()
            rc = self.child.poll()
            if rc is not None:
                return self._failure("exited", rc, "serving")
            now = clock.monotonic()
            if now >= next_sleep_check:
                next_sleep_check = now + p.sleep_check_s
                was_asleep = self.asleep
                self._sleep_watch(idle, now)
                if was_asleep and not self.asleep:  # woken: probe again soon, idle time counted afresh
                    next_probe = now + min(p.liveness_interval_s, p.liveness_retry_s) if p.liveness_interval_s > 0 \
                        else float("inf")
            if self._engines and not any(self.c.pid_alive(e.pid, e.create_time) for e in self._engines):
                engine_gone_since = engine_gone_since if engine_gone_since is not None else now
                if now - engine_gone_since >= p.engine_grace_s:
                    return self._failure("engine_gone", None, "serving")
            if now >= next_health:
                answer = self.c.health(self.target.url, p.health_timeout_s)
                now = clock.monotonic()
                next_health = now + p.health_interval_s
                if answer.status == 503:
                    return self._failure("engine_dead", None, "serving")
                if answer.status is None:
                    unresponsive_since = unresponsive_since if unresponsive_since is not None else now
                    self.on_event(ProbeFailed(self.generation, "health", answer.error or "no answer", 0))
                    if now - unresponsive_since >= p.unresponsive_after_s:
                        return self._failure("unresponsive", None, "serving",
                                             detail=f"/health has not answered for {now - unresponsive_since:.0f} s")
                else:
                    unresponsive_since = None
            if probe is None and now >= next_probe and not self.asleep:
                probe = self.c.generate(self.target.url, self.target.served_model_name, self.target.api_key,
                                        p.liveness_timeout_s)
                probe_started = now
            if probe is not None:
                result: ProbeResult | None = None
                if probe.done():
                    result = probe.result()
                elif now - probe_started >= p.liveness_timeout_s + 5.0:  # the client's own timeout did not fire
                    result = ProbeResult(False, now - probe_started, error="no answer within the probe timeout")
                if result is not None:
                    probe = None
                    if idle is not None:
                        idle.probe_finished()
                    if not result.ok and sleepy and self.c.is_sleeping is not None and \
                            self.c.is_sleeping(self.target.url, self.target.api_key):
                        # Put to sleep while the probe ran (`vboot sleep`): not a hang.
                        self._sleep_watch(idle, now)
                        next_probe = now + p.liveness_interval_s
                        continue
                    if result.ok:
                        failed_probes = 0
                        self._note_gpu_held()
                        self.on_event(ProbeSucceeded(self.generation, result.latency_s))
                        next_probe = now + p.liveness_interval_s
                    else:
                        failed_probes += 1
                        self.on_event(ProbeFailed(self.generation, "liveness", result.error, failed_probes))
                        if failed_probes >= p.liveness_failures:
                            return self._failure("hung", None, "serving",
                                                 detail=f"{failed_probes} generation probes in a row failed "
                                                        f"(last: {result.error})")
                        next_probe = now + p.liveness_retry_s
            self._pause(p.poll_s)

    def _sleep_watch(self, idle: IdleTracker | None, now: float) -> None:
        """Follow the server's sleep state (it may be put to sleep by `vboot sleep`) and, with an idle limit, put
        it to sleep when no request came for that long (vboot's own probes do not count)."""
        assert self.c.is_sleeping is not None
        answer = self.c.is_sleeping(self.target.url, self.target.api_key)
        if answer is True and not self.asleep:
            self.asleep = True
            self.on_event(Slept(self.generation, "outside"))
        elif answer is False and self.asleep:
            self.asleep = False
            if idle is not None:
                idle.reset(now)
            self.on_event(Woke(self.generation))
        if self.asleep or idle is None or self.c.request_counts is None or self.c.sleep is None:
            return
        idle.sample(self.c.request_counts(self.target.url, self.target.api_key), now)
        if idle.due(now) and self.c.sleep(self.target.url, self.target.api_key, 1):
            self.asleep = True
            self.on_event(Slept(self.generation, "idle", 1, idle.idle_for(now)))

    def _after_failure(self, failure: Failure, ready_once: bool) -> Outcome | None:
        """Stop what is left of the failed generation, then decide: restart (None) or give up (the outcome)."""
        out = self._stop_tree()
        self.on_event(Failed(self.generation, failure, out))
        self._wait_gpu_release(out)
        why = self._no_restart_reason(failure, ready_once)
        if why is None:
            now = self.c.clock.monotonic()
            self._failures = [t for t in self._failures if now - t < self.policy.window_s] + [now]
            if len(self._failures) > self.policy.max_restarts:
                why = (f"{len(self._failures)} failures within {_human_s(self.policy.window_s)} "
                       f"(--max-restarts {self.policy.max_restarts})")
        if why is not None:
            self.on_event(GaveUp(self.generation, failure, why))
            return Outcome(EXIT_STARTUP, failure, self.restarts, ready_once)
        # The first failure in a while restarts at once; each further one within the window waits twice as long.
        n = len(self._failures)
        delay = 0.0 if n == 1 else min(self.policy.backoff_max_s, self.policy.backoff_initial_s * 2 ** (n - 2))
        self.restarts += 1
        self.on_event(Restarting(self.generation + 1, self.restarts, delay, failure))
        try:
            self._sleep(delay)
        except _StopRequested:
            self.on_event(Stopping(int(self.stop_requested or _signal.SIGTERM)))
            code = 128 + int(self.stop_requested or _signal.SIGTERM)
            self.on_event(Stopped(code, None))
            return Outcome(code, failure, self.restarts, ready_once)
        return None

    def _no_restart_reason(self, failure: Failure, ready_once: bool) -> str | None:
        mode = self.policy.mode
        if mode == "no":
            return "--restart no"
        if mode == "on-failure":
            if not ready_once:
                return "it never became ready (with --restart on-failure only a server that was ready is restarted)"
            if failure.permanent:
                return f"a restart cannot help: {failure.diagnosis.summary if failure.diagnosis else failure.summary}"
        return None

    # -- stopping

    def _check_stop(self) -> None:
        if self.stop_requested is not None:
            raise _StopRequested

    def _sleep(self, seconds: float) -> None:
        """Sleep in poll-sized steps so that a stop request is acted on promptly."""
        end = self.c.clock.monotonic() + seconds
        while True:
            self._check_stop()
            left = end - self.c.clock.monotonic()
            if left <= 0:
                return
            self._pause(min(self.probes.poll_s, left))

    def _pause(self, seconds: float) -> None:
        if self.c.tick is not None:
            self.c.tick()
        self.c.clock.sleep(seconds)

    def _stop_tree(self) -> StopOutcome | None:
        if self.child is None:
            return None
        child = self.child
        return stop_group(child.pid, self.c.ops, self.c.clock, self.probes.stop_grace_s, reap=child.poll)

    def _stop_everything(self) -> Outcome:
        sig = int(self.stop_requested or _signal.SIGTERM)
        self.on_event(Stopping(sig))
        out = self._stop_tree()
        code = 128 + sig
        self.on_event(Stopped(code, out))
        return Outcome(code, None, self.restarts, self.generation > 0)

    def _wait_gpu_release(self, out: StopOutcome | None) -> None:
        """After a failed generation was stopped: wait (bounded) until the GPU memory in use is back near what it
        was before that generation started, so the next start does not profile memory still being freed
        (a dead engine's memory can take seconds to return; vLLM sizes its KV cache from what is free)."""
        if self.c.gpu_used is None or self._gpu_baseline is None or out is None:
            return
        baseline = self._gpu_baseline
        tolerance = max(GPU_SETTLE_TOLERANCE_BYTES, self._gpu_held // 20)
        t0 = self.c.clock.monotonic()
        while True:
            used = self.c.gpu_used()
            waited = self.c.clock.monotonic() - t0
            released = used <= baseline + tolerance
            if released or waited >= self.probes.memory_settle_s:
                break
            self.c.clock.sleep(0.5)
        if self._gpu_held or not released:
            holders = tuple(self.c.gpu_holders()) if not released and self.c.gpu_holders is not None else ()
            self.on_event(MemoryReleased(self.generation, GpuRelease(self._gpu_held, released, waited, baseline,
                                                                     used, holders)))

    def _wait_gpu_settled(self) -> None:
        """Before a first start: wait (bounded by ``memory_settle_s``) until the GPU's used memory stops changing,
        so vLLM does not profile memory that a server which just died is still releasing (or one that just
        released its start lock is still allocating). Reports when it waited, and who holds memory when it never
        settled."""
        if self.c.gpu_used is None:
            return
        p = self.probes
        tolerance = GPU_SETTLE_TOLERANCE_BYTES
        t0 = self.c.clock.monotonic()
        first = prev = self.c.gpu_used()
        while True:
            self._sleep(p.settle_sample_s)
            used = self.c.gpu_used()
            waited = self.c.clock.monotonic() - t0
            settled = abs(used - prev) <= tolerance
            if settled or waited >= p.memory_settle_s:
                break
            prev = used
        if waited > p.settle_sample_s * 1.5 or not settled:
            holders = tuple(self.c.gpu_holders()) if not settled and self.c.gpu_holders is not None else ()
            self.on_event(GpuSettling(self.generation, GpuRelease(max(0, first - used), settled, waited, first, used,
                                                                  holders)))

    # -- failures

    def _failure(self, reason: str, rc: int | None, during: str, detail: str = "") -> Failure:
        from bootstrap.core.diagnosis import diagnose

        diag = diagnose(self.c.log_tail(self.target.log, 400))
        code = sig = None
        if rc is not None:
            code, sig = (None, -rc) if rc < 0 else (rc, None)
        what = {
            "exited": "vLLM exited " + (f"with code {code}" if code is not None else f"on signal {_signame(sig)}")
                      + " while serving",
            "startup_failed": "vLLM exited " + (f"with code {code}" if code is not None
                                                else f"on signal {_signame(sig)}") + " during startup",
            "startup_timeout": f"vLLM did not become healthy within {_human_s(self.probes.ready_timeout_s)}",
            "engine_dead": "/health answered 503: vLLM's engine is dead",
            "engine_gone": "the VLLM::EngineCore process is gone while the API server still runs",
            "unresponsive": "vLLM stopped answering /health",
            "hung": "vLLM's engine is hung: /health answers but generations do not complete",
        }[reason]
        if detail:
            what += f" ({detail})"
        # An engine death shows up in the log as a stack trace that matches no known cause; a known cause from
        # the start-up log (a bad argument) is only blamed for a start-up failure.
        if during == "serving" and diag is not None and diag.code in PERMANENT_DIAGNOSES:
            diag = None
        return Failure(reason, what, during, self.c.wall(), code, sig, diag)

    def _note_gpu_held(self) -> None:
        """Remember the most GPU memory this generation was seen to use beyond the baseline."""
        if self.c.gpu_used is None or self._gpu_baseline is None:
            return
        self._gpu_held = max(self._gpu_held, self.c.gpu_used() - self._gpu_baseline)


def _signame(sig: int | None) -> str:
    try:
        return _signal.Signals(sig or 0).name
    except ValueError:
        return str(sig)


def _human_s(seconds: float) -> str:
    if seconds >= 120 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
