"""End-to-end: several models on one box with the real vLLM CPU build and the real router (vllm-router).

Two user profiles of the tiny model under different served names, started by two `vboot serve --detach` at the
same moment: the CPU start lock serialises their start-up (the second vLLM is spawned only after the first
logged its KV cache size), both end healthy on ports vboot picked. `vboot route` then answers `/v1/models` in
the OpenAI shape with both and sends each model's chat to its own server (their metrics say so); stopping one
drops its route within seconds; `ps` shows all three; a third server whose KV cache does not fit the RAM left
is refused naming the other two; `vboot sleep` refuses on the CPU build. One module, two vLLM starts."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.cli import vboot_exe
from tests.support.e2e import e2e_env, free_port, kill_tree, vllm_python

pytestmark = pytest.mark.e2e

PROFILE = """
description = "tiny model, served as {served}"
[model]
id = "vboot/qwen2-tiny"
source = "local"
path = "bundled:tiny-qwen2"
served_name = "{served}"
[serve]
port = "auto"
device = "cpu"
max_model_len = 512
[env]
VLLM_CPU_KVCACHE_SPACE = "{kv}"
"""


def _run(env, *args, timeout=300):
    return subprocess.run([*vboot_exe(), *args], capture_output=True, text=True, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _record(env, name) -> dict:
    return json.loads((Path(env["XDG_STATE_HOME"]) / f"vboot/runs/{name}/run.json").read_text())


def _get(url: str, timeout: float = 10.0) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read()
            return resp.status, json.loads(body) if body.strip() else {}
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def _chat(url: str, model: str) -> tuple[int, dict]:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}).encode()
    req = urllib.request.Request(f"{url}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def _finished(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:request_success_total{"))


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory):
    """alpha (served as tiny-alpha) and beta (tiny-beta), started by two `vboot serve --detach` at once."""
    root = tmp_path_factory.mktemp("multimodel")
    env = e2e_env(root, vllm_python())
    profiles = Path(env["XDG_CONFIG_HOME"]) / "vboot" / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "alpha.toml").write_text(PROFILE.format(served="tiny-alpha", kv="1"))
    (profiles / "beta.toml").write_text(PROFILE.format(served="tiny-beta", kv="1"))
    (profiles / "gamma.toml").write_text(PROFILE.format(served="tiny-gamma", kv="100000"))
    procs = {name: subprocess.Popen([*vboot_exe(), "serve", name, "--detach", "--json", "--name", name],
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    stdin=subprocess.DEVNULL) for name in ("alpha", "beta")}
    out = {name: p.communicate(timeout=900) for name, p in procs.items()}
    try:
        for name, p in procs.items():
            assert p.returncode == 0, f"{name}: {out[name][1][-3000:]}"
        docs = {name: json.loads(out[name][0])["data"] for name in procs}
        yield env, docs, {name: out[name][1] for name in procs}
    finally:
        _run(env, "stop", "--all", "--timeout", "20", timeout=180)
        for name in ("alpha", "beta"):
            try:
                kill_tree([_record(env, name)["pid"]])
            except (OSError, ValueError, KeyError):
                pass


def test_two_servers_started_together_take_turns_and_one_endpoint_routes_by_model(two_servers):
    env, docs, stderr = two_servers
    a, b = _record(env, "alpha"), _record(env, "beta")
    # Both healthy, on different ports that vboot picked (port = "auto").
    assert a["state"] == b["state"] == "ready" and a["port"] != b["port"]
    assert a["inputs"]["port_auto"] and b["inputs"]["port_auto"]
    for rec in (a, b):
        status, _ = _get(f"http://127.0.0.1:{rec['port']}/health")
        assert status == 200
    # The CPU start lock serialised them: the later vLLM was spawned only after the earlier one sized its KV cache.
    first, second = sorted((a, b), key=lambda r: r["generation_started_at"])
    assert first["kv_cache_at"] > 0 and second["kv_cache_at"] > 0
    assert second["generation_started_at"] >= first["kv_cache_at"], (first, second)
    waiter, holder = ("alpha", "beta") if second is a else ("beta", "alpha")
    log = (Path(second["run_dir"]) / "supervisor.log").read_text()
    waits = [json.loads(line.split(" ", 2)[2]) for line in log.splitlines() if " WaitingForStartLock " in line]
    assert waits and waits[0]["holder"]["name"] == holder and waits[0]["holder"]["lock"] == "cpu", log[-2000:]
    assert first["start_locks"] == second["start_locks"] == ["cpu"]

    # One endpoint for both.
    port = free_port()
    res = _run(env, "route", "--detach", "--json", "--port", str(port), timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    url = f"http://127.0.0.1:{port}"
    routes = json.loads(res.stdout)["data"]["routes"]
    assert routes == {"tiny-alpha": f"http://127.0.0.1:{a['port']}", "tiny-beta": f"http://127.0.0.1:{b['port']}"}
    status, models = _get(f"{url}/v1/models")
    assert status == 200 and models["object"] == "list"
    assert sorted(m["id"] for m in models["data"]) == ["tiny-alpha", "tiny-beta"]
    for model, target, other in (("tiny-alpha", a, b), ("tiny-beta", b, a)):
        t_url, o_url = f"http://127.0.0.1:{target['port']}", f"http://127.0.0.1:{other['port']}"
        before_t, before_o = _finished(t_url), _finished(o_url)
        status, doc = _chat(url, model)
        assert status == 200 and doc["model"] == model and doc["usage"]["completion_tokens"] > 0
        after_t, after_o = _finished(t_url), _finished(o_url)
        # Liveness probes of the other server may land meanwhile (one request each): the chat went to the target.
        assert after_t - before_t >= 1 and after_o - before_o <= 1, (model, before_t, after_t, before_o, after_o)
    assert _get(f"{url}/sleep")[0] == 404  # vLLM's other endpoints never pass the front

    # ps shows the two servers and the route.
    ps = json.loads(_run(env, "ps", "--json").stdout)["data"]["servers"]
    kinds = {s["name"]: s["kind"] for s in ps}
    assert kinds == {"alpha": "server", "beta": "server", "route": "route"}

    # A third server whose KV cache does not fit in the RAM left is refused, naming the other two.
    res = _run(env, "serve", "gamma", "--json", "--name", "gamma", timeout=120)
    assert res.returncode == 7, res.stderr[-2000:]
    err = json.loads(res.stdout)["errors"][0]
    assert err["code"] == "preflight" and "budget" in err["message"]
    assert "'alpha'" in err["message"] and "'beta'" in err["message"], err
    assert "VLLM_CPU_KVCACHE_SPACE" in err["message"] + err["hint"]

    # The CPU build has no sleep mode: `vboot sleep` says so (exit 7).
    res = _run(env, "sleep", "alpha", "--json")
    assert res.returncode == 7 and json.loads(res.stdout)["errors"][0]["code"] == "sleep_unavailable"

    # Stopping beta drops its route without restarting the endpoint; a client then gets 404 for its model.
    front_pid = _record(env, "route")["pid"]
    assert _run(env, "stop", "beta", "--timeout", "20", timeout=120).returncode == 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        if [m["id"] for m in _get(f"{url}/v1/models")[1].get("data", [])] == ["tiny-alpha"]:
            break
        time.sleep(0.1)
    dropped_s = time.monotonic() - t0
    assert dropped_s < 10, f"beta's route still listed after {dropped_s:.1f} s"
    assert _chat(url, "tiny-beta")[0] == 404 and _chat(url, "tiny-alpha")[0] == 200
    assert _record(env, "route")["pid"] == front_pid and _record(env, "route")["routes"] == {
        "tiny-alpha": f"http://127.0.0.1:{a['port']}"}
    print(f"\nroute dropped {dropped_s:.2f} s after `vboot stop beta` returned")
    assert _run(env, "stop", "route").returncode == 0
