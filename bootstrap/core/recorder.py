"""The run record follows the lifecycle: each event that changes what `vboot ps`/`stop`/`top` must know is written
to ``run.json`` at once (atomically)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from bootstrap.core.lifecycle import (
    Event,
    Failed,
    GaveUp,
    Ready,
    Restarting,
    Slept,
    Starting,
    StartLockReleased,
    Stopped,
    WaitingForStartLock,
    Woke,
)
from bootstrap.core.runs import LastExit, RunRecord, save_run
from bootstrap.core.serve_plan import ServePlan
from bootstrap.core.sidecars import SidecarExited, SidecarStarted


class RunRecorder:
    """Builds the run record from the plan and keeps it current. ``create_time(pid)`` reads a process's start
    time (the PID-reuse guard); ``wall()`` is ``time.time``."""

    def __init__(self, plan: ServePlan, *, supervisor_pid: int, supervisor_create_time: float,
                 create_time: Callable[[int], float], wall: Callable[[], float],
                 save: Callable[[RunRecord], object] = save_run) -> None:
        self.plan = plan
        self._create_time = create_time
        self._wall = wall
        self._save = save
        self.record: RunRecord | None = None
        # What every record of this run says; the process fields (pid 0: no vLLM yet) are filled in by _new.
        self._base = RunRecord(
            name=plan.name, profile=plan.profile, run_dir=str(plan.run_dir), host=plan.host, port=plan.port,
            served_model_name=plan.served_model_name, model_id=plan.model_id, model_path=plan.model_path,
            pid=0, pid_create_time=0.0, pgid=0, started_at=0.0,
            supervisor_pid=supervisor_pid, supervisor_create_time=supervisor_create_time, detached=plan.detached,
            api_key_set=bool(plan.api_key), argv=tuple(plan.shown_argv), restart_mode=plan.restart.mode,
            device=plan.device, device_reason=plan.device_reason, fingerprint=plan.fingerprint, inputs=plan.inputs,
            vllm_python=plan.vllm_python, vllm_distribution=plan.vllm_distribution,
            prometheus_port=plan.prometheus.port if plan.prometheus else 0, gpus=plan.gpus,
            gpu_memory_utilization=plan.gpu_memory_utilization, cpu_kvcache_bytes=plan.cpu_kvcache_bytes,
            start_locks=plan.start_locks, sleep_mode=plan.sleep_mode, idle_sleep_s=plan.idle_sleep_s)
        self._prometheus: tuple[int, float] = (0, 0.0)
        self._others: dict[str, dict[str, float | int]] = {}  # alertmanager, gpu-exporter: pid, create_time, port

    def _write(self, record: RunRecord) -> None:
        self.record = record
        self._save(record)

    def _new(self, started_at: float) -> RunRecord:
        """The run's first record, with the helpers already running; the caller sets the process fields."""
        pid, ct = self._prometheus
        return replace(self._base, started_at=started_at, prometheus_pid=pid, prometheus_create_time=ct,
                       sidecars=dict(self._others))

    def on_event(self, event: Event) -> None:
        r = self.record
        if isinstance(event, WaitingForStartLock):
            # No vLLM yet (pid 0): the record says who it waits for, and `vboot stop` finds its supervisor.
            if r is None:
                self._write(replace(self._new(self._wall()), state="waiting", generation=event.generation))
            elif r.state != "waiting":
                self._write(replace(r, state="waiting"))
            return
        if isinstance(event, Starting):
            now = self._wall()
            pid_create_time = self._create_time(event.pid)
            if r is None or r.pid == 0 and r.state == "waiting" and r.generation <= 1:
                r = self._new(r.started_at if r is not None else now)
            self._write(replace(r, pid=event.pid, pid_create_time=pid_create_time, pgid=event.pgid,
                                generation=event.generation, generation_started_at=now, state="starting",
                                kv_cache_at=0.0))
            (self.plan.run_dir / "vllm.pid").write_text(f"{event.pid}\n")
        elif r is None:
            return
        elif isinstance(event, Ready):
            self._write(replace(r, state="ready"))
        elif isinstance(event, StartLockReleased):
            if event.reason == "kv_cache":
                self._write(replace(r, kv_cache_at=self._wall()))
        elif isinstance(event, Slept):
            self._write(replace(r, state="sleeping"))
        elif isinstance(event, Woke):
            self._write(replace(r, state="ready"))
        elif isinstance(event, Failed):
            f = event.failure
            self._write(replace(r, last_exit=LastExit(f.reason, f.summary, f.at, f.code, f.signal,
                                                       f.diagnosis.code if f.diagnosis else None)))
        elif isinstance(event, Restarting):
            self._write(replace(r, state="restarting", restarts=event.restarts))
        elif isinstance(event, GaveUp):
            self._write(replace(r, state="failed"))
        elif isinstance(event, Stopped):
            self._write(replace(r, state="stopped"))

    def on_sidecar(self, event: SidecarStarted | SidecarExited) -> None:
        if isinstance(event, SidecarStarted):
            if event.name == "prometheus":
                self._prometheus = (event.pid, self._create_time(event.pid))
            else:
                self._others[event.name] = {"pid": event.pid, "create_time": self._create_time(event.pid),
                                            "port": event.port}
        elif event.name == "prometheus":
            self._prometheus = (0, 0.0)
        else:
            self._others.pop(event.name, None)
        if self.record is not None:
            pid, ct = self._prometheus
            self._write(replace(self.record, prometheus_pid=pid, prometheus_create_time=ct,
                                sidecars=dict(self._others)))
