"""End-to-end: a server that stays up. The real vLLM CPU build on the tiny model, real signals, a real detached
supervisor; every server on 127.0.0.1, stopped by PID at the end even on failure."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.support.cli import vboot_exe
from tests.support.e2e import chat, e2e_env, free_port, http_get, kill_tree, vllm_python

pytestmark = pytest.mark.e2e


@pytest.fixture
def e2e(tmp_path):
    return e2e_env(tmp_path, vllm_python())


def _run(env, *args, timeout=300):
    return subprocess.run([*vboot_exe(), *args], capture_output=True, text=True, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _record(env, name) -> dict:
    return json.loads((Path(env["XDG_STATE_HOME"]) / f"vboot/runs/{name}/run.json").read_text())


def _group(pgid: int) -> list[int]:
    out = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(p.info["pid"]) == pgid:
                out.append(p.info["pid"])
        except OSError:
            pass
    return out


def _alive(pids) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def _engine(pgid: int) -> int:
    for pid in _group(pgid):
        try:
            if psutil.Process(pid).cmdline()[:1] == ["VLLM::EngineCore"]:
                return pid
        except psutil.Error:
            pass
    raise AssertionError(f"no VLLM::EngineCore in group {pgid}")


def _wait_record(env, name, pred, timeout) -> dict:
    deadline = time.monotonic() + timeout
    rec = {}
    while time.monotonic() < deadline:
        try:
            rec = _record(env, name)
        except (OSError, ValueError):
            rec = {}
        if rec and pred(rec):
            return rec
        time.sleep(0.5)
    raise AssertionError(f"run {name} never reached the state wanted: {rec}")


def _cleanup(env, name, *pids):
    _run(env, "stop", name, "--timeout", "10", timeout=120)
    kill_tree([p for p in pids if p])


def test_a_detached_server_recovers_from_a_dead_engine_and_from_a_hung_one(e2e):
    """SIGKILL of the EngineCore: the detached supervisor notices, stops the rest of the tree and starts a new
    one, healthy again. SIGSTOP of the new EngineCore: /health still answers 200, the liveness generations do
    not, and the supervisor restarts it within probe interval + 2 probe timeouts + time to ready."""
    port = free_port()
    t0 = time.monotonic()
    res = _run(e2e, "serve", "tiny", "--detach", "--json", "--port", str(port), "--name", "keep", "--probe-interval",
               "5", "--probe-timeout", "5", timeout=900)
    doc = json.loads(res.stdout)
    sup = doc["data"].get("supervisor_pid", 0)
    try:
        assert res.returncode == 0, res.stderr[-3000:]
        ready_s = time.monotonic() - t0
        first = _record(e2e, "keep")
        assert first["detached"] and first["supervisor_pid"] == sup and first["state"] == "ready"
        assert psutil.Process(sup).cmdline()[1:4] == ["-m", "bootstrap", "supervise"]
        gen1 = _group(first["pgid"])
        engine = _engine(first["pgid"])

        os.kill(engine, signal.SIGKILL)
        rec = _wait_record(e2e, "keep", lambda r: r["generation"] == 2 and r["state"] == "ready",
                           timeout=60 + 3 * ready_s)
        assert rec["restarts"] == 1 and rec["last_exit"]["reason"] in ("engine_dead", "exited", "engine_gone")
        assert _alive(gen1) == [], "a process of the first generation survived the restart"
        assert chat(f"http://127.0.0.1:{port}", "qwen-tiny", max_tokens=4)["usage"]["completion_tokens"] > 0
        ps = json.loads(_run(e2e, "ps", "--json").stdout)["data"]["servers"]
        [row] = [s for s in ps if s["name"] == "keep"]
        assert row["restarts"] == 1 and row["state"] == "ready" and row["last_exit"]["reason"]
        assert (Path(rec["run_dir"]) / "vllm.log.1").is_file()  # the dead generation's log is kept

        gen2 = _group(rec["pgid"])
        engine = _engine(rec["pgid"])
        os.kill(engine, signal.SIGSTOP)
        t_stop = time.monotonic()
        status, _ = http_get(f"http://127.0.0.1:{port}/health", timeout=5)
        assert status == 200  # the hung engine's API server still says healthy: only generations tell
        rec = _wait_record(e2e, "keep", lambda r: r["generation"] == 3 and r["state"] == "ready",
                           timeout=5 + 2 * 5 + 10 + 3 * ready_s)
        took = time.monotonic() - t_stop
        assert rec["last_exit"]["reason"] == "hung" and rec["restarts"] == 2
        assert _alive(gen2) == []
        print(f"\nhang to ready again: {took:.0f} s (ready took {ready_s:.0f} s)")

        # The detached supervisor is SIGKILLed: its servers got PR_SET_PDEATHSIG and go with it.
        gen3 = _group(rec["pgid"])
        os.kill(sup, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while _alive(gen3) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _alive(gen3) == [], f"survivors of a SIGKILLed supervisor: {_alive(gen3)}"
    finally:
        _cleanup(e2e, "keep", sup)


def test_a_crash_loop_gives_up_with_exit_8_and_the_diagnosis_leaving_nothing(e2e):
    """--restart always retries even a start that cannot work (a bad vLLM argument), up to --max-restarts."""
    port = free_port()
    res = _run(e2e, "serve", "tiny", "--json", "--port", str(port), "--name", "loop", "--restart", "always",
               "--max-restarts", "2", "--", "--max-num-seqs", "not-a-number", timeout=600)
    try:
        assert res.returncode == 8, res.stderr[-3000:]
        err = json.loads(res.stdout)["errors"][0]
        assert err["code"] == "startup_failed" and "gave up on loop after 2 restart(s)" in err["message"]
        assert err["context"]["diagnosis"] == "bad_argument"
        rec = _record(e2e, "loop")
        assert rec["state"] == "failed" and rec["generation"] == 3 and rec["restarts"] == 2
        assert _group(rec["pgid"]) == []
    finally:
        _cleanup(e2e, "loop")


def test_sigterm_during_a_restart_backoff_exits_143_with_nothing_left(e2e):
    port = free_port()
    proc = subprocess.Popen([*vboot_exe(), "serve", "tiny", "--port", str(port), "--name", "backoff", "--restart",
                             "always", "--max-restarts", "20", "--", "--max-num-seqs", "not-a-number"],
                            env=e2e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        # From the third failure on the backoff is 4 s and more: SIGTERM lands inside one.
        rec = _wait_record(e2e, "backoff", lambda r: r["state"] == "restarting" and r["restarts"] >= 3, timeout=400)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143, proc.stderr.read().decode()[-2000:]
        assert _group(rec["pgid"]) == [] and _record(e2e, "backoff")["state"] == "stopped"
    finally:
        kill_tree([proc.pid])


class NotifyListener:
    """A datagram socket standing in for systemd's notify socket: records (time, message)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.5)
        self.messages: list[tuple[float, str]] = []
        self._stop = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def first(self, needle: str) -> float | None:
        return next((t for t, m in self.messages if needle in m.split("\n")), None)

    def close(self) -> None:
        self._stop = True
        self.thread.join(timeout=2)
        self.sock.close()


def test_sd_notify_ready_comes_after_a_real_chat_and_the_watchdog_stops_when_the_engine_hangs(e2e, tmp_path):
    listener = NotifyListener(tmp_path / "notify.sock")
    port = free_port()
    env = dict(e2e, NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC="8000000")  # probes every 4 s
    proc = subprocess.Popen([*vboot_exe(), "serve", "tiny", "--port", str(port), "--name", "notify",
                             "--probe-timeout", "3"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while listener.first("READY=1") is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        t_ready = listener.first("READY=1")
        assert t_ready is not None, proc.stderr.read().decode()[-3000:] if proc.poll() is not None else "no READY"
        # READY=1 came after the smoke chat had already completed: vLLM counted a finished request by then.
        _, body = http_get(f"http://127.0.0.1:{port}/metrics")
        finished = sum(float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines()
                       if line.startswith("vllm:request_success_total{"))
        assert finished >= 1
        status_before = [m for t, m in listener.messages if t < t_ready]
        assert any(m.startswith("STATUS=starting vLLM") for m in status_before)
        assert not any("WATCHDOG=1" in m for m in status_before)

        time.sleep(14)
        pings = [t for t, m in listener.messages if "WATCHDOG=1" in m.split("\n")]
        assert len(pings) >= 2, listener.messages  # keeps coming while healthy

        rec = _record(e2e, "notify")
        engine = _engine(rec["pgid"])
        os.kill(engine, signal.SIGSTOP)
        t_hang = time.monotonic()
        assert proc.wait(timeout=120) == 8  # --restart no: a hung engine ends vboot serve (systemd restarts it)
        late = [t for t, m in listener.messages if "WATCHDOG=1" in m.split("\n") and t > t_hang + 4.5]
        assert late == [], "a watchdog ping came while the engine was stopped"
        assert any("failed: vLLM's engine is hung" in m for _, m in listener.messages)
    finally:
        listener.close()
        kill_tree([proc.pid])
