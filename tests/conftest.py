"""Shared fixtures: every test runs with its own HOME and XDG directories, so nothing touches the real ones."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


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
                "MODELSCOPE_LOG_LEVEL", "CUDA_EMPTY_CACHE", "HF_HUB_OFFLINE", "CUDA_VISIBLE_DEVICES", "VLLM_PORT",
                "VBOOT_DEBUG"):
        monkeypatch.delenv(key, raising=False)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return dict(os.environ)


def vboot_exe() -> list[str]:
    """The installed `vboot` console script next to this interpreter (falls back to `python -m bootstrap`)."""
    exe = Path(sys.executable).with_name("vboot")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("vboot")
    return [found] if found else [sys.executable, "-m", "bootstrap"]


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
