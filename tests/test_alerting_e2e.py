"""End to end, at the component level: vboot's generated Prometheus and Alertmanager configurations, run by the
real programs on loopback, deliver VllmTargetDown to a webhook when a real vLLM dies.

A real tiny vLLM (`vboot serve tiny --detach`, its own HOME: never the shared ``tiny_server``), a real Prometheus
(Debian's) with vboot's prometheus.yml and rules, a real Alertmanager (Debian's 0.25) with vboot's
alertmanager.yml, and a webhook receiver (http.server in this test). The test kills vLLM's process group and
times the notification against the rule's ``for`` plus two evaluation intervals. A Slack receiver is configured
too, its URL given through an environment variable and pointing at a closed port: Alertmanager tries it (and
fails), and the URL must appear in no file but its own 0600 one, in no log and in no output.

What `vboot serve --prometheus` will add on top (starting Alertmanager under its supervisor) is the lead's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bootstrap.core import alerting
from bootstrap.core.alerting import (
    ALERTMANAGER_DIR,
    LOG_FILE,
    SLACK_URL_FILE,
    RouteTiming,
    alertmanager_argv,
    render_alertmanager_files,
    resolve_receivers,
    write_private_files,
)
from bootstrap.core.environ import Environ
from bootstrap.core.profiles import AlertsSpec
from bootstrap.core.prom import RULES_FILE, AlertThresholds, render_prometheus_config, render_rules
from tests.support.cli import vboot_exe
from tests.support.e2e import e2e_env, free_port, http_get, kill_tree, missing, vllm_python

pytestmark = pytest.mark.e2e

FOR_S = 5.0  # VllmTargetDown's `for`, short for the test (AlertThresholds.target_down_for_s)
EVAL_S = 1.0  # Prometheus' evaluation interval
SCRAPE_S = 0.5
JOB = "vllm-alert-e2e"


class WebhookReceiver:
    """Alertmanager's webhook target: records (monotonic time, JSON body) of every POST."""

    def __init__(self) -> None:
        self.posts: list[tuple[float, dict]] = []
        self.cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.cond:
                    outer.posts.append((time.monotonic(), json.loads(body)))
                    outer.cond.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/t0ken"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, alertname: str, timeout: float) -> tuple[float, dict] | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, doc in self.posts:
                    if doc.get("status") == "firing" and any(
                            a["labels"].get("alertname") == alertname for a in doc.get("alerts", [])):
                        return t, doc
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _query(prom_url: str, q: str) -> list[dict]:
    status, body = http_get(f"{prom_url}/api/v1/query?{urllib.parse.urlencode({'query': q})}", timeout=5)
    assert status == 200, body[:300]
    return json.loads(body)["data"]["result"]


def _wait(what: str, check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.25)


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)


def test_vllm_target_down_reaches_a_webhook_through_prometheus_and_alertmanager(tmp_path):
    prometheus = shutil.which("prometheus")
    am_exe = next((p for p in map(shutil.which, alerting.PROGRAMS) if p), None)
    if prometheus is None or am_exe is None or shutil.which("amtool") is None:
        missing("needs prometheus and prometheus-alertmanager (apt-get install -y prometheus prometheus-alertmanager)")
    vllm_py = vllm_python()

    hook = WebhookReceiver()
    slack_token = f"T0E2E/B0E2E/{os.urandom(8).hex()}"
    slack_url = f"http://127.0.0.1:{free_port()}/services/{slack_token}"  # closed port: delivery fails
    user_env = Environ({"E2E_ALERT_HOOK": hook.url, "E2E_SLACK_WEBHOOK": slack_url})
    receivers = resolve_receivers(AlertsSpec(webhook_url_env="E2E_ALERT_HOOK",
                                             slack_webhook_url_env="E2E_SLACK_WEBHOOK",
                                             slack_channel="#vllm-e2e"), user_env, source="the test's profile")

    run = tmp_path / "run"
    run.mkdir()
    am_dir = run / ALERTMANAGER_DIR
    write_private_files(am_dir, render_alertmanager_files(
        receivers, am_dir, RouteTiming(group_wait_s=0, group_interval_s=1, repeat_interval_s=3600)))
    check = subprocess.run(alerting.amtool_check_argv("amtool", am_dir / alerting.CONFIG_FILE), capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    port, am_port, prom_port = free_port(), free_port(), free_port()
    thresholds = AlertThresholds(target_down_for_s=FOR_S)
    (run / "prometheus.yml").write_text(render_prometheus_config(
        JOB, f"127.0.0.1:{port}", scrape_interval_s=SCRAPE_S, evaluation_interval_s=EVAL_S,
        alertmanagers=[f"127.0.0.1:{am_port}"]))
    (run / RULES_FILE).write_text(render_rules(thresholds))

    env = e2e_env(tmp_path / "vllm", vllm_py)
    pid = None
    am = prom = None
    outputs: list[str] = []
    try:
        served = subprocess.run([*vboot_exe(), "serve", "tiny", "--detach", "--json", "--port", str(port),
                                 "--name", "alert-e2e"], capture_output=True, text=True, env=env, timeout=900,
                                stdin=subprocess.DEVNULL)
        outputs += [served.stdout, served.stderr]
        assert served.returncode == 0, served.stdout + served.stderr[-3000:]
        pid = json.loads(served.stdout)["data"]["pid"]

        # The children hold their own copies of the log files' descriptors: this process closes its own.
        with open(am_dir / LOG_FILE, "wb") as am_log:
            am = subprocess.Popen(alertmanager_argv(am_exe, am_dir, am_port), stdout=am_log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        with open(run / "prometheus.log", "wb") as prom_log:
            prom = subprocess.Popen([prometheus, f"--config.file={run / 'prometheus.yml'}",
                                     f"--storage.tsdb.path={run / 'prometheus-data'}",
                                     f"--web.listen-address=127.0.0.1:{prom_port}"], cwd=run, stdout=prom_log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        prom_url, am_url = f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{am_port}"
        _wait("Alertmanager ready", lambda: http_get(f"{am_url}/-/ready", timeout=2)[0] == 200, 30)
        _wait("Prometheus to scrape vLLM", lambda: any(
            r["value"][1] == "1" for r in _query(prom_url, f'up{{job="{JOB}"}}')), 60)
        _wait("Prometheus to find Alertmanager", lambda: json.loads(http_get(
            f"{prom_url}/api/v1/alertmanagers", timeout=2)[1])["data"]["activeAlertmanagers"], 30)
        assert not [a for a in json.loads(http_get(f"{prom_url}/api/v1/alerts")[1])["data"]["alerts"]
                    if a["labels"]["alertname"] == "VllmTargetDown"]

        os.killpg(pid, signal.SIGKILL)  # the API server, EngineCore and the rest of vLLM's group, at once
        killed_at = time.monotonic()
        got = hook.wait_for("VllmTargetDown", timeout=FOR_S + 60)
        assert got is not None, f"no VllmTargetDown at the webhook; posts: {hook.posts}"
        received_at, doc = got
        elapsed = received_at - killed_at
        budget = FOR_S + 2 * EVAL_S
        print(f"\nVllmTargetDown reached the webhook {elapsed:.2f}s after the kill (for {FOR_S:g}s + 2 x {EVAL_S:g}s "
              f"evaluation = {budget:g}s budget)")
        assert elapsed <= budget, f"VllmTargetDown arrived {elapsed:.2f}s after the kill; budget {budget:.1f}s"
        [alert] = [a for a in doc["alerts"] if a["labels"]["alertname"] == "VllmTargetDown"]
        assert alert["status"] == "firing" and alert["labels"]["job"] == JOB
        assert alert["labels"]["instance"] == f"127.0.0.1:{port}" and alert["labels"]["severity"] == "critical"
        assert f"127.0.0.1:{port}" in alert["annotations"]["summary"]
        assert doc["receiver"] == alerting.RECEIVER

        # Alertmanager tried Slack too (so the checks below look at a URL it really used), redacted in its log.
        _wait("Alertmanager's Slack attempt", lambda: b"integration=slack" in (am_dir / LOG_FILE).read_bytes(), 15)
        status = json.loads(http_get(f"{am_url}/api/v2/status")[1])
        outputs.append(json.dumps(status))
    finally:
        _stop(prom)
        _stop(am)
        if pid is not None:
            subprocess.run([*vboot_exe(), "stop", "alert-e2e", "--timeout", "10"], env=env, capture_output=True,
                           timeout=60)
            kill_tree([pid])
        hook.close()

    # The Slack URL (a secret) is in exactly one file, 0600 in a 0700 folder; in no log, no output, no API answer.
    holders = [p for p in tmp_path.rglob("*") if p.is_file() and slack_token.encode() in p.read_bytes()]
    assert holders == [am_dir / SLACK_URL_FILE], holders
    assert oct((am_dir / SLACK_URL_FILE).stat().st_mode & 0o777) == "0o600"
    assert oct(am_dir.stat().st_mode & 0o777) == "0o700"
    assert b"<redacted>" in (am_dir / LOG_FILE).read_bytes()
    for text in outputs:
        assert slack_token not in text
