"""End-to-end: the generated rules in a real Prometheus and `vboot top` against a real vLLM.

Uses the session fixture ``tiny_server`` (tests/conftest.py): the tiny model served by real vLLM through
`vboot serve tiny --prometheus`, scraped by a real Prometheus (``tiny_server.prometheus_url``) that loads the
config and rules this project generates.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from bootstrap.core.prom import ALERT_GROUP, RECORDING_GROUP, recording_rule_names
from tests.support.cli import vboot_exe

pytestmark = pytest.mark.e2e


@contextmanager
def requests_in_flight(url: str, model: str, concurrency: int = 4, max_tokens: int = 300):
    """Keep ``concurrency`` chat completions running until the block ends (long ones: ignore_eos)."""
    stop = threading.Event()
    done = []
    errors: list[str] = []  # what the server answered when a request failed (shown when an assertion fails)

    def loop(index: int) -> None:
        # Different lengths, so the requests do not all finish (and leave the batch empty) at the same moment.
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Count to a thousand."}],
                           "max_tokens": max_tokens + 37 * index, "ignore_eos": True, "temperature": 0.8}).encode()
        while not stop.is_set():
            req = urllib.request.Request(f"{url}/v1/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=120) as resp:
                    resp.read()
                done.append(1)
            except urllib.error.HTTPError as exc:
                errors.append(f"HTTP {exc.code}: {exc.read()[:300]!r}")
                time.sleep(0.2)
            except OSError as exc:
                errors.append(repr(exc))
                time.sleep(0.2)

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    requests_in_flight.errors = errors
    try:
        yield done
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)


def prom_query(prom_url: str, query: str) -> list[dict]:
    url = f"{prom_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_evaluates_every_recording_rule_against_real_vllm(tiny_server):
    prom = tiny_server.prometheus_url
    assert prom, "the shared server was started without --prometheus"
    with urllib.request.urlopen(f"{prom}/api/v1/rules", timeout=10) as resp:
        groups = {g["name"]: g for g in json.loads(resp.read())["data"]["groups"]}
    assert {RECORDING_GROUP, ALERT_GROUP} <= set(groups), "Prometheus did not load the generated rules file"
    unhealthy = [(r["name"], r.get("lastError")) for g in groups.values() for r in g["rules"]
                 if r.get("health") not in ("ok", "unknown")]
    assert not unhealthy

    missing = recording_rule_names()
    values: dict[str, list[dict]] = {}
    with requests_in_flight(tiny_server.url, tiny_server.served_model_name, max_tokens=64):
        deadline = time.monotonic() + 90
        while missing and time.monotonic() < deadline:
            for name in list(missing):
                result = prom_query(prom, f'{name}{{model_name="{tiny_server.served_model_name}"}}')
                if result:
                    values[name] = result
                    missing.remove(name)
            time.sleep(1)
        assert not missing, f"no value from Prometheus for {missing}"
        # Under load the throughput series become real numbers above zero; the first evaluation after a series
        # appears can still see a flat counter, so wait for later ones.
        gen_rule = "model_name:vllm_generation_tokens:rate1m"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            result = prom_query(prom, f'{gen_rule}{{model_name="{tiny_server.served_model_name}"}}')
            if result and float(result[0]["value"][1]) > 0:
                values[gen_rule] = result
                break
            time.sleep(1)
        for name in ("model_name:vllm_ttft_seconds:histogram_quantile_1m",):
            result = prom_query(prom, f'{name}{{model_name="{tiny_server.served_model_name}"}}')
            if result:
                values[name] = result
    gen = float(values[gen_rule][0]["value"][1])
    assert gen > 0, requests_in_flight.errors[-3:]
    ttft = {r["metric"]["quantile"]: float(r["value"][1])
            for r in values["model_name:vllm_ttft_seconds:histogram_quantile_1m"]}
    assert set(ttft) == {"0.5", "0.95", "0.99"}
    assert all(not math.isnan(v) and v > 0 for v in ttft.values())


def test_top_once_json_reports_generation_throughput_and_request_counts(tiny_server):
    with requests_in_flight(tiny_server.url, tiny_server.served_model_name) as done:
        deadline = time.monotonic() + 60
        while not done and time.monotonic() < deadline:  # the first requests finished: the engine is busy
            time.sleep(0.2)
        # By run name, with the server's own vboot state (as a user would after `vboot serve tiny`).
        # The running gauge is a point sample that vLLM updates as its engine reports; on a loaded box it read 0
        # five times in a row once (CI, 2026-12-07, with the requests running), so up to 10 tries.
        runs = []
        for _ in range(10):
            result = tiny_server.vboot("top", tiny_server.name, "--once", "--json", "--interval", "2", timeout=60)
            assert result.returncode == 0, result.stderr
            data = json.loads(result.stdout)["data"]
            runs.append(data)
            if data["requests_running"] + data["requests_waiting"] >= 1:
                break
    assert data["url"] == tiny_server.url
    assert data["up"] is True and data["model_name"] == tiny_server.served_model_name
    assert all(d["generation_tokens_per_s"] > 0 for d in runs)
    assert data["requests_running"] + data["requests_waiting"] >= 1, (
        [(d["requests_running"], d["requests_waiting"]) for d in runs], len(done), requests_in_flight.errors[-3:],
        [line for line in urllib.request.urlopen(f"{tiny_server.url}/metrics").read().decode().splitlines()
         if line.startswith("vllm:num_requests")])
    assert 0 <= data["kv_cache_usage"] <= 1
    assert data["itl_s"]["p50"] is not None
    assert data["gpus"] == [] or all("memory_total_bytes" in g for g in data["gpus"])


def _tmux() -> str:
    exe = shutil.which("tmux")
    if exe is None:
        pytest.fail("tmux is not installed (apt-get install -y tmux): the full-screen test needs a terminal")
    return exe


@contextmanager
def top_in_tmux(url: str, tmp_path: Path, interval: float = 0.5):
    """`vboot top URL` in a detached 100x32 tmux session; yields (send_keys, capture, exit_code)."""
    tmux = _tmux()
    sock = f"vboot-top-{uuid.uuid4().hex[:8]}"
    rc_file = tmp_path / "rc"
    cmd = " ".join([*vboot_exe(), "top", url, "--interval", str(interval)])
    subprocess.run([tmux, "-L", sock, "new-session", "-d", "-x", "100", "-y", "32",
                    f"{cmd}; echo $? > {rc_file}; sleep 60"], check=True)

    def send(*keys: str) -> None:
        subprocess.run([tmux, "-L", sock, "send-keys", "-t", "0", *keys], check=True)

    def capture() -> str:
        return subprocess.run([tmux, "-L", sock, "capture-pane", "-p", "-t", "0"], capture_output=True,
                              text=True).stdout

    def exit_code(timeout: float = 15) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if rc_file.exists() and rc_file.read_text().strip():
                return int(rc_file.read_text())
            time.sleep(0.1)
        return None

    try:
        yield send, capture, exit_code
    finally:
        subprocess.run([tmux, "-L", sock, "kill-server"], capture_output=True)


def _wait_for_refreshes(capture, count: int, timeout: float = 30) -> str:
    """Wait until the clock line of the view showed ``count`` different times; returns the last screen."""
    seen: set[str] = set()
    screen = ""
    deadline = time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < deadline:
        screen = capture()
        for line in screen.splitlines():
            if "refresh" in line and "quit" in line:
                seen.add(line.split("·")[0].strip())
        time.sleep(0.2)
    assert len(seen) >= count, f"the view refreshed {len(seen)} times:\n{screen}"
    return screen


def test_full_screen_view_refreshes_and_quits_on_q(tiny_server, tmp_path):
    with top_in_tmux(tiny_server.url, tmp_path) as (send, capture, exit_code):
        screen = _wait_for_refreshes(capture, 3)
        assert "UP" in screen and "time to first token" in screen and "GPUs" in screen
        send("q")
        assert exit_code() == 0
        assert "Traceback" not in capture()


def test_full_screen_view_exits_cleanly_on_ctrl_c(tiny_server, tmp_path):
    with top_in_tmux(tiny_server.url, tmp_path) as (send, capture, exit_code):
        _wait_for_refreshes(capture, 2)
        send("C-c")
        assert exit_code() == 0
        assert "Traceback" not in capture()


def test_full_screen_view_shows_a_vanished_server_as_down(tmp_path):
    """No server on the port at all: the view stays up and says DOWN (then q still quits)."""
    from tests.support.e2e import free_port

    with top_in_tmux(f"http://127.0.0.1:{free_port()}", tmp_path) as (send, capture, exit_code):
        screen = _wait_for_refreshes(capture, 2)
        assert "DOWN" in screen and "connection refused" in screen
        send("q")
        assert exit_code() == 0
