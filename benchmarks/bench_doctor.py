#!/usr/bin/env python3
"""Whole-process time of `vboot doctor --json` against baselines measured in the same run.

Issue #2's goals: at most 2.5x `python -c "import click, rich.console, rich.table"` on the CPU box; on a GPU
box at most 0.3 s and at least 15x faster than `python -m torch.utils.collect_env`.

    python benchmarks/bench_doctor.py [--runs 11] [--profile tiny] [--collect-env]

Runs alternate (baseline, doctor, baseline, doctor, ...) so drift hits both; medians are reported.
Exit status 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchutil import compile_like_install


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--profile", default="qwen")
    ap.add_argument("--collect-env", action="store_true", help="also time torch's collect_env (GPU box)")
    ap.add_argument("--max-ratio", type=float, default=2.5)
    args = ap.parse_args()
    # $VBOOT overrides (e.g. "python3 -m bootstrap"); else the console script next to this Python.
    vboot = shlex.split(os.environ["VBOOT"]) if os.environ.get("VBOOT") else [
        shutil.which("vboot") or str(Path(sys.executable).with_name("vboot"))]
    doctor = [*vboot, "doctor", "--json", "--profile", args.profile]
    compile_like_install()
    base = [sys.executable, "-c", "import click, rich.console, rich.table"]
    for cmd in (doctor, base):  # warm the page cache
        timed(cmd)
    t_doc, t_base = [], []
    for _ in range(args.runs):
        t_base.append(timed(base))
        t_doc.append(timed(doctor))
    result = {
        "runs": args.runs,
        "doctor_median_s": statistics.median(t_doc),
        "baseline_import_median_s": statistics.median(t_base),
    }
    result["ratio_vs_import"] = result["doctor_median_s"] / result["baseline_import_median_s"]
    ok = result["ratio_vs_import"] <= args.max_ratio
    if args.collect_env:
        t_ce = [timed([sys.executable, "-m", "torch.utils.collect_env"]) for _ in range(3)]
        result["collect_env_median_s"] = statistics.median(t_ce)
        result["speedup_vs_collect_env"] = result["collect_env_median_s"] / result["doctor_median_s"]
        ok = ok and result["doctor_median_s"] <= 0.3 and result["speedup_vs_collect_env"] >= 15
    # Doctor must not import the heavy packages.
    probe = subprocess.run([sys.executable, "-X", "importtime", "-m", "bootstrap", "doctor", "--json",
                            "--profile", args.profile], capture_output=True, text=True)
    heavy = sorted({line.split("|")[-1].strip().split(".")[0] for line in probe.stderr.splitlines()
                    if line.startswith("import time:")} & {"torch", "vllm", "modelscope", "transformers"})
    result["heavy_imports"] = heavy
    ok = ok and not heavy
    result["ok"] = ok
    print(json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
