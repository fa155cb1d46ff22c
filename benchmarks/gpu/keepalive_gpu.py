#!/usr/bin/env python3
"""Issue #15 on a real GPU: a detached `vboot serve tiny --restart on-failure` recovers from SIGKILL of its
VLLM::EngineCore, and NVML shows the old engine's memory released before the new engine starts.

Steps:
  1. `vboot serve tiny --detach` (the device from the box: the CUDA build of vLLM on $VBOOT_VLLM_PYTHON), timed.
  2. NVML: the GPU memory in use, and what the EngineCore holds.
  3. SIGKILL of the EngineCore; a sampler reads NVML every 0.2 s meanwhile. From the supervisor's own log: the
     failure, the memory wait (MemoryReleased) and the next start; from NVML: the memory in use fell back to
     the baseline before the second generation's engine appeared.
  4. The second generation healthy and answering a chat: the recovery time.
  5. `vboot ps --json` (restarts=1, the reason) and `vboot stop`: nothing left, NVML lists no process.

Prints PASS/FAIL lines and one JSON summary; with $OUT set, writes $OUT/keepalive_gpu.json. On a box without
NVML the GPU checks are skipped (a CPU dry run of the same steps).

    VBOOT_VLLM_PYTHON=$(which python3) python3 benchmarks/gpu/keepalive_gpu.py [-- EXTRA_VLLM_ARGS]
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
RESULTS: dict = {"checks": []}
FAILED: list[str] = []


def check(ok: bool, what: str, **data) -> bool:
    RESULTS["checks"].append({"ok": ok, "check": what, **data})
    print(("PASS " if ok else "FAIL ") + what + " " + json.dumps(data, default=str)[:800], flush=True)
    if not ok:
        FAILED.append(what)
    return ok


def vboot(*args: str, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    cmd = [*shlex.split(os.environ.get("VBOOT_CMD", f"{sys.executable} -m bootstrap")), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL,
                          cwd=REPO)


def nvml_used() -> tuple[int, dict[int, int]] | None:
    """(memory in use on GPU 0 in bytes, {pid: bytes}) or None without NVML."""
    from bootstrap.probes import nvml

    snap = nvml.snapshot()
    if not snap.ok or not snap.gpus:
        return None
    g = snap.gpus[0]
    return g.memory_used_bytes or 0, {p.pid: p.used_bytes or 0 for p in g.processes}


class Sampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, int, dict[int, int]]] = []
        self.stop = False

    def run(self) -> None:
        while not self.stop:
            got = nvml_used()
            if got is not None:
                self.samples.append((time.monotonic(), got[0], got[1]))
            time.sleep(0.2)


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def chat(url: str) -> int:
    body = json.dumps({"model": "qwen-tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}).encode()
    req = urllib.request.Request(f"{url}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return int(json.loads(r.read())["usage"]["completion_tokens"])


def engine_of(pgid: int) -> int:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) != pgid:
                continue
            if Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0] == b"VLLM::EngineCore":
                return int(entry)
        except OSError:
            continue
    return 0


def main() -> int:
    extra = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    home = Path(tempfile.mkdtemp(prefix="vboot-keepalive-"))
    env = dict(os.environ, HOME=str(home), XDG_STATE_HOME=str(home / "state"), XDG_CONFIG_HOME=str(home / "cfg"))
    env.setdefault("VLLM_CACHE_ROOT", "/tmp/vllm-cache")
    gpu = nvml_used() is not None
    RESULTS["gpu"] = gpu
    baseline = nvml_used()
    t0 = time.monotonic()
    res = vboot("serve", "tiny", "--detach", "--json", "--port", "18600", "--name", "keep", "--restart", "on-failure",
                "--probe-interval", "10", "--", *extra, env=env)
    first_ready = time.monotonic() - t0
    try:
        doc = json.loads(res.stdout)
    except ValueError:
        doc = {}
    if not check(res.returncode == 0, "detached serve is ready", ready_s=round(first_ready, 1),
                 device=doc.get("data", {}).get("device"), stderr=res.stderr[-1500:]):
        return finish(env)
    url = doc["data"]["url"]
    run_dir = Path(doc["data"]["run_dir"])
    record = json.loads((run_dir / "run.json").read_text())
    engine = engine_of(record["pgid"])
    check(engine > 0, "the EngineCore of generation 1 is found", pid=engine)
    used = nvml_used()
    if gpu and used is not None and baseline is not None:
        RESULTS["gpu_used_before_bytes"] = baseline[0]
        RESULTS["gpu_used_serving_bytes"] = used[0]
        RESULTS["engine_holds_bytes"] = used[1].get(engine, 0)
        check(used[1].get(engine, 0) > 0, "NVML shows the EngineCore holding GPU memory",
              engine_gib=round(used[1].get(engine, 0) / 2**30, 2))

    sampler = Sampler()
    sampler.start()
    t_kill = time.monotonic()
    os.kill(engine, signal.SIGKILL)
    gen2 = None
    while time.monotonic() - t_kill < 600:
        try:
            rec = json.loads((run_dir / "run.json").read_text())
        except (OSError, ValueError):
            rec = {}
        if rec.get("generation") == 2 and rec.get("state") == "ready" and healthy(url):
            gen2 = rec
            break
        time.sleep(0.2)
    recovery = time.monotonic() - t_kill
    sampler.stop = True
    sampler.join(timeout=5)
    if not check(gen2 is not None, "generation 2 is ready after SIGKILL of the EngineCore",
                 recovery_s=round(recovery, 1),
                 first_ready_s=round(first_ready, 1)):
        return finish(env)
    RESULTS["recovery_s"] = round(recovery, 1)
    RESULTS["first_ready_s"] = round(first_ready, 1)
    check(chat(url) > 0, "generation 2 answers a chat")
    events = [line.split(" ", 2) for line in (run_dir / "supervisor.log").read_text().splitlines() if " " in line]
    kinds = [e[1] for e in events if len(e) == 3]
    released = [json.loads(e[2]) for e in events if len(e) == 3 and e[1] == "MemoryReleased"]
    failed = [json.loads(e[2]) for e in events if len(e) == 3 and e[1] == "Failed"]
    check(bool(failed), "the supervisor saw the failure", reason=failed[0]["failure"]["reason"] if failed else None)
    if gpu:
        check(bool(released) and released[0]["release"]["released"], "the supervisor waited for the memory",
              release=released[0]["release"] if released else None)
        order_ok = "MemoryReleased" in kinds and kinds.index("MemoryReleased") < max(
            i for i, k in enumerate(kinds) if k == "Starting")
        check(order_ok, "MemoryReleased came before the second Starting", events=kinds[-8:])
        # NVML's own timeline: the old engine's memory gone before the new engine held any
        new_engine = engine_of(gen2["pgid"])
        first_new = next((t for t, _u, by in sampler.samples if new_engine in by), None)
        low = [u for _t, u, _by in sampler.samples if baseline and u <= baseline[0] + 512 * 2**20]
        RESULTS["nvml_min_used_bytes"] = min((u for _t, u, _b in sampler.samples), default=None)
        check(bool(low), "NVML showed the memory in use back at the baseline during the restart",
              baseline_gib=round(baseline[0] / 2**30, 2) if baseline else None,
              min_gib=round(RESULTS["nvml_min_used_bytes"] / 2**30, 2) if RESULTS["nvml_min_used_bytes"] else None,
              new_engine_seen_s=round(first_new - t_kill, 1) if first_new else None)
    ps = json.loads(vboot("ps", "--json", env=env).stdout)["data"]["servers"]
    row = next((s for s in ps if s["name"] == "keep"), {})
    check(row.get("restarts") == 1 and bool(row.get("last_exit")), "ps shows restarts=1 and the reason",
          restarts=row.get("restarts"), last_exit=row.get("last_exit"))
    return finish(env)


def finish(env: dict) -> int:
    res = vboot("stop", "keep", "--json", env=env, timeout=180)
    check(res.returncode == 0, "vboot stop keep", out=res.stdout[-500:])
    time.sleep(2)
    left = nvml_used()
    if left is not None:
        check(not left[1], "NVML lists no process after the stop", processes=left[1])
    RESULTS["failed"] = FAILED
    text = json.dumps(RESULTS, indent=2, default=str)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "keepalive_gpu.json").write_text(text)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
