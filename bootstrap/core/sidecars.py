"""Helper processes that live beside a vLLM server (Prometheus; Alertmanager and a GPU exporter where asked):
started before it, restarted when they die, stopped with it. Each runs in its own process group, with
PR_SET_PDEATHSIG, so a SIGKILLed supervisor takes them down too."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bootstrap.core.lifecycle import Child
from bootstrap.core.serve_plan import Sidecar
from bootstrap.core.supervisor import Clock, GroupOps, stop_group


@dataclass(frozen=True)
class SidecarStarted:
    name: str
    pid: int
    port: int
    restarts: int


@dataclass(frozen=True)
class SidecarExited:
    name: str
    code: int | None
    restart_in_s: float | None  # None: vboot gave up on it (too many deaths in a row)


@dataclass
class _Running:
    spec: Sidecar
    child: Child | None = None
    restarts: int = 0
    deaths: list[float] = field(default_factory=list)
    restart_at: float | None = None
    gave_up: bool = False


@dataclass
class SidecarRunner:
    """Keeps ``specs`` running until :meth:`stop_all`. :meth:`check` is called on every turn of the lifecycle."""

    specs: Sequence[Sidecar]
    run_dir: Path
    env: Mapping[str, str]
    spawn: Callable[[Sequence[str], dict[str, str], Path, bool], Child]
    ops: GroupOps
    clock: Clock
    on_event: Callable[[SidecarStarted | SidecarExited], None] = lambda _e: None
    pdeathsig: bool = True
    max_restarts: int = 5
    window_s: float = 600.0
    _running: list[_Running] = field(default_factory=list)

    def start_all(self) -> None:
        self._running = [_Running(spec) for spec in self.specs]
        for r in self._running:
            self._start(r)

    def _start(self, r: _Running) -> None:
        r.child = self.spawn(r.spec.argv, dict(self.env), self.run_dir / r.spec.log, self.pdeathsig)
        r.restart_at = None
        self.on_event(SidecarStarted(r.spec.name, r.child.pid, r.spec.port, r.restarts))

    def check(self) -> None:
        now = self.clock.monotonic()
        for r in self._running:
            if r.gave_up:
                continue
            if r.child is not None and r.restart_at is None:
                code = r.child.poll()
                if code is None:
                    continue
                stop_group(r.child.pid, self.ops, self.clock, grace_s=5.0)  # whatever it left in its group
                r.deaths = [t for t in r.deaths if now - t < self.window_s] + [now]
                if len(r.deaths) > self.max_restarts:
                    r.gave_up = True
                    self.on_event(SidecarExited(r.spec.name, code, None))
                    continue
                delay = min(60.0, 2.0 * 2 ** (len(r.deaths) - 1))
                r.restart_at = now + delay
                self.on_event(SidecarExited(r.spec.name, code, delay))
            elif r.restart_at is not None and now >= r.restart_at:
                r.restarts += 1
                self._start(r)

    def pids(self) -> dict[str, int]:
        """name -> PID of each sidecar now running."""
        return {r.spec.name: r.child.pid for r in self._running
                if r.child is not None and r.restart_at is None and not r.gave_up}

    def stop_all(self) -> None:
        for r in self._running:
            if r.child is not None:
                stop_group(r.child.pid, self.ops, self.clock, grace_s=10.0, reap=r.child.poll)
        self._running = []
