"""`vboot ps` and `vboot stop` as data (bootstrap.core.servers): collected and planned against a scripted process
table, executed with a fake clock. Nothing here signals a real process."""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import replace

import pytest

from bootstrap.core.environ import Environ
from bootstrap.core.errors import NotFoundError, NotOursError, RunRecordInvalid, UsageError
from bootstrap.core.paths import runs_dir
from bootstrap.core.runs import RunRecord, save_run
from bootstrap.core.servers import PidStop, PsReport, collect_ps, execute_stop, plan_stop, process_ops
from bootstrap.core.supervisor import stop_group
from tests.support.fakes import API, ENGINE, PY, TRACKER, WORKER, FakeClock, FakeMachine, proc

VBOOT_SERVE = (PY, "/venv/bin/vboot", "serve", "tiny")
PROM = ("/usr/bin/prometheus", "--config.file=prometheus.yml")
SLEEP = ("sleep", "600")


def record(env: dict, name: str, pid: int, **kw) -> RunRecord:
    """A run record as `vboot serve` writes it (create time 1000 + pid, the server leading its group)."""
    run_dir = runs_dir(Environ(env)) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    values = dict(name=name, profile="tiny", run_dir=str(run_dir), pid=pid, pid_create_time=1000.0 + pid, pgid=pid,
                  host="127.0.0.1", port=8000 + pid % 1000, served_model_name="m", model_id="m", model_path="/m",
                  started_at=float(pid))
    values.update(kw)
    rec = RunRecord(**values)
    save_run(rec)
    return rec


def server_tree(pid: int) -> list:
    """A vLLM server started by vboot: API server leading its group, engine, worker, resource tracker."""
    return [proc(pid, 1, API), proc(pid + 1, pid, ENGINE, pgid=pid), proc(pid + 2, pid + 1, WORKER, pgid=pid),
            proc(pid + 3, pid, TRACKER, pgid=pid)]


def stop(env, machine, clock=None, **kw):
    plan = plan_stop(Environ(env), probes=machine.probes(), **kw)
    return plan, execute_stop(plan, machine.ops(clock or FakeClock()), grace_s=5)


# ---------------------------------------------------------------------------------------------- ps

def test_ps_with_nothing_running_asks_neither_nvml_nor_http(isolated_env):
    script = (
        "import sys\n"
        "from bootstrap.core.servers import PsReport, collect_ps\n"
        "from bootstrap.core.environ import Environ\n"
        "from bootstrap.probes import nvml, procs\n"
        "procs.vllm_processes = lambda: []\n"
        "def no(*a, **k): raise AssertionError('NVML was asked')\n"
        "nvml.snapshot = no\n"
        "assert collect_ps(Environ()) == PsReport()\n"
        "print(sorted(m for m in ('bootstrap.probes.http', 'pynvml') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=isolated_env,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"


def test_ps_counts_a_servers_gpu_memory_over_its_process_group_once(isolated_env):
    GiB = 2**30
    record(isolated_env, "demo", 4000)
    machine = FakeMachine(*server_tree(4000), proc(5000, 1, ENGINE, pgid=4999))
    probes = replace(machine.probes(), gpu_bytes_by_pid=lambda: {4000: GiB, 4001: 5 * GiB, 5000: 7 * GiB})
    report = collect_ps(Environ(isolated_env), probes)
    [server] = report.servers
    assert server.name == "demo" and server.gpu_bytes == 6 * GiB and server.verified
    assert [(o.pid, o.gpu_bytes) for o in report.orphans] == [(5000, 7 * GiB)] and report.unmanaged == ()


def test_ps_lists_a_vllm_server_vboot_did_not_start(isolated_env):
    machine = FakeMachine(proc(6000, 1, API))
    report = collect_ps(Environ(isolated_env), machine.probes())
    assert report.servers == () and report.orphans == ()
    assert [(u.pid, u.cmdline) for u in report.unmanaged] == [(6000, " ".join(API))]


def test_ps_lists_an_engine_of_a_live_script_as_unmanaged_not_orphaned(isolated_env):
    machine = FakeMachine(proc(500, 300, (PY, "offline.py")), proc(501, 500, ENGINE, pgid=500),
                          proc(502, 501, WORKER, pgid=500))
    report = collect_ps(Environ(isolated_env), machine.probes())
    assert report.orphans == () and report.unmanaged == ()
    assert [(e.pid, e.launcher_pid) for e in report.unmanaged_engines] == [(501, 500), (502, 500)]


def test_ps_marks_a_live_record_that_fails_the_ownership_rule(isolated_env):
    record(isolated_env, "forged", 4000, pgid=777)
    machine = FakeMachine(*server_tree(4000))
    [server] = collect_ps(Environ(isolated_env), machine.probes()).servers
    assert not server.verified and "not in the recorded group 777" in server.refused
    # ...and its server is listed as one vboot did not start (the record proves nothing)
    assert [u.pid for u in collect_ps(Environ(isolated_env), machine.probes()).unmanaged] == [4000]


def test_ps_warns_about_a_malformed_record_and_lists_the_others(isolated_env):
    record(isolated_env, "good", 4000)
    bad = runs_dir(Environ(isolated_env)) / "bad"
    bad.mkdir()
    (bad / "run.json").write_text('{"name": "bad", "pid": "4000"')
    report = collect_ps(Environ(isolated_env), FakeMachine(*server_tree(4000)).probes())
    assert [s.name for s in report.servers] == ["good"]
    assert len(report.warnings) == 1 and str(bad / "run.json") in report.warnings[0]


# ---------------------------------------------------------------------------------------------- stop NAME / --all

def test_stop_name_signals_the_verified_group_and_reports_its_members(isolated_env):
    record(isolated_env, "demo", 4000)
    machine = FakeMachine(*server_tree(4000))
    _, report = stop(isolated_env, machine, name="demo")
    assert machine.sent == [("group", 4000, signal.SIGTERM)]
    assert report.stopped == (4000, 4001, 4002, 4003) and report.servers == ("demo",) and report.survivors == ()


def test_stop_name_of_a_server_in_another_group_than_recorded_signals_nothing(isolated_env):
    """A recorded pgid pointing at somebody's group (here a `sleep` job's) must never be signalled."""
    record(isolated_env, "demo", 4000, pgid=8000)
    machine = FakeMachine(*server_tree(4000), proc(8000, 1, SLEEP))
    with pytest.raises(NotOursError) as err:
        stop(isolated_env, machine, name="demo")
    assert "not in the recorded group 8000" in err.value.message and "rm -r" in err.value.hint
    assert machine.sent == []


def test_stop_name_of_a_pid_recycled_to_another_program_is_not_found(isolated_env):
    record(isolated_env, "demo", 4000)
    machine = FakeMachine(proc(4000, 1, SLEEP, ct=9999.0))
    with pytest.raises(NotFoundError) as err:
        stop(isolated_env, machine, name="demo")
    assert err.value.message == "no running server named 'demo' (none running)"
    assert machine.sent == []


def test_stop_name_of_an_unrelated_program_with_the_recorded_create_time_is_refused(isolated_env):
    """A forged record can copy a victim's real create time: it still does not look like a vLLM server."""
    record(isolated_env, "demo", 8000)
    machine = FakeMachine(proc(8000, 1, SLEEP))
    with pytest.raises(NotOursError) as err:
        stop(isolated_env, machine, name="demo")
    assert "PID 8000 (sleep) is not a vLLM API server" in err.value.message
    assert machine.sent == []


def test_stop_name_with_a_malformed_record_names_the_file_and_signals_nothing(isolated_env):
    rec = record(isolated_env, "demo", 8000)
    raw = (runs_dir(Environ(isolated_env)) / "demo" / "run.json")
    raw.write_text(raw.read_text().replace('"pid_create_time": 9000.0', '"pid_create_time": 0'))
    machine = FakeMachine(proc(8000, 1, API))
    with pytest.raises(RunRecordInvalid) as err:
        stop(isolated_env, machine, name="demo")
    assert "pid_create_time" in err.value.message and rec.run_dir in err.value.hint
    assert machine.sent == []


def test_stop_all_stops_what_is_ours_and_refuses_the_rest_with_reasons(isolated_env):
    record(isolated_env, "good", 4000)
    record(isolated_env, "moved", 5000, pgid=8000)  # group of an unrelated process
    record(isolated_env, "impostor", 8100)  # a sleep that happens to have the recorded create time
    machine = FakeMachine(*server_tree(4000), *server_tree(5000), proc(8000, 1, SLEEP), proc(8100, 1, SLEEP))
    _, report = stop(isolated_env, machine, stop_all=True)
    assert report.servers == ("good",)
    assert {r.pid for r in report.refused} == {5000, 8100}
    assert machine.hit == {4000, 4001, 4002, 4003}


def test_a_supervisor_that_is_not_vboot_is_not_signalled_and_the_server_still_stops(isolated_env):
    record(isolated_env, "demo", 4000, supervisor_pid=8000, supervisor_create_time=9000.0)
    machine = FakeMachine(*server_tree(4000), proc(8000, 1, SLEEP))
    _, report = stop(isolated_env, machine, name="demo")
    assert 8000 not in machine.hit and 8000 in machine.procs
    assert [r.pid for r in report.refused] == [8000] and "is not a vboot process" in report.refused[0].reason
    assert report.servers == ("demo",) and 4000 not in machine.procs


def test_the_vboot_supervisor_is_asked_first_then_the_group_is_made_sure_of(isolated_env):
    record(isolated_env, "demo", 4000, supervisor_pid=3900, supervisor_create_time=4900.0)
    machine = FakeMachine(*server_tree(4000), proc(3900, 3800, VBOOT_SERVE, name="vboot", pgid=3800))
    stop(isolated_env, machine, name="demo")
    assert machine.sent[0] == ("pid", 3900, signal.SIGTERM)


def test_a_prometheus_pid_pointing_at_an_unrelated_process_is_refused(isolated_env):
    record(isolated_env, "demo", 4000, prometheus_pid=8000, prometheus_create_time=9000.0, prometheus_port=9090)
    machine = FakeMachine(*server_tree(4000), proc(8000, 1, SLEEP))
    _, report = stop(isolated_env, machine, name="demo")
    assert 8000 in machine.procs and 8000 not in machine.hit
    assert [r.what for r in report.refused] == ["Prometheus of 'demo'"]


def test_a_recycled_prometheus_pid_is_skipped_without_a_signal(isolated_env):
    record(isolated_env, "demo", 4000, prometheus_pid=8000, prometheus_create_time=1234.0, prometheus_port=9090)
    machine = FakeMachine(*server_tree(4000), proc(8000, 1, PROM))
    _, report = stop(isolated_env, machine, name="demo")
    assert 8000 not in machine.hit and report.refused == ()


def test_our_prometheus_is_stopped_with_its_group(isolated_env):
    record(isolated_env, "demo", 4000, prometheus_pid=4100, prometheus_create_time=5100.0, prometheus_port=9090)
    machine = FakeMachine(*server_tree(4000), proc(4100, 3900, PROM))
    _, report = stop(isolated_env, machine, name="demo")
    assert ("group", 4100, signal.SIGTERM) in machine.sent and 4100 in report.stopped


def test_a_prometheus_outside_its_own_group_is_refused(isolated_env):
    record(isolated_env, "demo", 4000, prometheus_pid=4100, prometheus_create_time=5100.0, prometheus_port=9090)
    machine = FakeMachine(*server_tree(4000), proc(4100, 3900, PROM, pgid=3900), proc(3950, 3900, SLEEP, pgid=3900))
    _, report = stop(isolated_env, machine, name="demo")
    assert not machine.hit & {4100, 3950} and [r.pid for r in report.refused] == [4100]


def test_a_server_that_changed_group_after_the_plan_is_refused_at_the_signal(isolated_env):
    """The group is judged again right before it is signalled."""
    record(isolated_env, "demo", 4000)
    machine = FakeMachine(*server_tree(4000), proc(8000, 1, SLEEP))
    plan = plan_stop(Environ(isolated_env), name="demo", probes=machine.probes())
    machine.procs[4000] = proc(4000, 1, API, pgid=8000)
    report = execute_stop(plan, machine.ops(FakeClock()), grace_s=5)
    assert machine.sent == [] and [r.pid for r in report.refused] == [4000]


# ---------------------------------------------------------------------------------------------- --orphans

def test_stop_orphans_spares_engines_under_a_live_launcher(isolated_env):
    machine = FakeMachine(proc(101, 1, ENGINE, pgid=100), proc(102, 101, WORKER, pgid=100),
                          proc(500, 300, (PY, "offline.py")), proc(501, 500, ENGINE, pgid=500))
    plan, report = stop(isolated_env, machine, orphans=True)
    assert [p.pid for p in plan.processes] == [101, 102]
    assert machine.hit == {101, 102} and 501 in machine.procs
    assert [e.pid for e in report.spared] == [501]


def test_stop_orphans_never_signals_the_orphans_old_group(isolated_env):
    """Orphans keep the group of the launcher that died, which may hold a user's unrelated processes."""
    machine = FakeMachine(proc(101, 1, ENGINE, pgid=100), proc(150, 1, SLEEP, pgid=100))
    stop(isolated_env, machine, orphans=True)
    assert all(kind == "pid" for kind, _, _ in machine.sent) and 150 in machine.procs


class ScriptedOrphans:
    """Orphans that obey a script: which signal ends each of them (None: only SIGKILL), checked by create time."""

    def __init__(self, dies_on: dict[int, int | None]):
        self.dies_on = dies_on
        self.alive = set(dies_on)
        self.sent: list[tuple[int, int, float]] = []

    def signal_pid(self, pid, sig, create_time):
        if pid not in self.alive:
            return False
        self.sent.append((pid, sig, create_time))
        if sig in (self.dies_on[pid], signal.SIGKILL):
            self.alive.discard(pid)
        return True

    def pid_alive(self, pid, create_time):
        return pid in self.alive


def _targets(*pids: int) -> list[PidStop]:
    return [PidStop(pid, float(pid), "VLLM::EngineCore") for pid in pids]


def test_orphans_get_sigterm_each_by_pid_and_create_time():
    table = ScriptedOrphans({201: signal.SIGTERM, 202: signal.SIGTERM})
    out = stop_group(0, process_ops(_targets(201, 202), table.signal_pid, table.pid_alive), FakeClock())
    assert table.sent == [(201, signal.SIGTERM, 201.0), (202, signal.SIGTERM, 202.0)]
    assert out.signalled == (201, 202) and out.survivors == () and not out.escalated


def test_an_orphan_that_ignores_sigterm_gets_sigkill_after_the_grace_period():
    clock = FakeClock()
    table = ScriptedOrphans({201: signal.SIGTERM, 202: None})
    out = stop_group(0, process_ops(_targets(201, 202), table.signal_pid, table.pid_alive), clock, grace_s=5)
    assert table.sent[-1] == (202, signal.SIGKILL, 202.0) and (201, signal.SIGKILL, 201.0) not in table.sent
    assert out.escalated and out.survivors == () and 5.0 <= clock.t < 5.5


def test_no_orphans_means_no_signal():
    table = ScriptedOrphans({})
    out = stop_group(0, process_ops([], table.signal_pid, table.pid_alive))
    assert table.sent == [] and out.signalled == ()


# ---------------------------------------------------------------------------------------------- --pid

def test_stop_pid_stops_a_named_engine_of_a_live_script_with_its_workers_only(isolated_env):
    machine = FakeMachine(proc(500, 300, (PY, "offline.py")), proc(501, 500, ENGINE, pgid=500),
                          proc(502, 501, WORKER, pgid=500), proc(503, 500, TRACKER, pgid=500))
    plan, report = stop(isolated_env, machine, pids=[501])
    assert [p.pid for p in plan.processes] == [501, 502]
    assert machine.hit == {501, 502} and {500, 503} <= set(machine.procs)
    assert report.stopped == (501, 502)


def test_stop_pid_of_an_unmanaged_api_server_takes_its_tree(isolated_env):
    machine = FakeMachine(*server_tree(6000))
    plan, _ = stop(isolated_env, machine, pids=[6000])
    assert [p.pid for p in plan.processes] == [6000, 6001, 6002, 6003]


def test_stop_pid_refuses_a_process_that_is_not_vllm(isolated_env):
    machine = FakeMachine(proc(8000, 1, SLEEP))
    with pytest.raises(UsageError) as err:
        stop(isolated_env, machine, pids=[8000])
    assert "PID 8000 (sleep) is not a vLLM process" in err.value.message and machine.sent == []


def test_stop_pid_of_a_missing_process_is_not_found(isolated_env):
    with pytest.raises(NotFoundError):
        stop(isolated_env, FakeMachine(), pids=[8000])


def test_stop_pid_of_a_process_of_vboots_own_server_points_to_stop_name(isolated_env):
    record(isolated_env, "demo", 4000)
    machine = FakeMachine(*server_tree(4000))
    with pytest.raises(UsageError) as err:
        stop(isolated_env, machine, pids=[4001])
    assert "belongs to vboot's server 'demo'" in err.value.message and "vboot stop demo" in err.value.hint
    assert machine.sent == []


def test_ps_report_is_a_frozen_value():
    with pytest.raises(AttributeError):
        PsReport().servers = ()  # type: ignore[misc]
