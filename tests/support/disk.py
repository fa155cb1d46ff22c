"""Helpers of the disk tests: du's own numbers to compare with, scans in a child process (to kill it and watch its
workers go), and `vboot disk` run with a spy on the head start (bootstrap.cli.entry) to compare the fast path
with the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from tests.support.e2e import REPO


def du_s(path: Path) -> int:
    out = subprocess.run(["du", "-s", "-B1", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split("\t", 1)[0])


def du(root: Path, depth: int, apparent: bool = False) -> dict[str, int]:
    """`du -0 -a -B1 --max-depth=N ROOT` as {path: bytes} (NUL-separated, so odd names survive)."""
    args = ["du", "-0", "-a", "-B1", f"--max-depth={depth}"] + (["--apparent-size"] if apparent else []) + [str(root)]
    out = subprocess.run(args, capture_output=True, check=False).stdout
    result = {}
    for rec in out.split(b"\0"):
        if rec:
            size, path = rec.split(b"\t", 1)
            shown = os.fsdecode(path)
            result[shown.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")] = int(size)
    return result


@contextmanager
def script_running(script: str, root: Path):
    """``python -c SCRIPT ROOT`` from the repo; yields (the process, its first line split). Killed at the end."""
    proc = subprocess.Popen([sys.executable, "-c", script, str(root)], stdout=subprocess.PIPE,
                            cwd=REPO)
    try:
        yield proc, proc.stdout.readline().split()
    finally:
        proc.kill()
        proc.wait(5)


def forked_children(parent, count: int, what: str) -> list:
    """The ``count`` children ``parent`` (a psutil.Process) forks within 10 s."""
    deadline = time.monotonic() + 10
    while len(parent.children()) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    children = parent.children()
    assert len(children) == count, f"{what} never forked its workers"
    return children


def kill_and_expect_gone(starter: subprocess.Popen, procs: list, what: str) -> None:
    """SIGKILL ``starter`` alone; every process of ``procs`` must be gone within 3 s."""
    import psutil

    starter.kill()
    starter.wait(5)
    gone, alive = psutil.wait_procs(procs, timeout=3)
    assert not alive, f"{what} outlived the killed process: {[p.pid for p in alive]}"


# A scan that takes seconds (50 ms per directory) and checks its parent after every directory.
SLOW_OPEN = """
import os, sys, time
from bootstrap.core import disk, duwalk

def slow(path, name, dir_fd):
    time.sleep(0.05)
    return disk.default_open_dir(path, name, dir_fd)

duwalk.WATCH_EVERY = 1
"""


# `python -c SPY disk ARGS`: the console script, telling on stderr whether the head start's report was used and
# whether click was loaded when the result was printed.
SPY = """
import sys
from bootstrap.cli import disk_request, entry, output
real = disk_request.take_head_start

def spy(*args):
    wire = real(*args)
    sys.stderr.write(f"head start used: {wire is not None}\\n")
    return wire

disk_request.take_head_start = spy
real_emit = output.emit

def emit_spy(*args, **kwargs):  # the fast path leaves by os._exit: report here, not at exit
    sys.stderr.write(f"click loaded: {'click' in sys.modules}\\n")
    sys.stderr.flush()
    return real_emit(*args, **kwargs)

output.emit = emit_spy
sys.argv = ["vboot", *sys.argv[1:]]
entry.main()
"""


def vboot_disk_spied(args: list[str], env: dict[str, str], head_start: bool) -> subprocess.CompletedProcess:
    env = {**env, "VBOOT_DISK_HEAD_START": "1" if head_start else "0", "COLUMNS": "120"}
    return subprocess.run([sys.executable, "-c", SPY, "disk", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, stdin=subprocess.DEVNULL, timeout=60)


def comparable(proc: subprocess.CompletedProcess, as_json: bool) -> object:
    """The output minus what may differ between two runs: time taken, the filesystem's free space."""
    if as_json:
        doc = json.loads(proc.stdout)
        for part in (doc["data"], *doc["data"]["reports"]):
            part.pop("elapsed_s")
            part.pop("fs_free_bytes")
        return doc
    return re.sub(r"filesystem .* free", "filesystem", proc.stdout)
