"""Shared fixtures. Every test runs in its own environment (tests.support.environment: HOME, XDG dirs and the
ModelScope cache in a directory of its own, none of the user's variables that vboot reads) and starts with the
output layer's state reset; `vboot` runs in-process unless a test needs a real process."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import run_in_process, run_process, vboot_exe
from tests.support.e2e import (
    REPO,
    SHARED_ALERTS,
    SHARED_HOOK_SECRET,
    SHARED_SLACK_SECRET,
    e2e_env,
    free_port,
    kill_tree,
    vllm_python,
)
from tests.support.environment import isolated_environ

_ENV_ROOTS = itertools.count()


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    """Every test: the isolated environment in os.environ (HOME and the rest in a directory of its own, beside
    the test's tmp_path, which stays the test's alone), and bootstrap.cli.output's state as a fresh process has
    it (restored afterwards too, for the next test)."""
    from bootstrap.cli import output

    root = tmp_path_factory.getbasetemp() / "env" / str(next(_ENV_ROOTS))
    env = isolated_environ(os.environ, root)
    for key in set(os.environ) - set(env):
        monkeypatch.delenv(key)
    for key, value in env.items():
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)
    output.STATE.reset()
    yield
    output.STATE.reset()


@pytest.fixture
def isolated_env() -> dict[str, str]:
    """The test's environment as a dict (its own HOME, XDG dirs and MODELSCOPE_CACHE), for child processes and
    for paths below HOME."""
    return dict(os.environ)


@pytest.fixture
def run_vboot(request):
    """`vboot ARGS` and its exit code, stdout and stderr: run in this process
    (:func:`tests.support.cli.run_in_process`), except in an end-to-end test (marked e2e), which runs the real
    console script as a user would (:func:`tests.support.cli.run_process`)."""
    return run_process if request.node.get_closest_marker("e2e") else run_in_process


@pytest.fixture
def vboot_process():
    """The real `vboot` binary (:func:`tests.support.cli.run_process`), for what needs a process of its own."""
    return run_process

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
        raise AssertionError("`vboot serve tiny --detach` failed "
                             f"({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}")
    server = TinyServer(env, doc["data"], port)
    server.output = proc.stdout + proc.stderr
    try:
        yield server
    finally:
        subprocess.run([*vboot_exe(), "stop", "shared", "--timeout", "20"], env=env, capture_output=True, timeout=120)
        kill_tree([server.pid])
