"""End-to-end: `vboot serve` with the real vLLM CPU build on the tiny model, a real Prometheus, real signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import yaml

from tests.support.cli import vboot_exe
from tests.support.e2e import chat, e2e_env, free_port, http_get, http_json, kill_tree, vllm_python, wait_http

pytestmark = pytest.mark.e2e


def _alive(pids):
    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def _tree(pid: int) -> list[int]:
    """The server's process group (API server, EngineCore, workers, resource tracker)."""
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.info["pid"]) == pid:
                out.append(p.info["pid"])
        except OSError:
            pass
    return out


# --- the shared detached server --------------------------------------------------------------------------

def test_detached_server_answers_chat_and_exposes_metrics(tiny_server):
    reply = chat(tiny_server.url, tiny_server.served_model_name, max_tokens=8)
    assert reply["model"] == "qwen-tiny"
    assert reply["usage"]["completion_tokens"] > 0
    status, body = http_get(f"{tiny_server.url}/metrics")
    assert status == 200
    assert b"vllm:num_requests_waiting" in body


def test_serve_json_reports_the_server_and_a_smoke_request(tiny_server):
    d = tiny_server.data
    assert d["served_model_name"] == "qwen-tiny" and d["pid"] > 0 and d["url"].startswith("http://127.0.0.1:")
    assert d["smoke"]["ok"] and d["smoke"]["completion_tokens"] > 0
    assert d["device"] == "cpu" and d["device_reason"] == "CPU: auto, no usable NVIDIA GPU"


def test_run_dir_holds_command_env_log_and_scrape_config(tiny_server):
    run = Path(tiny_server.run_dir)
    cmdline = (run / "cmdline").read_text()
    assert "vllm.entrypoints.openai.api_server" in cmdline and f"--port {tiny_server.port}" in cmdline
    env = json.loads((run / "env.json").read_text())["set_by_vboot"]
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert "Application startup complete" in (run / "vllm.log").read_text(errors="replace")
    cfg = yaml.safe_load((run / "prometheus.yml").read_text())
    targets = [t for job in cfg["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert f"127.0.0.1:{tiny_server.port}" in targets
    assert int((run / "vllm.pid").read_text()) == tiny_server.pid


def test_child_environment_really_has_the_allocator_setting(tiny_server):
    environ = psutil.Process(tiny_server.pid).environ()
    assert environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert environ["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_promtool_accepts_generated_config(tiny_server):
    res = subprocess.run(["promtool", "check", "config", str(Path(tiny_server.run_dir) / "prometheus.yml")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_real_prometheus_scrapes_the_server(tiny_server):
    prom = tiny_server.prometheus_url
    assert prom
    deadline = time.monotonic() + 90
    while True:
        targets = http_json(f"{prom}/api/v1/targets")["data"]["activeTargets"]
        if targets and all(t["health"] == "up" for t in targets):
            break
        assert time.monotonic() < deadline, f"target not up: {targets}"
        time.sleep(1)
    while True:
        res = http_json(f"{prom}/api/v1/query?query=vllm:num_requests_running")["data"]["result"]
        if res:
            break
        assert time.monotonic() < deadline, "no vllm:num_requests_running series"
        time.sleep(1)
    assert res[0]["metric"]["model_name"] == "qwen-tiny"


def test_ps_lists_the_server_as_healthy(tiny_server):
    res = tiny_server.vboot("ps", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    servers = {s["name"]: s for s in doc["data"]["servers"]}
    s = servers["shared"]
    assert s["pid"] == tiny_server.pid and s["port"] == tiny_server.port and s["profile"] == "tiny"
    assert s["healthy"] is True
    assert (s["device"], s["device_reason"]) == ("cpu", "CPU: auto, no usable NVIDIA GPU")


def test_logs_shows_the_vllm_log(tiny_server):
    res = tiny_server.vboot("logs", "shared", "-n", "500")
    assert res.returncode == 0
    assert "Application startup complete" in res.stdout


def test_second_serve_on_the_same_port_is_refused_naming_the_vboot_server(tiny_server):
    t0 = time.monotonic()
    res = tiny_server.vboot("serve", "tiny", "--port", str(tiny_server.port), "--name", "other")
    assert res.returncode == 7
    assert time.monotonic() - t0 < 10
    assert "shared" in res.stderr and "vboot stop shared" in res.stderr


# --- ports and bad arguments (no server needed) -------------------------------------------------------------

@pytest.fixture
def e2e(tmp_path):
    return e2e_env(tmp_path, vllm_python())


def _run(env, *args, timeout=300):
    return subprocess.run([*vboot_exe(), *args], capture_output=True, text=True, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_port_taken_by_another_program_is_refused_before_vllm_starts(e2e):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        t0 = time.monotonic()
        res = _run(e2e, "serve", "tiny", "--port", str(port))
        took = time.monotonic() - t0
    assert res.returncode == 7, res.stderr
    assert f"PID {os.getpid()}" in res.stderr  # names the holder: this test process
    assert took < 5
    assert "Traceback" not in res.stderr
    assert not (Path(e2e["XDG_STATE_HOME"]) / "vboot" / "runs" / "tiny" / "vllm.log").exists()


def test_bad_vllm_argument_fails_with_log_tail_and_no_leftovers(e2e):
    port = free_port()
    res = _run(e2e, "serve", "tiny", "--port", str(port), "--json", "--", "--max-num-seqs", "not-a-number")
    doc = json.loads(res.stdout)
    assert res.returncode == 8, res.stderr[-2000:]
    err = doc["errors"][0]
    assert err["code"] == "startup_failed"
    assert "not-a-number" in err["message"] or "max-num-seqs" in err["message"] or "max_num_seqs" in err["message"]
    run = json.loads((Path(e2e["XDG_STATE_HOME"]) / "vboot/runs/tiny/run.json").read_text())
    assert _alive(_tree(run["pgid"])) == []


# --- signals: each needs its own server ---------------------------------------------------------------------

def _start_foreground(env, name, profile="tiny"):
    port = free_port()
    proc = subprocess.Popen([*vboot_exe(), "serve", profile, "--port", str(port), "--name", name, "--no-smoke"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=600, proc=proc)
    except BaseException:
        kill_tree([proc.pid])
        raise
    run = json.loads((Path(env["XDG_STATE_HOME"]) / f"vboot/runs/{name}/run.json").read_text())
    tree = _tree(run["pgid"])
    roles = " ".join(psutil.Process(p).cmdline()[0] for p in tree if _alive([p]))
    assert "VLLM::EngineCore" in roles, roles
    return proc, run, tree


@pytest.mark.parametrize("how,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), ("vboot stop", 143)])
def test_foreground_serve_stops_the_whole_tree(e2e, how, code):
    name = f"sig{int(how)}" if isinstance(how, int) else "stopped"
    proc, run, tree = _start_foreground(e2e, name)
    try:
        if isinstance(how, int):
            proc.send_signal(how)
        else:  # from another terminal: vboot asks the supervising `vboot serve` to shut down
            res = _run(e2e, "stop", name, "--json")
            assert res.returncode == 0, res.stdout + res.stderr
            assert run["pid"] in json.loads(res.stdout)["data"]["stopped"]
        proc.wait(timeout=90)
        assert proc.returncode == code, proc.stderr.read().decode()[-2000:]
        assert _alive(tree) == [], f"survivors: {_alive(tree)}"
    finally:
        kill_tree([proc.pid, *tree])


HUB_PROFILE = """
description = "the tiny model, published on a (test) ModelScope hub"
[model]
id = "vboot/tiny-qwen2"
source = "modelscope"
served_name = "qwen-tiny"
[serve]
max_model_len = 512
[env]
VLLM_CPU_KVCACHE_SPACE = "1"
[needs]
weights = "1MB"
min_free_disk = "10MB"
"""


def test_modelscope_profile_is_pulled_then_served_and_sigkill_takes_the_server_down(e2e, tmp_path):
    """The main path: the model comes through the real modelscope client (from a hub on 127.0.0.1), vLLM serves
    the local snapshot; then SIGKILL of vboot: vLLM got PR_SET_PDEATHSIG=SIGTERM, so nothing is left behind."""
    from tests.support.hub_server import HubServer

    profiles = Path(e2e["XDG_CONFIG_HOME"]) / "vboot" / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "tinyhub.toml").write_text(HUB_PROFILE)
    model = Path(__file__).resolve().parent.parent / "bootstrap" / "assets" / "tiny-qwen2"
    with HubServer() as hub:
        hub.add_repo("vboot/tiny-qwen2", model)
        env = dict(e2e, MODELSCOPE_ENDPOINT=hub.url, MODELSCOPE_HOME=str(tmp_path / "ms-home"), TQDM_DISABLE="1",
                   MODELSCOPE_DOWNLOAD_MAX_RETRIES="1", MODELSCOPE_DOWNLOAD_INTRA_CLOUD="false")
        proc, run, tree = _start_foreground(env, "killed", profile="tinyhub")
        assert hub.file_requests(), "the model was not downloaded from the hub"
    try:
        snapshot = Path(run["model_path"])
        assert snapshot.is_relative_to(Path(e2e["MODELSCOPE_CACHE"])) and (snapshot / "model.safetensors").is_file()
        child = psutil.Process(run["pid"]).environ()
        assert child["VLLM_USE_MODELSCOPE"] == "true" and child["MODELSCOPE_CACHE"] == e2e["MODELSCOPE_CACHE"]
        assert str(snapshot) in " ".join(psutil.Process(run["pid"]).cmdline())
        reply = chat(f"http://127.0.0.1:{run['port']}", "qwen-tiny", max_tokens=4)
        assert reply["usage"]["completion_tokens"] > 0
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 60
        while _alive(tree) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _alive(tree) == []
        deadline = time.monotonic() + 30
        while _tree(run["pgid"]) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _tree(run["pgid"]) == []
        res = _run(e2e, "ps", "--json")
        # Only this server's processes count: other servers on the machine may be shutting down right now.
        assert [o for o in json.loads(res.stdout)["data"]["orphans"] if o["pgid"] == run["pgid"]] == []
    finally:
        kill_tree([proc.pid, *tree])


def test_orphaned_engine_is_listed_by_ps_and_removed_by_stop_orphans(e2e, tmp_path):
    """The classic leak: the API server dies by SIGKILL (OOM killer, `kill -9`) and its EngineCore lives on."""
    port = free_port()
    py = vllm_python()
    model = Path(__file__).resolve().parent.parent / "bootstrap" / "assets" / "tiny-qwen2"
    env = dict(e2e, VLLM_CPU_KVCACHE_SPACE="1")
    with open(tmp_path / "hand.log", "wb") as log:
        api = subprocess.Popen([py, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
                                "--served-model-name", "qwen-tiny", "--max-model-len", "512", "--host", "127.0.0.1",
                                "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    tree = []
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=600, proc=api)
        tree = _tree(api.pid)
        api.send_signal(signal.SIGKILL)
        api.wait(timeout=10)
        time.sleep(1)
        doc = json.loads(_run(e2e, "ps", "--json").stdout)
        orphan_pids = {o["pid"] for o in doc["data"]["orphans"]}
        engine = [p for p in tree if _alive([p]) and psutil.Process(p).cmdline()[0] == "VLLM::EngineCore"]
        assert engine and set(engine) <= orphan_pids
        assert doc["status"] == "warn"
        res = _run(e2e, "stop", "--orphans", "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        assert set(engine) <= set(json.loads(res.stdout)["data"]["stopped"])
        deadline = time.monotonic() + 30
        while _alive(tree) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _alive(tree) == [], f"survivors: {[(p, psutil.Process(p).cmdline()[:1]) for p in _alive(tree)]}"
        left = [o for o in json.loads(_run(e2e, "ps", "--json").stdout)["data"]["orphans"] if o["pgid"] == api.pid]
        assert left == []
    finally:
        kill_tree([api.pid, *tree])


def test_serve_prometheus_runs_alertmanager_with_the_profiles_receivers_and_shows_no_url(tiny_server):
    """The shared server's profile has [alerts] with both URLs in environment variables: serve --prometheus runs
    Alertmanager beside Prometheus, Prometheus sends it alerts, and the URLs are in no file but Alertmanager's
    private ones, in no log, in no output and not in vLLM's environment."""
    from tests.support.e2e import SHARED_HOOK_SECRET, SHARED_SLACK_SECRET

    run = Path(tiny_server.run_dir)
    record = json.loads((run / "run.json").read_text())
    am = record["sidecars"]["alertmanager"]
    assert psutil.Process(am["pid"]).create_time() == pytest.approx(am["create_time"], abs=0.5)
    deadline = time.monotonic() + 60
    while True:
        active = http_json(f"{tiny_server.prometheus_url}/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
        if any(f"127.0.0.1:{am['port']}" in a["url"] for a in active):
            break
        assert time.monotonic() < deadline, active
        time.sleep(1)
    status, _ = http_get(f"http://127.0.0.1:{am['port']}/-/ready")
    assert status == 200
    am_dir = run / "alertmanager"
    assert oct(am_dir.stat().st_mode & 0o777) == "0o700"
    # Alertmanager 0.25 has no url_file for webhooks: that URL lives in its 0600 config (and in its own log, in
    # the same private directory, when a delivery fails); Slack's only in its 0600 file.
    allowed = {SHARED_SLACK_SECRET: {am_dir / "slack_api_url"},
               SHARED_HOOK_SECRET: {am_dir / "alertmanager.yml", am_dir / "alertmanager.log"}}
    for path in run.rglob("*"):
        if path.is_file() and "prometheus-data" not in path.parts:
            text = path.read_text(errors="replace")
            for secret, files in allowed.items():
                assert secret not in text or path in files, (secret, path)
    for path in (am_dir / "slack_api_url", am_dir / "alertmanager.yml"):
        assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert SHARED_HOOK_SECRET not in tiny_server.output and SHARED_SLACK_SECRET not in tiny_server.output
    environ = psutil.Process(tiny_server.pid).environ()
    assert "SHARED_HOOK_URL" not in environ and "SHARED_SLACK_URL" not in environ
