#!/usr/bin/env python3
"""Soak: N trials each of SIGINT and SIGTERM to a foreground `vboot serve tiny`; count survivors.

Every process of the server's tree (API server, VLLM::EngineCore, workers, the resource tracker) is recorded
by PID once healthy; after the signal, `vboot serve` must exit 130/143 and none of those PIDs may be alive.

    VBOOT_VLLM_PYTHON=/path/to/venv/bin/python python benchmarks/soak_signals.py [--trials 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import free_port, wait_ready


def group(pgid: int) -> list[int]:
    from bootstrap.probes.procs import group_members

    return group_members(pgid)


def alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def trial(sig: int, home: Path) -> dict:
    port = free_port()
    name = f"soak{port}"
    env = dict(os.environ, HOME=str(home), XDG_STATE_HOME=str(home / "state"))
    vboot = shutil.which("vboot") or str(Path(sys.executable).with_name("vboot"))
    proc = subprocess.Popen([vboot, "serve", "tiny", "--port", str(port), "--name", name, "--no-smoke"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port, proc)
    run = json.loads((home / "state" / "vboot" / "runs" / name / "run.json").read_text())
    tree = group(run["pgid"])
    t0 = time.monotonic()
    proc.send_signal(sig)
    rc = proc.wait(timeout=120)
    stop_s = time.monotonic() - t0
    left = alive(tree)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return {"signal": signal.Signals(sig).name, "exit": rc, "tree": len(tree), "survivors": left,
            "stop_s": round(stop_s, 2)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=5)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("VLLM_CACHE_ROOT", str(Path(tmp) / "vllm-cache"))  # compile once, not per trial
        for _ in range(args.trials):
            for sig in (signal.SIGINT, signal.SIGTERM):
                row = trial(sig, Path(tmp))
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
    tally = {}
    for r in rows:
        t = tally.setdefault(r["signal"], {"trials": 0, "clean": 0, "right_exit_code": 0})
        t["trials"] += 1
        t["clean"] += not r["survivors"]
        t["right_exit_code"] += r["exit"] == {"SIGINT": 130, "SIGTERM": 143}[r["signal"]]
    print(json.dumps({"tally": tally, "trials": rows}, indent=2))
    ok = all(t["clean"] == t["trials"] == t["right_exit_code"] for t in tally.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
