"""Benchmark `vboot disk` against GNU du in the same run (warm page cache, alternating, median of N).

    python benchmarks/bench_disk.py [--entries 200000] [--runs 7] [--keep]

Builds an uneven tree under /tmp (never in the repo): 14 top folders holding 40%, 15%, ... 1% of the entries,
60 files per leaf folder, one file in seven with 1-9 KB of data. Prints seconds and the ratio to
`du -B1 --max-depth=1 TREE` for: the whole `vboot disk TREE --json` command (with and without the head start
that scans while the CLI loads, bootstrap/cli/entry.py), the whole `vboot disk TREE` (the human view), the
in-process `scan()` with the default workers, and `scan(workers=1)`; then the whole command on a 1,000-entry
tree. For du and the command it also prints the CPU time of the whole process tree: with as many processes as
CPUs the wall time cannot drop below CPU time / CPUs, which is what bounds the command on a 2-CPU box.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchutil import compile_like_install, vboot_argv  # noqa: E402

from bootstrap.core.disk import scan  # noqa: E402


def build(root: Path, n: int) -> int:
    random.seed(7)
    weights = [40, 15, 10, 8, 6, 5, 4, 3, 3, 2, 1, 1, 1, 1]
    count = 0
    for t, w in enumerate(weights):
        share = max(1, n * w // sum(weights))
        top = root / f"top{t:02d}"
        top.mkdir(parents=True, exist_ok=True)
        count += 1
        made, d = 0, 0
        while made < share:
            sub = top / f"d{d // 20:03d}" / f"e{d % 20:02d}"
            sub.mkdir(parents=True, exist_ok=True)
            made += 1 + (d % 20 == 0)
            for f in range(min(60, share)):
                with open(sub / f"f{f}.bin", "wb") as fh:
                    if f % 7 == 0:
                        fh.write(b"x" * random.randint(1, 9000))
                made += 1
            d += 1
        count += made
    return count


CPU: dict[str, list[float]] = {}  # command label -> CPU seconds (user + system, its whole process tree) per run


def timed(argv: list[str], label: str | None = None, env: dict[str, str] | None = None) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env)
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if label:
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        CPU.setdefault(label, []).append(cpu)
    return elapsed


def timed_call(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def install_notes() -> list[str]:
    """What makes this install's start-up slower than a user's `pip install .` (~20 ms per start)."""
    import glob

    site = Path(sys.executable).parent.parent / "lib"
    if glob.glob(str(site / "python3*" / "site-packages" / "__editable__*finder.py")):
        return ["an editable install whose import finder loads pathlib and more at every start"]
    return []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="leave the tree in /tmp")
    args = ap.parse_args()
    compile_like_install()
    vboot = vboot_argv()
    base = Path(tempfile.mkdtemp(prefix="vboot-bench-disk-", dir="/tmp"))
    try:
        tree, small = base / "tree", base / "small"
        n = build(tree, args.entries)
        build(small, 1000)
        du = ["du", "-B1", "--max-depth=1", str(tree)]
        for _ in range(2):  # warm the page cache and the dentry/inode caches
            timed(du)
        rep = scan(tree, depth=1)
        out = subprocess.run(du, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
        assert int(out.split("\t")[0]) == rep.total_bytes, "scan disagrees with du"
        cols: dict[str, list[float]] = {"du": [], "vboot disk (command)": [], "command, no head start": [],
                                        "command, human view": [], "scan() in-process": [],
                                        "scan(workers=1)": []}
        no_head = {**os.environ, "VBOOT_DISK_HEAD_START": "0"}
        for _ in range(args.runs):
            cols["du"].append(timed(du, "du"))
            cols["vboot disk (command)"].append(timed([*vboot, "disk", str(tree), "--json"], "vboot disk (command)"))
            cols["command, no head start"].append(
                timed([*vboot, "disk", str(tree), "--json"], "command, no head start", env=no_head))
            cols["command, human view"].append(timed([*vboot, "disk", str(tree)], "command, human view"))
            cols["scan() in-process"].append(timed_call(lambda: scan(tree, depth=1)))
            cols["scan(workers=1)"].append(timed_call(lambda: scan(tree, depth=1, workers=1)))
        small_cmd = [timed([*vboot, "disk", str(small)]) for _ in range(args.runs)]
        small_du = [timed(["du", "-B1", "--max-depth=1", str(small)]) for _ in range(args.runs)]
        med = {k: statistics.median(v) for k, v in cols.items()}
        print(f"tree: {n} entries under {tree}, {os.cpu_count()} CPUs, workers used: {rep.workers}, "
              f"median of {args.runs} alternating runs; `{' '.join(vboot)}`")
        for k, v in med.items():
            cpu = f"   CPU {statistics.median(CPU[k]):.3f} s" if k in CPU else ""
            print(f"  {k:24s} {v:7.3f} s   {v / med['du']:5.2f}x du{cpu}")
        for note in install_notes():
            print(f"note: the vboot measured is {note}; `pip install .` into a fresh venv measures what users run")
        print(f"small tree (1k entries): vboot disk {statistics.median(small_cmd) * 1000:.0f} ms, "
              f"du {statistics.median(small_du) * 1000:.0f} ms")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
