"""The ownership rule (is a recorded PID still vboot's?) and the orphan rule (is an engine's launcher gone?),
on scripted process tables."""

from __future__ import annotations

import pytest

from bootstrap.core.ownership import (
    PROMETHEUS,
    VBOOT,
    VLLM_API_SERVER,
    Claim,
    Ownership,
    Standing,
    classify_role,
    is_python,
    judge,
    judge_vllm_processes,
    program,
)
from tests.support.fakes import API, ENGINE, PY, TRACKER, WORKER, FakeMachine, proc

SERVER = proc(4000, 1, API)


def server_claim(**kw) -> Claim:
    values = dict(label="server 'tiny'", pid=4000, create_time=5000.0, expect=VLLM_API_SERVER, pgid=4000)
    values.update(kw)
    return Claim(**values)


# --- 1. the ownership rule ----------------------------------------------------------------------------------

def test_the_recorded_server_alive_in_its_group_is_owned():
    v = judge(server_claim(), SERVER)
    assert v.ownership is Ownership.OWNED and v.owned and v.reason == ""


def test_a_create_time_within_half_a_second_is_the_same_process():
    assert judge(server_claim(create_time=5000.3), SERVER).owned


def test_a_recycled_pid_is_gone_not_ours():
    v = judge(server_claim(create_time=4000.0), SERVER)  # recorded earlier; PID 4000 now started at 5000
    assert v.gone and "PID 4000 is now another process" in v.reason


def test_a_pid_that_no_longer_exists_is_gone():
    assert judge(server_claim(), None).gone


def test_a_zombie_at_the_recorded_pid_is_gone():
    assert judge(server_claim(), proc(4000, 1, API, zombie=True)).gone


@pytest.mark.parametrize("create_time", [0.0, -1.0, float("nan"), float("inf")])
def test_without_a_recorded_create_time_nothing_is_proved(create_time):
    v = judge(server_claim(create_time=create_time), SERVER)
    assert v.refused and "no create time recorded for PID 4000" in v.reason


def test_create_time_zero_is_refused_even_when_nothing_runs_there():
    assert judge(server_claim(create_time=0.0), None).refused


def test_a_pid_outside_the_recorded_group_is_refused():
    """A forged pgid pointing at another group (say, a user's shell job) is never signalled."""
    v = judge(server_claim(pgid=777), SERVER)
    assert v.refused and v.reason == "server 'tiny': PID 4000 is in process group 4000, not in the recorded group 777"


def test_a_server_that_moved_to_another_group_is_refused():
    assert judge(server_claim(), proc(4000, 1, API, pgid=3999)).refused


@pytest.mark.parametrize("pid, pgid", [(0, 4000), (1, 4000), (-5, 4000), (4000, 0), (4000, 1), (4000, -1)])
def test_pid_or_group_zero_one_or_negative_is_refused(pid, pgid):
    # killpg(0) is our own group, kill(-1) every process we may signal, PID 1 init: never from a record.
    seen = proc(pid, 0, API, pgid=pgid) if pid > 0 else None
    assert judge(server_claim(pid=pid, pgid=pgid), seen).refused


def test_a_process_that_is_not_a_vllm_server_is_refused():
    v = judge(server_claim(), proc(4000, 1, ("sleep", "600"), ct=5000.0))
    assert v.refused and "PID 4000 (sleep) is not a vLLM API server" in v.reason


def test_a_vllm_engine_at_the_server_pid_is_not_the_server():
    assert judge(server_claim(), proc(4000, 1, ENGINE)).refused


@pytest.mark.parametrize("cmd", [("/venv/bin/vllm", "serve", "/m"), (PY, "/venv/bin/vllm", "serve", "/m"),
                                 (PY, "-m", "vllm.entrypoints.cli.main", "serve", "/m"), API])
def test_every_way_vboot_starts_vllm_looks_like_a_server(cmd):
    assert judge(server_claim(), proc(4000, 1, cmd)).owned


def test_prometheus_is_judged_by_its_executable_when_it_can_be_read():
    claim = Claim("Prometheus of 'tiny'", 4100, 5100.0, PROMETHEUS, pgid=4100)
    assert judge(claim, proc(4100, 1, ("/usr/bin/prometheus", "--config.file=x"))).owned
    # argv[0] says prometheus, but the executable is python: a process can name itself anything
    impostor = proc(4100, 1, ("prometheus", "--config.file=x"), exe="/usr/bin/python3.11")
    v = judge(claim, impostor)
    assert v.refused and "is not Prometheus" in v.reason


def test_prometheus_without_a_readable_executable_is_judged_by_its_command():
    claim = Claim("Prometheus of 'tiny'", 4100, 5100.0, PROMETHEUS, pgid=4100)
    assert judge(claim, proc(4100, 1, ("/usr/bin/prometheus", "--web.listen-address=x"), exe="")).owned
    assert judge(claim, proc(4100, 1, ("/usr/bin/sleep", "600"), exe="")).refused


def test_an_upgraded_binary_still_running_is_still_that_program():
    claim = Claim("Prometheus of 'tiny'", 4100, 5100.0, PROMETHEUS, pgid=4100)
    assert judge(claim, proc(4100, 1, ("/usr/bin/prometheus",), exe="/usr/bin/prometheus (deleted)")).owned


@pytest.mark.parametrize("cmd, name, ok", [
    (("/venv/bin/python3", "/venv/bin/vboot", "serve", "tiny"), "vboot", True),
    (("/venv/bin/python3", "-m", "bootstrap", "serve", "tiny"), "python3", True),
    (("/venv/bin/python3", "-m", "bootstrap.supervise", "tiny"), "python3", True),
    (("/venv/bin/python3", "-m", "pytest"), "python3", False),
    (("bash",), "bash", False),
    (("/venv/bin/python3", "/home/u/vbootleg.py"), "python3", False),
])
def test_the_supervisor_must_be_a_vboot_process(cmd, name, ok):
    claim = Claim("the vboot serve supervising 'tiny'", 4200, 5200.0, VBOOT)
    assert judge(claim, proc(4200, 99, cmd, name=name, pgid=99)).owned is ok


def test_a_claim_without_a_group_does_not_check_the_group():
    claim = Claim("the vboot serve supervising 'tiny'", 4200, 5200.0, VBOOT)
    assert judge(claim, proc(4200, 99, (PY, "/venv/bin/vboot", "serve"), name="vboot", pgid=12345)).owned


def test_other_side_processes_reuse_the_rule_with_their_program():
    exporter = Claim("node exporter of 'tiny'", 4300, 5300.0, program("prometheus-node-exporter"), pgid=4300)
    assert judge(exporter, proc(4300, 1, ("/usr/bin/prometheus-node-exporter",))).owned
    assert judge(exporter, proc(4300, 1, ("/usr/bin/prometheus",))).refused


# --- roles ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, cmd, role", [
    ("VLLM::EngineCor", ENGINE, "engine_core"),
    ("python3", ENGINE, "engine_core"),  # title in argv, comm not (yet) set
    ("VLLM::EngineCor", (), "engine_core"),  # argv unreadable, comm set by setproctitle
    ("VLLM::Worker_TP", WORKER, "worker"),
    ("python3", API, "api_server"),
    ("vllm", ("/venv/bin/vllm", "serve", "m"), "api_server"),
    ("python3", TRACKER, "resource_tracker"),
    ("vllm", ("/venv/bin/vllm", "bench", "serve"), None),
    ("python3", (PY, "offline.py"), None),
])
def test_roles(name, cmd, role):
    assert classify_role(name, cmd) == role


@pytest.mark.parametrize("cmd, exe, yes", [
    ((PY, "x.py"), "", True), (("python",), "", True), (("/usr/bin/python3.12", "-c", "x"), "", True),
    (("pypy3",), "", True), (("gunicorn: worker [app]",), "/usr/bin/python3.11", True),
    (("/lib/systemd/systemd", "--user"), "/usr/lib/systemd/systemd", False), (("/sbin/tini", "--"), "", False),
    (("bash",), "/usr/bin/bash", False), (("pythonic-tool",), "/usr/bin/pythonic-tool", False),
])
def test_python_is_recognised_by_executable_or_argv0(cmd, exe, yes):
    assert is_python(proc(10, 1, cmd, exe=exe, name=cmd[0].rsplit("/", 1)[-1][:15])) is yes


# --- 2. the orphan rule -------------------------------------------------------------------------------------

def standings(*procs, with_init: bool = True) -> dict[int, Standing]:
    machine = FakeMachine(*procs, with_init=with_init)
    return {pid: j.standing for pid, j in judge_vllm_processes(machine.procs).items()}


def test_a_served_tree_has_no_orphans():
    got = standings(proc(100, 1, API), proc(101, 100, ENGINE, pgid=100), proc(102, 101, WORKER, pgid=100),
                    proc(103, 100, TRACKER, pgid=100))
    assert got == {100: Standing.SERVER, 101: Standing.SERVED, 102: Standing.SERVED, 103: Standing.SERVED}


def test_an_engine_reparented_to_init_is_an_orphan_with_its_workers_and_tracker():
    got = standings(proc(101, 1, ENGINE, pgid=100), proc(102, 101, WORKER, pgid=100), proc(103, 1, TRACKER, pgid=100))
    assert got == {101: Standing.ORPHAN, 102: Standing.ORPHAN, 103: Standing.ORPHAN}


def test_an_engine_reparented_to_a_subreaper_is_an_orphan():
    """On a desktop the nearest subreaper is `systemd --user`, not PID 1."""
    subreaper = proc(900, 1, ("/lib/systemd/systemd", "--user"), exe="/usr/lib/systemd/systemd", name="systemd")
    j = judge_vllm_processes(FakeMachine(subreaper, proc(101, 900, ENGINE, pgid=100)).procs)[101]
    assert j.standing is Standing.ORPHAN and j.launcher_pid == 0
    assert j.reason == "its launcher is gone: reparented to PID 900 (systemd)"


def test_an_engine_under_tini_in_a_container_is_an_orphan():
    assert standings(proc(1, 0, ("/sbin/tini", "--", "sh"), pgid=1), proc(101, 1, ENGINE, pgid=50),
                     with_init=False)[101] is Standing.ORPHAN


def test_an_engine_of_a_live_offline_script_is_somebodys_work():
    """`python offline.py` calling vllm.LLM(): its engine is not a leftover, whatever else runs."""
    script = proc(500, 300, (PY, "offline.py"), pgid=500)
    j = judge_vllm_processes(FakeMachine(script, proc(501, 500, ENGINE, pgid=500),
                                         proc(502, 500, TRACKER, pgid=500)).procs)
    assert j[501].standing is Standing.UNMANAGED and j[501].launcher_pid == 500
    assert j[502].standing is Standing.UNMANAGED
    assert "runs under PID 500 (python3), which is alive" in j[501].reason


@pytest.mark.parametrize("launcher", [
    (PY, "/venv/bin/vllm", "bench", "throughput", "--model", "m"),
    (PY, "/venv/bin/vllm", "run-batch", "-i", "in.jsonl"),
    (PY, "-m", "ipykernel_launcher", "-f", "kernel.json"),
    ("ray::IDLE",),  # a launcher that retitled itself: still a Python executable
])
def test_engines_of_other_live_python_launchers_are_somebodys_work(launcher):
    exe = "/usr/bin/python3.11"
    got = standings(proc(500, 300, launcher, exe=exe), proc(501, 500, ENGINE, pgid=500))
    assert got[501] is Standing.UNMANAGED


def test_a_worker_under_an_engine_of_a_live_script_is_somebodys_work_too():
    got = standings(proc(500, 300, (PY, "embed.py")), proc(501, 500, ENGINE, pgid=500),
                    proc(502, 501, WORKER, pgid=500), proc(503, 502, ("VLLM::Worker_TP1",), pgid=500))
    assert got == {501: Standing.UNMANAGED, 502: Standing.UNMANAGED, 503: Standing.UNMANAGED}


def test_a_worker_whose_engine_is_orphaned_is_an_orphan():
    j = judge_vllm_processes(FakeMachine(proc(501, 1, ENGINE, pgid=500), proc(502, 501, WORKER, pgid=500)).procs)
    assert j[502].standing is Standing.ORPHAN and "engine_core PID 501 is orphaned" in j[502].reason


def test_an_engine_whose_parent_cannot_be_seen_is_left_alone():
    # The parent exited between the two reads of the scan, or lives where we cannot see it (hidepid).
    assert standings(proc(501, 77777, ENGINE, pgid=500))[501] is Standing.UNMANAGED


def test_limit_an_orphan_under_a_python_init_looks_like_somebodys_work():
    """Documented limit, on the side of leaving it alone: PID 1 is a Python program (a container's init)."""
    got = standings(proc(1, 0, (PY, "/app/init.py"), pgid=1), proc(501, 1, ENGINE, pgid=500), with_init=False)
    assert got[501] is Standing.UNMANAGED


def test_an_unmanaged_api_server_tree_is_served():
    got = standings(proc(600, 1, ("/venv/bin/vllm", "serve", "m"), exe="/usr/bin/python3.11"),
                    proc(601, 600, ENGINE, pgid=600))
    assert got == {600: Standing.SERVER, 601: Standing.SERVED}


def test_trackers_count_only_beside_a_vllm_process_of_their_group():
    got = standings(proc(700, 1, TRACKER, pgid=700), proc(500, 300, (PY, "other.py")),
                    proc(501, 500, TRACKER, pgid=500))
    assert got == {}


def test_zombies_are_nobodys_leftovers():
    assert standings(proc(101, 1, ENGINE, pgid=100, zombie=True)) == {}


def test_nested_orphans_several_levels_deep_follow_their_engine():
    got = standings(proc(501, 1, ENGINE, pgid=500), proc(502, 501, WORKER, pgid=500),
                    proc(503, 502, ("VLLM::Worker_TP1",), pgid=500), proc(504, 503, ("VLLM::Worker_TP2",), pgid=500))
    assert set(got.values()) == {Standing.ORPHAN}
