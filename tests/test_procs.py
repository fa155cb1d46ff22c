"""vLLM process discovery from a scripted psutil table (roles, orphans, zombies); the rules themselves are
bootstrap.core.ownership's (tests/test_ownership.py)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import psutil

from bootstrap.probes import procs

INIT = (1, 0, ["/sbin/init"], "sleeping")


def table(rows):
    """A fake psutil.process_iter over (pid, ppid, cmdline, status) rows (PID 1, init, is always there)."""

    def process_iter(attrs):
        for pid, ppid, cmd, status in [INIT, *rows]:
            yield SimpleNamespace(info={"pid": pid, "ppid": ppid, "name": cmd[0].rsplit("/", 1)[-1][:15],
                                        "cmdline": cmd, "create_time": 1.0, "memory_info": SimpleNamespace(rss=1000),
                                        "status": status, "exe": None})

    return process_iter


API = ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", "/m"]
TRACKER = ["/venv/bin/python", "-B", "-c", "from multiprocessing.resource_tracker import main;main(32)"]


def test_roles_and_a_live_tree_has_no_orphans(monkeypatch):
    monkeypatch.setattr(os, "getpgid", lambda pid: 100)
    rows = [(100, 1, API, "sleeping"), (101, 100, ["VLLM::EngineCore"], "sleeping"),
            (102, 101, ["VLLM::Worker"], "sleeping"), (103, 100, TRACKER, "sleeping")]
    found = {p.pid: p for p in procs.vllm_processes(table(rows), exe=lambda pid: "")}
    assert {p: found[p].role for p in found} == {100: "api_server", 101: "engine_core", 102: "worker",
                                                 103: "resource_tracker"}
    assert not any(p.orphan for p in found.values())


def test_engine_without_its_api_server_is_an_orphan_with_its_tracker(monkeypatch):
    monkeypatch.setattr(os, "getpgid", lambda pid: 100)
    rows = [(101, 1, ["VLLM::EngineCore"], "sleeping"), (102, 101, ["VLLM::Worker"], "sleeping"),
            (103, 1, TRACKER, "sleeping")]
    found = {p.pid: p for p in procs.vllm_processes(table(rows), exe=lambda pid: "")}
    assert all(found[p].orphan for p in (101, 102, 103))
    assert found[101].standing == "orphan" and "reparented to PID 1 (init)" in found[101].reason


def test_engine_under_a_live_python_script_is_listed_but_not_an_orphan(monkeypatch):
    monkeypatch.setattr(os, "getpgid", lambda pid: 100)
    rows = [(100, 1, ["/venv/bin/python3", "offline.py"], "sleeping"), (101, 100, ["VLLM::EngineCore"], "sleeping")]
    found = {p.pid: p for p in procs.vllm_processes(table(rows), exe=lambda pid: "")}
    assert set(found) == {101}
    assert not found[101].orphan and found[101].standing == "unmanaged" and found[101].launcher_pid == 100


def test_zombies_are_not_leftovers(monkeypatch):
    monkeypatch.setattr(os, "getpgid", lambda pid: 100)
    rows = [(101, 1, ["VLLM::EngineCore"], psutil.STATUS_ZOMBIE)]
    assert procs.vllm_processes(table(rows), exe=lambda pid: "") == []


def test_unrelated_resource_trackers_are_ignored(monkeypatch):
    monkeypatch.setattr(os, "getpgid", lambda pid: pid)  # each in its own group
    assert procs.vllm_processes(table([(200, 1, TRACKER, "sleeping")]), exe=lambda pid: "") == []


def test_vllm_serve_cli_is_an_api_server(monkeypatch):
    monkeypatch.setattr(os, "getpgid", lambda pid: pid)
    [p] = procs.vllm_processes(table([(300, 1, ["/venv/bin/vllm", "serve", "/m"], "sleeping")]), exe=lambda pid: "")
    assert p.role == "api_server" and not p.orphan


def test_command_lines_shown_for_other_servers_mask_their_api_key():
    """`vboot ps` and doctor show vLLM servers vboot did not start, and port holders: never with their key."""
    import subprocess
    import sys
    import time

    from bootstrap.probes.procs import process_cmdline

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "--api-key", "s3cret-key",
                             "--api_key=other-key"])
    try:
        deadline = time.monotonic() + 10
        shown = ""
        while "--api-key" not in shown and time.monotonic() < deadline:
            shown = process_cmdline(proc.pid)
            time.sleep(0.05)
        assert "--api-key ***" in shown and "--api_key=***" in shown, shown
        assert "s3cret" not in shown and "other-key" not in shown
    finally:
        proc.kill()
        proc.wait()


def test_inspect_sees_a_real_process_its_group_create_time_and_executable():
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        seen = procs.inspect(child.pid)
        assert seen is not None and seen.pid == child.pid and seen.pgid == child.pid
        assert seen.ppid == os.getpid() and abs(seen.create_time - psutil.Process(child.pid).create_time()) < 0.01
        assert os.path.basename(seen.exe).startswith("python") and not seen.zombie
    finally:
        child.kill()
        child.wait()
    assert procs.inspect(child.pid) is None and procs.inspect(0) is None


def test_signal_pid_without_a_create_time_sends_nothing():
    """A create time of 0 proves nothing about a PID: the process must survive."""
    import subprocess

    child = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert procs.signal_pid(child.pid, 15, 0.0) is False
        assert procs.signal_pid(child.pid, 15, psutil.Process(child.pid).create_time() - 100) is False
        assert child.poll() is None
        assert procs.signal_group(0, 0) is False and procs.signal_group(1, 0) is False  # never our group or init's
    finally:
        child.kill()
        child.wait()
