"""Being a server's supervisor: the foreground `vboot serve` and the detached `vboot supervise` both run
:func:`run_supervisor`. The detached one is started by `vboot serve --detach` in its own session, gets its plan
on stdin (it holds the environment's secrets, so it never touches the disk), reports its events as JSON lines
on ``--status-fd`` until the server is ready (or failed), and logs to ``supervisor.log`` in the run directory.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import IO

import click

from bootstrap.core.lifecycle import Event, GaveUp, Lifecycle, Outcome, Ready, Stopped, Target, event_to_json
from bootstrap.core.serve_plan import ServePlan, plan_from_json
from bootstrap.core.sidecars import SidecarExited, SidecarStarted

SUPERVISOR_LOG = "supervisor.log"


def run_supervisor(plan: ServePlan, on_event: Callable[[Event], None],
                   on_sidecar: Callable[[SidecarStarted | SidecarExited], None] = lambda _e: None,
                   since: float | None = None) -> Outcome:
    """Supervise ``plan``'s server (and its side processes) until it is stopped or vboot gives up; SIGINT and
    SIGTERM stop it (exit 130/143). The run record and systemd's notify socket follow every event."""
    from bootstrap.cli.wiring import lifecycle_collaborators, spawn_logged
    from bootstrap.core.recorder import RunRecorder
    from bootstrap.core.sdnotify import Notifier, probe_interval
    from bootstrap.core.sidecars import SidecarRunner
    from bootstrap.core.supervisor import GroupOps, SystemClock
    from bootstrap.probes import procs

    me = os.getpid()
    recorder = RunRecorder(plan, supervisor_pid=me, supervisor_create_time=procs.create_time(me),
                           create_time=procs.create_time, wall=time.time)
    notifier = Notifier(os.environ, plan.name)
    sidecar_env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}

    def sidecar_event(e: SidecarStarted | SidecarExited) -> None:
        recorder.on_sidecar(e)
        on_sidecar(e)

    sidecars = SidecarRunner(list(plan.sidecars), plan.run_dir, sidecar_env,
                             spawn_logged, GroupOps.real(), SystemClock(), on_event=sidecar_event)
    probes = replace(plan.probes, liveness_interval_s=probe_interval(plan.probes.liveness_interval_s,
                                                                     notifier.watchdog_s))
    target = Target(argv=plan.argv, env=dict(plan.env), log=plan.log, url=plan.url,
                    served_model_name=plan.served_model_name, api_key=plan.api_key, smoke=plan.smoke)

    def fan_out(event: Event) -> None:
        recorder.on_event(event)
        notifier.on_event(event)
        on_event(event)

    from bootstrap.core.environ import Environ
    from bootstrap.core.paths import state_dir
    from bootstrap.core.startlock import FileStartLock, LockHolder

    lock = FileStartLock(state_dir(Environ()) / "locks", plan.start_locks, LockHolder(plan.name, me, time.time())) \
        if plan.start_locks else None
    collab = lifecycle_collaborators(plan.device, tick=sidecars.check, gpus=plan.gpus, start_lock=lock,
                                     sleep_mode=plan.sleep_mode)
    probes = replace(probes, idle_sleep_s=plan.idle_sleep_s)
    life = Lifecycle(target, collab, plan.restart, probes, on_event=fan_out)
    previous = {sig: signal.signal(sig, lambda s, _f: life.request_stop(s)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        sidecars.start_all()
        return life.run(since)
    finally:
        sidecars.stop_all()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class StatusPipe:
    """The detached supervisor's report to the `vboot serve --detach` that started it: one JSON line per event,
    until the server is ready or failed; then the pipe is closed (that `vboot serve` has exited)."""

    def __init__(self, stream: IO[str] | None) -> None:
        self.stream = stream

    def __call__(self, event: Event) -> None:
        if self.stream is None:
            return
        try:
            self.stream.write(json.dumps(event_to_json(event)) + "\n")
            self.stream.flush()
        except OSError:  # the parent went away (Ctrl-C): keep serving, stop reporting
            self.close()
            return
        if isinstance(event, (Ready, GaveUp, Stopped)):
            self.close()

    def close(self) -> None:
        if self.stream is not None:
            try:
                self.stream.close()
            except OSError:
                pass
            self.stream = None


class SupervisorLog:
    """The supervisor's own log: one timestamped JSON line per event on its stdout (supervisor.log); while vLLM
    starts, one progress line per 15 s rather than one per second."""

    WAITING_EVERY_S = 15.0

    def __init__(self) -> None:
        self._last_waiting = -1e9

    def __call__(self, event: Event | SidecarStarted | SidecarExited) -> None:
        from bootstrap.core.envelope import to_jsonable
        from bootstrap.core.lifecycle import Waiting

        if isinstance(event, Waiting):
            if event.elapsed_s - self._last_waiting < self.WAITING_EVERY_S:
                return
            self._last_waiting = event.elapsed_s
        else:
            self._last_waiting = -1e9
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        print(f"{stamp} {type(event).__name__} {json.dumps(to_jsonable(event), sort_keys=True)}", flush=True)


@click.command(hidden=True)
@click.option("--status-fd", type=int, default=None, help="Write JSON event lines here until ready.")
def supervise(status_fd: int | None) -> int:
    """(internal) The detached supervisor of `vboot serve --detach`: reads its plan from stdin."""
    plan = plan_from_json(json.loads(sys.stdin.read()))
    sys.stdin.close()
    status = StatusPipe(os.fdopen(status_fd, "w", encoding="utf-8") if status_fd is not None else None)

    log = SupervisorLog()

    def on_event(event: Event) -> None:
        log(event)
        status(event)

    outcome = run_supervisor(plan, on_event, on_sidecar=log)
    status.close()
    return outcome.exit_code
