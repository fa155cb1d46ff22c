"""Benchmark: `vboot pull` against `modelscope download` of the same ~200 MB repo from a loopback hub.

Both go into an empty cache on every run (the vboot pull record lives in a fresh state dir too), in
alternating order, against one hub process (tests/support/hub_server.py, sendfile). Prints each run, the medians and
the ratio vboot / modelscope; the acceptance bar is <= 1.10.

    .venv/bin/python benchmarks/bench_pull.py [--runs 5] [--mb 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchutil import vboot_argv

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MODEL = "bench/random-200mb"
# The console scripts when installed, else the same entry points through this interpreter (what the
# scripts run: `modelscope` is modelscope_hub.cli.main:run_cmd, `vboot` is bootstrap.cli.entry:main).
VBOOT = vboot_argv()
MODELSCOPE = [str(BIN / "modelscope")] if (BIN / "modelscope").exists() else [
    sys.executable, "-c", "import sys; from modelscope_hub.cli.main import run_cmd; sys.argv[0] = 'modelscope'; "
    "sys.exit(run_cmd())"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_repo(root: Path, total_mb: int) -> None:
    """Four weight shards plus small JSON files, like a real 0.1B model repo."""
    root.mkdir(parents=True, exist_ok=True)
    shard = total_mb * 1024 * 1024 // 4
    for i in range(1, 5):
        with (root / f"model-0000{i}-of-00004.safetensors").open("wb") as fh:
            left = shard
            while left:
                n = min(left, 8 * 1024 * 1024)
                fh.write(os.urandom(n))
                left -= n
    (root / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"]}))
    (root / "tokenizer.json").write_bytes(os.urandom(2 * 1024 * 1024))


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None, help="where the repo and caches go (default: /tmp)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vboot-bench-pull-", dir=args.workdir))
    repo = work / "repo"
    build_repo(repo, args.mb)
    size = sum(p.stat().st_size for p in repo.iterdir())
    port = free_port()
    hub = subprocess.Popen([sys.executable, str(REPO / "tests" / "support" / "hub_server.py"), "--port", str(port),
                            "--repo", f"{MODEL}={repo}"], stdout=subprocess.PIPE, text=True)
    try:
        assert hub.stdout is not None and hub.stdout.readline().startswith("READY")
        base = {**os.environ, "MODELSCOPE_ENDPOINT": f"http://127.0.0.1:{port}", "TQDM_DISABLE": "1",
                "MODELSCOPE_DOWNLOAD_INTRA_CLOUD": "false", "MODELSCOPE_HOME": str(work / "ms-home"),
                "HOME": str(work / "home")}
        rows: list[dict[str, float]] = []
        for i in range(args.runs):
            times: dict[str, float] = {}
            order = ("vboot", "modelscope") if i % 2 == 0 else ("modelscope", "vboot")
            for tool in order:
                cache = work / f"cache-{tool}"
                state = work / f"state-{tool}"
                shutil.rmtree(cache, ignore_errors=True)
                shutil.rmtree(state, ignore_errors=True)
                env = {**base, "MODELSCOPE_CACHE": str(cache), "XDG_STATE_HOME": str(state)}
                if tool == "vboot":
                    argv = [*VBOOT, "pull", MODEL, "--cache-dir", str(cache), "--json"]
                else:
                    argv = [*MODELSCOPE, "download", MODEL, "--cache-dir", str(cache)]
                times[tool] = timed(argv, env)
            rows.append(times)
            if not args.json:
                print(f"run {i + 1}: vboot {times['vboot']:.2f}s  modelscope {times['modelscope']:.2f}s  "
                      f"ratio {times['vboot'] / times['modelscope']:.3f}", flush=True)
        med_v = statistics.median(r["vboot"] for r in rows)
        med_m = statistics.median(r["modelscope"] for r in rows)
        ratios = [r["vboot"] / r["modelscope"] for r in rows]
        summary = {"repo_bytes": size, "cpus": os.cpu_count(), "python": sys.version.split()[0], "runs": args.runs,
                   "vboot_median_s": med_v, "modelscope_median_s": med_m,
                   "ratio_of_medians": med_v / med_m, "median_ratio": statistics.median(ratios),
                   "rows": rows}
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            print(f"repo {size / 1e6:.0f} MB; median vboot {med_v:.2f}s, modelscope {med_m:.2f}s; "
                  f"ratio of medians {med_v / med_m:.3f}, median ratio {statistics.median(ratios):.3f} "
                  f"(bar: <= 1.10)")
    finally:
        hub.kill()
        hub.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
