"""Shared fixtures: every test runs with its own HOME and XDG directories, so nothing touches the real ones."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import vboot_exe
from tests.support.e2e import (REPO, SHARED_ALERTS, SHARED_HOOK_SECRET, SHARED_SLACK_SECRET, e2e_env, free_port,
                                kill_tree, vllm_python)


@pytest.fixture
def isolated_env(tmp_path, monkeypatch):
    """HOME, XDG dirs and ModelScope cache inside tmp_path; returns the environment as a dict."""
    home = tmp_path / "home"
    home.mkdir()
    values = {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "MODELSCOPE_CACHE": str(tmp_path / "ms-cache"),
    }
    for key in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF", "VLLM_USE_MODELSCOPE", "MS_CACHE_HOME",
                "MODELSCOPE_LOG_LEVEL", "CUDA_EMPTY_CACHE", "HF_HUB_OFFLINE", "CUDA_VISIBLE_DEVICES", "VLLM_PORT", "VLLM_API_KEY",
                "VBOOT_DEBUG"):
        monkeypatch.delenv(key, raising=False)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return dict(os.environ)


@pytest.fixture
def run_vboot(isolated_env):
    """Run the real `vboot` binary; returns CompletedProcess with text stdout/stderr."""

    def _run(*args: str, env: dict | None = None, timeout: float = 120, input: str | None = None):
        full_env = dict(isolated_env)
        if env:
            full_env.update(env)
        return subprocess.run([*vboot_exe(), *args], capture_output=True, text=True, env=full_env,
                              timeout=timeout, input=input, stdin=None if input is not None else subprocess.DEVNULL)

    return _run


@pytest.fixture
def cache_env(isolated_env, tmp_path):
    """The test environment with every cache of `vboot disk caches` in tmp_path (ModelScope's is already)."""
    values = dict(isolated_env)
    values["HF_HOME"] = str(tmp_path / "hf")
    values["PIP_CACHE_DIR"] = str(tmp_path / "pipc")
    values["UV_CACHE_DIR"] = str(tmp_path / "uvc")
    values["VLLM_CACHE_ROOT"] = str(tmp_path / "vllmc")
    values["TORCH_HOME"] = str(tmp_path / "torchc")
    values["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "inductor")
    values["TRITON_CACHE_DIR"] = str(tmp_path / "tritonc")
    return values


# --- the shared real vLLM server (session scope: vLLM takes ~1 min to start on these CPUs) -------------------

class TinyServer:
    """A real `vboot serve tiny --detach --prometheus` for end-to-end tests that can share one server."""

    def __init__(self, env: dict, data: dict, port: int) -> None:
        self.env = env
        self.data = data
        self.port = port
        self.url = data["url"]
        self.served_model_name = data["served_model_name"]
        self.run_dir = data["run_dir"]
        self.name = data["name"]
        self.pid = data["pid"]
        self.prometheus_url = data.get("prometheus_url")

    def vboot(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run `vboot` with this server's HOME/XDG state, so ps/stop/logs/top see it."""
        return subprocess.run([*vboot_exe(), *args], capture_output=True, text=True, env=self.env, timeout=timeout,
                              stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def tiny_server(tmp_path_factory):
    vllm_py = vllm_python()
    root = tmp_path_factory.mktemp("tiny-server")
    env = e2e_env(root, vllm_py)
    # The built-in tiny profile plus alert receivers whose URLs come from the environment (closed ports: nothing
    # is delivered here, tests/test_alerting_e2e.py does that), so the shared server also runs Alertmanager.
    profiles = Path(env["XDG_CONFIG_HOME"]) / "vboot" / "profiles"
    profiles.mkdir(parents=True, exist_ok=True)
    (profiles / "tiny.toml").write_text((REPO / "profiles" / "tiny.toml").read_text() + SHARED_ALERTS)
    env.update({"SHARED_HOOK_URL": f"http://127.0.0.1:{free_port()}/hook/{SHARED_HOOK_SECRET}",
                "SHARED_SLACK_URL": f"http://127.0.0.1:{free_port()}/services/T0/B0/{SHARED_SLACK_SECRET}"})
    port, prom_port = free_port(), free_port()
    cmd = [*vboot_exe(), "serve", "tiny", "--detach", "--json", "--port", str(port), "--name", "shared",
           "--prometheus", "--prometheus-port", str(prom_port)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, stdin=subprocess.DEVNULL)
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        doc = None
    if proc.returncode != 0 or not doc:
        raise AssertionError(f"`vboot serve tiny --detach` failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}")
    server = TinyServer(env, doc["data"], port)
    server.output = proc.stdout + proc.stderr
    try:
        yield server
    finally:
        subprocess.run([*vboot_exe(), "stop", "shared", "--timeout", "20"], env=env, capture_output=True, timeout=120)
        kill_tree([server.pid])
