"""End-to-end: a vLLM engine under a live launcher is somebody's work; one whose launcher died is an orphan.

The engines here are real processes titled ``VLLM::EngineCore`` by ``setproctitle`` from the vLLM environment,
the call vLLM itself makes (vllm.utils.system_utils.set_process_title), so /proc shows exactly what it shows
for a real engine: the title as argv[0] and as comm, a Python executable. A real ``vllm.LLM()`` would take
minutes of both cores to start; what `vboot ps`, doctor and `vboot stop --orphans` judge is the title and the
parentage, which these processes have for real. (The real vLLM orphan of an API server killed by SIGKILL is
tests/test_serve_e2e.py::test_orphaned_engine_is_listed_by_ps_and_removed_by_stop_orphans.)

Marked e2e: `vboot stop --orphans` acts on the whole machine, so it runs with the end-to-end suite, not beside
other people's unit tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil
import pytest

from tests.support.cli import vboot_exe
from tests.support.e2e import kill_tree, vllm_python

pytestmark = pytest.mark.e2e

ENGINE = ("import setproctitle, time; setproctitle.setproctitle('VLLM::EngineCore'); time.sleep(600)")


def _launcher(vllm_py: str, stay: bool) -> tuple[subprocess.Popen, int]:
    """A Python launcher that starts one engine (as vllm.LLM() does: a child in its process group), then stays
    alive (somebody's offline job) or exits at once (its engine is orphaned). Returns it and the engine's PID."""
    code = ("import subprocess, sys, time\n"
            f"child = subprocess.Popen([{vllm_py!r}, '-c', {ENGINE!r}])\n"
            "print(child.pid, flush=True)\n"
            + ("time.sleep(600)\n" if stay else ""))
    launcher = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                                start_new_session=True, stdin=subprocess.DEVNULL)
    engine = int(launcher.stdout.readline())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            p = psutil.Process(engine)
            if p.cmdline()[:1] == ["VLLM::EngineCore"] and (stay or p.ppid() != launcher.pid):
                return launcher, engine
        except psutil.NoSuchProcess:
            raise AssertionError("the engine stand-in exited") from None
        time.sleep(0.05)
    raise AssertionError("the engine never took its title (or was never reparented)")


def _vboot(env: dict, *args: str) -> dict:
    res = subprocess.run([*vboot_exe(), *args, "--json"], capture_output=True, text=True, env=env, timeout=120,
                         stdin=subprocess.DEVNULL)
    return json.loads(res.stdout)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_an_engine_under_a_live_parent_survives_stop_orphans_and_an_orphaned_one_does_not(isolated_env):
    vllm_py = vllm_python()
    live_launcher, live_engine = _launcher(vllm_py, stay=True)
    dead_launcher, orphan = _launcher(vllm_py, stay=False)
    try:
        dead_launcher.wait(timeout=10)
        assert psutil.Process(orphan).ppid() != dead_launcher.pid  # reparented: init or a subreaper

        ps = _vboot(isolated_env, "ps")["data"]
        assert orphan in {o["pid"] for o in ps["orphans"]}
        assert live_engine not in {o["pid"] for o in ps["orphans"]}
        assert {(e["pid"], e["launcher_pid"]) for e in ps["unmanaged_engines"]} >= {(live_engine, live_launcher.pid)}

        doctor = _vboot(isolated_env, "doctor", "--check", "leftovers")
        [leftovers] = [c for c in doctor["data"]["checks"] if c["id"] == "leftovers"]
        assert orphan in {o["pid"] for o in leftovers["data"]["orphans"]}
        assert live_engine not in {o["pid"] for o in leftovers["data"]["orphans"]}
        assert live_engine in {o["pid"] for o in leftovers["data"]["unmanaged"]}

        stop = _vboot(isolated_env, "stop", "--orphans", "--timeout", "5")
        assert stop["exit_code"] == 0, stop
        assert orphan in stop["data"]["stopped"] and live_engine not in stop["data"]["stopped"]
        assert live_engine in {e["pid"] for e in stop["data"]["spared"]}
        deadline = time.monotonic() + 15
        while _alive(orphan) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(orphan)
        assert _alive(live_engine) and live_launcher.poll() is None

        # Named explicitly, it can be stopped; its launcher is somebody's program and stays.
        named = _vboot(isolated_env, "stop", "--pid", str(live_engine), "--timeout", "5")
        assert named["exit_code"] == 0 and named["data"]["stopped"] == [live_engine], named
        assert not _alive(live_engine) and live_launcher.poll() is None
    finally:
        kill_tree([live_launcher.pid, live_engine, orphan])
