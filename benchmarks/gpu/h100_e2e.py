#!/usr/bin/env python3
"""vboot on a real NVIDIA GPU with the real CUDA build of vLLM (issue #10), scripted.

Steps (choose with --steps, default all):
  1 doctor      `vboot doctor --json` with vLLM installed: every GPU-side check passes or explains itself.
  2 serve       `vboot serve tiny --detach`: PYTORCH_CUDA_ALLOC_CONF in the child, healthy, a chat completion,
                /metrics; `vboot ps --json` shows the engine's VRAM; `vboot top --once --json` the GPU.
  3 orphans     the bare vLLM command (timed, the baseline for step 4), then SIGKILL of its API server:
                `vboot ps` lists the orphaned VLLM::EngineCore with its VRAM; `vboot stop --orphans` frees it,
                confirmed by NVML (no compute process left).
  4 sigkill     foreground `vboot serve tiny` (timed against step 3), SIGKILLed while healthy: its server
                goes down with it (PR_SET_PDEATHSIG) and NVML shows the VRAM freed.
  5 vram        another process holds most of the GPU: `vboot serve` refuses within seconds, naming the holder's
                PID and the free and needed bytes.
  6 kvcache     a KV cache too small for max_model_len: vboot ends with its diagnosis and fix.

Prints what it checked; exits 1 when a step fails; on a machine without an NVIDIA GPU it prints why it is
skipped and exits 0. Results go to stdout as JSON lines and, when $OUT is set, to $OUT/gpu_e2e.json.

    VBOOT_VLLM_PYTHON=$(which python3) python3 benchmarks/gpu/h100_e2e.py [--steps 1,2,3]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_serve import free_port, wait_ready  # noqa: E402  (one copy of the port and /health helpers)

MODEL = REPO / "bootstrap" / "assets" / "tiny-qwen2"
RESULTS: list[dict] = []
FAILED: list[str] = []


def vboot_cmd() -> list[str]:
    return shlex.split(os.environ.get("VBOOT_CMD", f"{sys.executable} -m bootstrap"))


def log(step: str, ok: bool, what: str, **data) -> None:
    row = {"step": step, "ok": ok, "check": what, **data}
    RESULTS.append(row)
    print(("PASS " if ok else "FAIL ") + f"[{step}] {what} " + json.dumps(data, default=str)[:1500], flush=True)
    if not ok:
        FAILED.append(f"{step}: {what}")


def vboot(*args: str, env: dict, timeout: float = 900) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    res = subprocess.run([*vboot_cmd(), *args], capture_output=True, text=True, env=env, timeout=timeout,
                         stdin=subprocess.DEVNULL)
    return res, time.perf_counter() - t0


def jdoc(res: subprocess.CompletedProcess) -> dict:
    try:
        return json.loads(res.stdout)
    except ValueError:
        return {"unparsed_stdout": res.stdout[-2000:], "stderr": res.stderr[-3000:]}


def wait_health(port: int, proc: subprocess.Popen | None, timeout: float = 900) -> float:
    return wait_ready(port, proc, timeout)


def nvml_compute_pids() -> dict[int, int]:
    import pynvml

    pynvml.nvmlInit()
    try:
        out = {}
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h):
                out[p.pid] = int(p.usedGpuMemory or 0)
        return out
    finally:
        pynvml.nvmlShutdown()


def wait_vram_freed(pids: set[int], timeout: float = 60) -> dict[int, int]:
    deadline = time.monotonic() + timeout
    while True:
        left = {p: b for p, b in nvml_compute_pids().items() if p in pids}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def group_pids(pgid: int) -> list[int]:
    from bootstrap.probes.procs import group_members

    return group_members(pgid)


def chat(port: int, model: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps({
        "model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


# --- steps ---------------------------------------------------------------------------------------------------

def step_doctor(env: dict) -> None:
    res, dt = vboot("doctor", "--json", "--profile", "tiny", env=env)
    doc = jdoc(res)
    checks = {c["id"]: c for c in doc.get("data", {}).get("checks", [])}
    log("1", res.returncode == 0, "vboot doctor --json --profile tiny exits 0", seconds=round(dt, 3),
        statuses={k: v["status"] for k, v in checks.items()})
    for cid in ("nvidia.driver", "nvidia.gpus", "torch", "vllm", "vram"):
        c = checks.get(cid, {})
        log("1", c.get("status") == "ok", f"{cid}: {c.get('summary')}", data=c.get("data"))
    times = []
    for _ in range(5):
        times.append(vboot("doctor", "--json", "--profile", "qwen", env=env)[1])
    log("1", sorted(times)[2] <= 0.6, "doctor --json whole-process time (median of 5)",
        median_s=round(sorted(times)[2], 3))


def step_serve(env: dict) -> None:
    port = free_port()
    res, dt = vboot("serve", "tiny", "--detach", "--json", "--port", str(port), env=env, timeout=900)
    doc = jdoc(res)
    ok = res.returncode == 0
    log("2", ok, "vboot serve tiny --detach --json", seconds=round(dt, 1), data=doc.get("data"),
        errors=doc.get("errors"), stderr_tail=res.stderr[-1500:] if not ok else "")
    if not ok:
        return
    d = doc["data"]
    import psutil

    child_env = psutil.Process(d["pid"]).environ()
    log("2", child_env.get("PYTORCH_CUDA_ALLOC_CONF") == "expandable_segments:True",
        "PYTORCH_CUDA_ALLOC_CONF set in the vLLM process", value=child_env.get("PYTORCH_CUDA_ALLOC_CONF"))
    log("2", d.get("device") == "gpu", "served on the GPU", device=d.get("device"), ready_s=d.get("ready_s"))
    reply = chat(port, d["served_model_name"])
    log("2", reply["usage"]["completion_tokens"] > 0, "chat completion", usage=reply["usage"])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        body = r.read().decode()
    log("2", "vllm:num_requests_waiting" in body and "vllm:kv_cache_usage_perc" in body, "/metrics has vLLM series")
    ps, _ = vboot("ps", "--json", env=env)
    servers = jdoc(ps).get("data", {}).get("servers", [])
    gpu = servers[0].get("gpu_bytes", 0) if servers else 0
    log("2", gpu > 0 and servers[0]["healthy"], "vboot ps --json shows the engine's VRAM", gpu_bytes=gpu,
        servers=servers)
    top, _ = vboot("top", "tiny", "--once", "--json", env=env)
    tdoc = jdoc(top).get("data", {})
    gpus = tdoc.get("gpus", [])
    log("2", bool(gpus) and gpus[0].get("memory_used_bytes", 0) > 0, "vboot top --once --json shows the GPU",
        gpus=gpus, requests_running=tdoc.get("requests_running"))
    stop, sdt = vboot("stop", "tiny", "--json", env=env)
    left = wait_vram_freed({d["pid"], *group_pids(d["pid"])}, 30)
    log("2", stop.returncode == 0 and not left, "vboot stop tiny frees the GPU", seconds=round(sdt, 1),
        stopped=jdoc(stop).get("data", {}).get("stopped"))


def step_orphans(env: dict, timings: dict) -> None:
    port = free_port()
    cfg = subprocess.run([*vboot_cmd(), "doctor", "--json", "--profile", "tiny", "--check", "vllm"],
                         capture_output=True, text=True, env=env)
    argv = jdoc(cfg)["data"]["checks"][0]["data"]["command"]
    argv = [str(MODEL) if a == "<model-dir>" else a for a in argv]
    argv[argv.index("--port") + 1] = str(port)
    benv = dict(env, PYTORCH_CUDA_ALLOC_CONF="expandable_segments:True")
    with tempfile.TemporaryFile() as out:
        t0 = time.monotonic()
        api = subprocess.Popen(argv, env=benv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_health(port, api)
        except RuntimeError as exc:
            out.seek(0)
            log("3", False, f"bare vLLM command became healthy: {exc}",
                tail=out.read()[-3000:].decode(errors="replace"))
            return
        timings["bare_ready_s"] = time.monotonic() - t0
        log("3", True, "bare vLLM command healthy (baseline)", ready_s=round(timings["bare_ready_s"], 1),
            argv=argv)
        tree = group_pids(api.pid)
        os.kill(api.pid, signal.SIGKILL)
        api.wait()
    time.sleep(2)
    held = {p: b for p, b in nvml_compute_pids().items() if p in tree}
    ps, _ = vboot("ps", "--json", env=env)
    orphans = jdoc(ps).get("data", {}).get("orphans", [])
    engine = [o for o in orphans if o["name"] == "VLLM::EngineCore"]
    log("3", bool(engine) and engine[0]["gpu_bytes"] > 0, "vboot ps lists the orphaned VLLM::EngineCore with VRAM",
        orphans=orphans, nvml_held=held)
    stop, sdt = vboot("stop", "--orphans", "--json", env=env)
    left = wait_vram_freed(set(tree), 30)
    log("3", stop.returncode == 0 and not left, "vboot stop --orphans frees the VRAM (NVML: no compute process left)",
        seconds=round(sdt, 1), stopped=jdoc(stop).get("data", {}).get("stopped"), nvml_left=left)


def step_sigkill(env: dict, timings: dict) -> None:
    port = free_port()
    t0 = time.monotonic()
    proc = subprocess.Popen([*vboot_cmd(), "serve", "tiny", "--port", str(port), "--name", "fg", "--no-smoke"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_health(port, proc)
    except RuntimeError as exc:
        log("4", False, f"foreground vboot serve became healthy: {exc}")
        return
    timings["vboot_ready_s"] = time.monotonic() - t0
    base = timings.get("bare_ready_s")
    log("4", True, "foreground vboot serve tiny healthy", ready_s=round(timings["vboot_ready_s"], 1),
        bare_ready_s=round(base, 1) if base else None,
        ratio=round(timings["vboot_ready_s"] / base, 3) if base else None)
    import psutil

    rss = psutil.Process(proc.pid).memory_info().rss
    log("4", rss <= 60 * 2**20, "supervisor RSS while serving", rss_mib=round(rss / 2**20, 1))
    run = json.loads((Path(env["XDG_STATE_HOME"]) / "vboot" / "runs" / "fg" / "run.json").read_text())
    tree = group_pids(run["pgid"])
    held_before = {p: b for p, b in nvml_compute_pids().items() if p in tree}
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    t1 = time.monotonic()
    left = wait_vram_freed(set(tree), 60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                                              for p in tree if psutil.pid_exists(p)):
        time.sleep(0.5)
    alive = [p for p in tree if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    log("4", not left and not alive, "SIGKILL of vboot serve: the server follows (PDEATHSIG), VRAM freed",
        held_before=held_before, freed_in_s=round(time.monotonic() - t1, 1), nvml_left=left, alive=alive)
    ps, _ = vboot("ps", "--json", env=env)
    log("4", jdoc(ps).get("data", {}).get("orphans") == [], "no orphans afterwards")


def step_vram(env: dict) -> None:
    holder = subprocess.Popen([sys.executable, "-c", (
        "import torch, time, sys; free, total = torch.cuda.mem_get_info(); "
        "x = torch.empty(int(free - 6 * 2**30), dtype=torch.uint8, device='cuda'); "
        "print('held', x.numel(), flush=True); time.sleep(600)")], stdout=subprocess.PIPE, text=True)
    try:
        line = holder.stdout.readline()
        log("5", line.startswith("held"), "a torch process holds all but ~6 GiB of the GPU", holder_pid=holder.pid,
            line=line.strip())
        port = free_port()
        res, dt = vboot("serve", "tiny", "--port", str(port), "--json", env=env, timeout=120)
        doc = jdoc(res)
        err = (doc.get("errors") or [{}])[0]
        msg = err.get("message", "")
        log("5", res.returncode != 0 and dt < 10 and f"PID {holder.pid}" in msg and "GiB free" in msg,
            "vboot serve refuses within seconds, naming the holder and the bytes", seconds=round(dt, 2),
            exit_code=res.returncode, error=err)
    finally:
        holder.kill()
        holder.wait()


def step_kvcache(env: dict) -> None:
    port = free_port()
    res, dt = vboot("serve", "tiny", "--port", str(port), "--json", "--", "--kv-cache-memory-bytes", "65536",
                    env=env, timeout=900)
    doc = jdoc(res)
    err = (doc.get("errors") or [{}])[0]
    log("6", res.returncode == 8 and err.get("context", {}).get("diagnosis") == "kv_cache_too_small",
        "a KV cache too small for max_model_len ends with vboot's diagnosis and fix", seconds=round(dt, 1),
        error=err)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", default="1,2,3,4,5,6")
    args = ap.parse_args()
    try:
        import pynvml

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
    except Exception as exc:  # noqa: BLE001
        print(f"SKIP: no NVIDIA GPU here ({exc}); run this on a machine with a GPU and vLLM installed")
        return 0
    if count == 0:
        print("SKIP: NVML sees no GPU")
        return 0
    # VBOOT_GPU_HOME reuses a HOME whose caches (torch compile, flashinfer JIT) are warm, for fair timings.
    home = Path(os.environ.get("VBOOT_GPU_HOME") or tempfile.mkdtemp(prefix="vboot-gpu-"))
    env = dict(os.environ, HOME=str(home), XDG_STATE_HOME=str(home / "state"), XDG_CONFIG_HOME=str(home / "cfg"))
    env.setdefault("VBOOT_VLLM_PYTHON", sys.executable)
    steps = set(args.steps.split(","))
    timings: dict = {}
    table = [("1", step_doctor), ("2", step_serve), ("3", lambda e: step_orphans(e, timings)),
             ("4", lambda e: step_sigkill(e, timings)), ("5", step_vram), ("6", step_kvcache)]
    for sid, fn in table:
        if sid in steps:
            t0 = time.monotonic()
            try:
                fn(env)
            except Exception as exc:  # noqa: BLE001
                log(sid, False, f"step crashed: {type(exc).__name__}: {exc}")
            print(f"-- step {sid} took {time.monotonic() - t0:.1f} s", flush=True)
    out = os.environ.get("OUT")
    if out:
        Path(out, f"gpu_e2e_{args.steps.replace(',', '')}.json").write_text(json.dumps(RESULTS, indent=2, default=str))
    print(json.dumps({"failed": FAILED, "timings": timings}))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
