"""Overhead of `vboot top`: CPU time of the live view at a 1 s interval against a live vLLM server.

Runs the installed `vboot top URL --interval 1` in a detached tmux session (a real terminal, the real
full-screen view), lets it warm up, then measures its CPU time (user + system, children included) with psutil
over ``--seconds`` of wall time. Requirement (issue 6): under 3 % of one core.

    python benchmarks/bench_top.py http://127.0.0.1:8000 [--seconds 20] [--interval 1] [--load 2]

``--load N`` keeps N chat completions in flight meanwhile (busy histograms make a bigger /metrics text).
Prints one JSON line: cpu_s, wall_s, cpu_pct_of_one_core, refreshes_expected, startup_cpu_s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import psutil


def _vboot() -> list[str]:
    exe = Path(sys.executable).with_name("vboot")
    return [str(exe)] if exe.exists() else [shutil.which("vboot") or "vboot"]


def _load(url: str, model: str, stop: threading.Event) -> None:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 200,
                       "ignore_eos": True}).encode()
    while not stop.is_set():
        req = urllib.request.Request(f"{url}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=120).read()
        except OSError:
            time.sleep(0.5)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--load", type=int, default=0, help="chat completions kept in flight meanwhile")
    ap.add_argument("--model", default="qwen-tiny")
    args = ap.parse_args()

    tmux = shutil.which("tmux")
    if tmux is None:
        print("tmux is required", file=sys.stderr)
        return 2
    sock = f"bench-top-{uuid.uuid4().hex[:8]}"
    cmd = " ".join([*_vboot(), "top", args.url, "--interval", str(args.interval)])
    stop = threading.Event()
    loaders = [threading.Thread(target=_load, args=(args.url, args.model, stop), daemon=True)
               for _ in range(args.load)]
    for t in loaders:
        t.start()
    subprocess.run([tmux, "-L", sock, "new-session", "-d", "-x", "120", "-y", "40", f"exec {cmd}"], check=True)
    try:
        pane_pid = int(subprocess.run([tmux, "-L", sock, "list-panes", "-F", "#{pane_pid}"], capture_output=True,
                                      text=True, check=True).stdout.split()[0])
        proc = psutil.Process(pane_pid)  # `exec` makes the pane's process the vboot process itself
        deadline = time.monotonic() + 60  # the first frame is on screen: imports and startup are over
        while time.monotonic() < deadline:
            screen = subprocess.run([tmux, "-L", sock, "capture-pane", "-p"], capture_output=True, text=True).stdout
            if "refresh" in screen:
                break
            time.sleep(0.2)
        else:
            raise SystemExit(f"vboot top showed no view within 60 s:\n{screen}")
        time.sleep(args.warmup)
        t0 = proc.cpu_times()
        startup = t0.user + t0.system
        w0 = time.monotonic()
        time.sleep(args.seconds)
        t1 = proc.cpu_times()
        wall = time.monotonic() - w0
        cpu = (t1.user + t1.system + t1.children_user + t1.children_system) - \
              (t0.user + t0.system + t0.children_user + t0.children_system)
        result = {
            "url": args.url, "interval_s": args.interval, "load": args.load,
            "cpu_s": round(cpu, 3), "wall_s": round(wall, 2),
            "cpu_pct_of_one_core": round(100 * cpu / wall, 2),
            "refreshes_expected": round(wall / args.interval),
            "startup_cpu_s": round(startup, 3),
            "cmdline": " ".join(proc.cmdline()),
        }
    finally:
        subprocess.run([tmux, "-L", sock, "kill-server"], capture_output=True)
        stop.set()
        for t in loaders:
            t.join(timeout=120)
    print(json.dumps(result))
    return 0 if result["cpu_pct_of_one_core"] < 3.0 else 1


if __name__ == "__main__":
    sys.exit(main())
