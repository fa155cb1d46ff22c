"""`vboot stop`, `ps`, `logs`, `top`, `disk` against real processes and real (forged, broken) run records.

The victim is a real `sleep` in its own session; forged records point at it in every way the ownership rule
must catch. Stand-ins for vLLM API servers are real Python processes whose command line carries vLLM's
server module (what the rule recognises); they need no vLLM, so these tests run in the unit suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bootstrap.core.environ import Environ
from bootstrap.core.paths import runs_dir
from bootstrap.core.runs import RunRecord, save_run
from tests.support.e2e import kill_tree

TIMEOUT_S = 30  # every command must return promptly: a blocked read would hang here


def _start(argv: list[str]) -> psutil.Process:
    proc = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    p = psutil.Process(proc.pid)
    deadline = time.monotonic() + 10
    while argv[-1] not in p.cmdline() and time.monotonic() < deadline:  # until exec has happened
        time.sleep(0.02)
    return p


@pytest.fixture
def victim():
    """An unrelated process (a user's `sleep`, leader of its own session) that vboot must never signal."""
    p = _start(["sleep", "600"])
    yield p
    kill_tree([p.pid])


@pytest.fixture
def standins():
    """Factory of stand-in vLLM API servers (real processes, each leading its own group)."""
    made: list[psutil.Process] = []

    def make() -> psutil.Process:
        p = _start([sys.executable, "-c", "import time; time.sleep(600)", "-m", "vllm.entrypoints.openai.api_server",
                    "--port", "1"])
        made.append(p)
        return p

    yield make
    kill_tree([p.pid for p in made])


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _record(env: dict, name: str, pid: int, create_time: float, pgid: int | None = None, **kw) -> Path:
    run_dir = runs_dir(Environ(env)) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    rec = RunRecord(name=name, profile="tiny", run_dir=str(run_dir), pid=pid, pid_create_time=create_time,
                    pgid=pid if pgid is None else pgid, host="127.0.0.1", port=18000, served_model_name="m",
                    model_id="m", model_path="/m", started_at=time.time(), **kw)
    return save_run(rec)


def _stop(run_vboot, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    res = run_vboot("stop", *args, "--json", "--timeout", "5", timeout=TIMEOUT_S)
    return res, json.loads(res.stdout)


# --- forged and stale records never signal a process vboot did not start -----------------------------------

def test_a_record_without_a_create_time_never_signals_its_pid(run_vboot, isolated_env, victim):
    path = _record(isolated_env, "zero", victim.pid, 1.0)
    raw = json.loads(path.read_text()) | {"pid_create_time": 0}
    path.write_text(json.dumps(raw))
    res, doc = _stop(run_vboot, "zero")
    assert res.returncode == 4 and doc["errors"][0]["code"] == "run_record_invalid", res.stdout
    assert "pid_create_time" in doc["errors"][0]["message"] and str(path.parent) in doc["errors"][0]["hint"]
    time.sleep(0.2)
    assert _alive(victim)


def test_a_recorded_group_that_is_not_the_servers_is_never_signalled(run_vboot, isolated_env, victim, standins):
    server = standins()
    _record(isolated_env, "group", server.pid, server.create_time(), pgid=victim.pid)
    res, doc = _stop(run_vboot, "group")
    assert res.returncode == 7 and doc["errors"][0]["code"] == "not_vboots"
    assert f"not in the recorded group {victim.pid}" in doc["errors"][0]["message"]
    time.sleep(0.2)
    assert _alive(victim) and _alive(server)


def test_a_pid_recycled_to_an_unrelated_process_is_not_a_server(run_vboot, isolated_env, victim):
    _record(isolated_env, "recycled", victim.pid, victim.create_time() - 1000)
    res, doc = _stop(run_vboot, "recycled")
    assert res.returncode == 4 and doc["errors"][0]["message"].startswith("no running server named 'recycled'")
    time.sleep(0.2)
    assert _alive(victim)


def test_a_record_copying_an_unrelated_process_create_time_is_refused(run_vboot, isolated_env, victim):
    _record(isolated_env, "impostor", victim.pid, victim.create_time())
    res, doc = _stop(run_vboot, "impostor")
    assert res.returncode == 7 and f"PID {victim.pid} (sleep) is not a vLLM API server" in doc["errors"][0]["message"]
    time.sleep(0.2)
    assert _alive(victim)


def test_a_prometheus_pid_pointing_at_an_unrelated_process_is_left_alone(run_vboot, isolated_env, victim, standins):
    server = standins()
    _record(isolated_env, "prom", server.pid, server.create_time(), prometheus_pid=victim.pid,
            prometheus_create_time=victim.create_time(), prometheus_port=9090)
    res, doc = _stop(run_vboot, "prom")
    assert res.returncode == 0 and doc["status"] == "warn", res.stdout + res.stderr
    assert doc["data"]["servers"] == ["prom"] and server.pid in doc["data"]["stopped"]
    assert [(r["what"], r["pid"]) for r in doc["data"]["refused"]] == [("Prometheus of 'prom'", victim.pid)]
    assert not _alive(server) and _alive(victim)


def test_a_supervisor_pid_pointing_at_an_unrelated_process_is_left_alone(run_vboot, isolated_env, victim, standins):
    server = standins()
    _record(isolated_env, "sup", server.pid, server.create_time(), supervisor_pid=victim.pid,
            supervisor_create_time=victim.create_time())
    res, doc = _stop(run_vboot, "sup")
    assert res.returncode == 0 and [r["pid"] for r in doc["data"]["refused"]] == [victim.pid]
    assert not _alive(server) and _alive(victim)


def test_stop_all_over_every_forgery_at_once_signals_only_what_is_vboots(run_vboot, isolated_env, victim, standins):
    ours, moved = standins(), standins()
    _record(isolated_env, "ours", ours.pid, ours.create_time())
    _record(isolated_env, "moved", moved.pid, moved.create_time(), pgid=victim.pid)
    _record(isolated_env, "impostor", victim.pid, victim.create_time())
    _record(isolated_env, "recycled", victim.pid, victim.create_time() + 5000)
    zero = _record(isolated_env, "zero", victim.pid, 1.0)
    zero.write_text(json.dumps(json.loads(zero.read_text()) | {"pid_create_time": 0.0}))
    res, doc = _stop(run_vboot, "--all")
    assert res.returncode == 0 and doc["data"]["servers"] == ["ours"], res.stdout + res.stderr
    assert {r["pid"] for r in doc["data"]["refused"]} == {moved.pid, victim.pid}
    assert any(str(zero) in w for w in doc["data"]["warnings"])
    time.sleep(0.2)
    assert _alive(victim) and _alive(moved) and not _alive(ours)


def test_stop_pid_refuses_an_unrelated_process(run_vboot, victim):
    res, doc = _stop(run_vboot, "--pid", str(victim.pid))
    assert res.returncode == 2 and "is not a vLLM process" in doc["errors"][0]["message"]
    time.sleep(0.2)
    assert _alive(victim)


# --- malformed records and a FIFO in the runs directory: every command returns, with a warning -------------

@pytest.fixture
def broken_runs(isolated_env):
    """A runs directory holding every kind of broken record, a FIFO, and one good (stopped) run with a log."""
    base = runs_dir(Environ(isolated_env))
    good = _record(isolated_env, "old", 2**22 + 12345, 1.0).parent
    (good / "vllm.log").write_text("the old log\n")
    broken = {}
    for name, text in (("badjson", '{"name": "badjson",'), ("types", None), ("missing", '{"name": "missing"}')):
        d = base / name
        d.mkdir()
        if text is None:
            text = json.dumps(json.loads((good / "run.json").read_text()) | {"name": name, "run_dir": str(d),
                                                                             "pid": "12"})
        (d / "run.json").write_text(text)
        broken[name] = d / "run.json"
    (base / "fifo").mkdir()
    os.mkfifo(base / "fifo" / "run.json")
    broken["fifo"] = base / "fifo" / "run.json"
    (base / "dir" / "run.json").mkdir(parents=True)
    broken["dir"] = base / "dir" / "run.json"
    os.mkfifo(base / "pipe")
    broken["pipe"] = base / "pipe"
    return broken


def _names_every_file(text: str, broken: dict) -> None:
    for path in broken.values():
        assert str(path) in text, f"{path} not named in:\n{text}"


def test_ps_skips_broken_records_with_warnings(run_vboot, broken_runs):
    res = run_vboot("ps", "--json", timeout=TIMEOUT_S)
    doc = json.loads(res.stdout)
    assert res.returncode == 0 and doc["status"] == "warn"
    _names_every_file("\n".join(doc["data"]["warnings"]), broken_runs)
    human = run_vboot("ps", timeout=TIMEOUT_S)
    assert human.returncode == 0 and "Traceback" not in human.stderr
    _names_every_file(human.stderr.replace("\n", ""), broken_runs)


def test_stop_all_skips_broken_records_with_warnings(run_vboot, broken_runs):
    res = run_vboot("stop", "--all", "--json", timeout=TIMEOUT_S)
    doc = json.loads(res.stdout)
    assert res.returncode == 0 and doc["data"]["stopped"] == []
    _names_every_file("\n".join(doc["data"]["warnings"]), broken_runs)


@pytest.mark.parametrize("name", ["fifo", "dir", "badjson", "pipe"])
def test_stop_or_logs_of_a_broken_record_name_it_in_one_line(run_vboot, broken_runs, name):
    for args in (("stop", name), ("logs", name)):
        res = run_vboot(*args, timeout=TIMEOUT_S)
        assert res.returncode == 4 and "Traceback" not in res.stderr
        assert f"the run record of {name!r} is malformed" in res.stderr


def test_logs_without_a_name_shows_the_last_good_run_and_warns(run_vboot, broken_runs):
    res = run_vboot("logs", timeout=TIMEOUT_S)
    assert res.returncode == 0 and res.stdout == "the old log\n"
    _names_every_file(res.stderr.replace("\n", ""), broken_runs)


def test_top_once_returns_promptly_and_warns(run_vboot, broken_runs):
    res = run_vboot("top", "--once", timeout=TIMEOUT_S)
    assert res.returncode == 4 and "no vboot server is running" in res.stderr and "Traceback" not in res.stderr
    _names_every_file(res.stderr.replace("\n", ""), broken_runs)
    res = run_vboot("top", "fifo", "--once", "--json", timeout=TIMEOUT_S)
    assert res.returncode == 4 and json.loads(res.stdout)["errors"][0]["code"] == "not_found"


def test_disk_caches_and_clean_return_promptly_and_warn(run_vboot, broken_runs):
    res = run_vboot("disk", "caches", "--json", timeout=TIMEOUT_S)
    doc = json.loads(res.stdout)
    assert res.returncode == 0 and doc["status"] == "warn"
    _names_every_file("\n".join(doc["data"]["warnings"]), broken_runs)
    res = run_vboot("disk", "clean", "--partial", "--dry-run", "--json", timeout=TIMEOUT_S)
    assert res.returncode == 0
    _names_every_file("\n".join(json.loads(res.stdout)["data"]["warnings"]), broken_runs)


def test_serve_of_any_name_gets_past_broken_records(isolated_env, broken_runs):
    """serve reads the record of its own name and the live runs; a FIFO there must not block it. The
    pre-flight is replaced so that nothing starts: reaching it is the proof."""
    script = (
        "import sys\n"
        "import bootstrap.core.preflight as preflight\n"
        "class Reached(Exception): pass\n"
        "def fake(settings, env, *, check_ids=(), collab=None):\n"
        "    assert collab.live_runs() == []\n"
        "    raise Reached\n"
        "preflight.diagnose = fake\n"
        "from bootstrap.cli.main import cli\n"
        "from bootstrap.core.errors import ConflictError\n"
        "for name in ('fifo', 'dir', 'pipe', 'badjson', 'other'):\n"
        "    try:\n"
        "        cli.main(['serve', 'tiny', '--name', name], standalone_mode=False)\n"
        "    except Reached:\n"
        "        print('reached', name)\n"
        "    except ConflictError as exc:\n"
        "        print('refused', name, exc.message.split(' is not')[0].rsplit('/', 1)[-1])\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=isolated_env,
                         timeout=TIMEOUT_S)
    # A run.json that is no plain file (or a run directory that is none) is refused by name before the
    # pre-flight: serve would otherwise fail half-way, after starting vLLM, when it writes its record there.
    assert res.stdout.split("\n")[:-1] == ["refused fifo run.json", "refused dir run.json", "refused pipe pipe",
                                           "reached badjson", "reached other"], res.stderr[-2000:]
