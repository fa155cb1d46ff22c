"""Ctrl-C and SIGTERM while `vboot disk` or `vboot pull` runs: with --json, one error envelope on stdout (code
`interrupted`) and exit 130 / 143; without, one line on stderr. Real processes, real signals, nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from tests.support.cli import vboot_exe
from tests.support.e2e import REPO

SIGNALS = [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")]


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory) -> Path:
    """40,000 names in 80 directories, a scan that lasts long after its first fork is seen. Hard links to a few
    files: creating 40,000 inodes takes 20 s of kernel time on a busy test box, linking them under a second."""
    root = tmp_path_factory.mktemp("big")
    sources = []
    for k in range(4):
        (root / f"src{k}").write_bytes(b"x" * 100)
        sources.append(root / f"src{k}")
    for d in range(80):
        sub = root / f"d{d:03d}"
        sub.mkdir()
        for f in range(500):
            os.link(sources[f % 4], sub / f"f{f}")
    return root


def _sigint_default() -> None:
    """In the child before exec: SIGINT's default action, whatever the test run inherited. A run started in the
    background by a non-interactive shell ignores SIGINT, an ignored signal stays ignored across exec, and Python
    then never turns SIGINT into KeyboardInterrupt: the Ctrl-C tests would wait for nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def running(args: list[str], env: dict[str, str]):
    """The installed `vboot ARGS` in its own session (a terminal's Ctrl-C reaches the whole foreground group; here
    each signal goes to exactly the process the test names). Killed with its descendants at the end."""
    proc = subprocess.Popen([*vboot_exe(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_sigint_default)
    try:
        yield proc
    finally:
        try:
            for p in psutil.Process(proc.pid).children(recursive=True):
                p.kill()
        except psutil.Error:
            pass
        proc.kill()
        proc.communicate(timeout=30)


def held_descendants(proc: subprocess.Popen, timeout: float = 20) -> list[psutil.Process]:
    """Wait until ``proc`` has forked (the disk scan's head start or workers), then stop every descendant with
    SIGSTOP: the scan cannot finish before the test's signal arrives, whatever the machine's speed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = _descendants(proc.pid)  # read from /proc directly: psutil's scan of every process is slow
        if kids:
            held = []
            for pid in kids:
                try:
                    os.kill(pid, signal.SIGSTOP)
                    held.append(psutil.Process(pid))
                except (ProcessLookupError, psutil.Error):
                    pass
            return held
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.002)
    raise AssertionError("vboot disk never forked a scan process")


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            kids = [int(k) for k in Path(f"/proc/{current}/task/{current}/children").read_text().split()]
        except OSError:
            continue
        found += kids
        todo += kids
    return found


def assert_gone(procs: list[psutil.Process]) -> None:
    for p in procs:
        try:
            p.resume()  # a stopped process cannot notice that its parent is gone
        except psutil.Error:
            pass
    gone, alive = psutil.wait_procs(procs, timeout=10)
    assert not alive, f"scan processes outlived the interrupted command: {[p.pid for p in alive]}"


def outcome(proc: subprocess.Popen, held: list[psutil.Process]) -> tuple[str, str]:
    """(stdout, stderr) of the signalled ``proc`` once it has exited and the descendants the test stopped are
    gone. A descendant stopped right after its fork still holds the pipes it inherited (before it could point
    them at /dev/null): reading to EOF first would wait for a process the test itself keeps stopped."""
    proc.wait(timeout=30)
    assert_gone(held)
    return proc.communicate(timeout=30)


def interrupted_doc(stdout: str, code: int, name: str, command: str) -> dict:
    doc = json.loads(stdout)  # exactly one document
    assert doc["status"] == "error" and doc["exit_code"] == code and doc["command"] == command, doc
    assert doc["errors"][0]["code"] == "interrupted" and name in doc["errors"][0]["message"]
    assert doc["errors"][0]["hint"]
    return doc


@pytest.mark.parametrize("head_start", [True, False], ids=["fast-path", "cli"])
@pytest.mark.parametrize("sig, code, name", SIGNALS)
def test_disk_json_interrupted_prints_the_error_envelope(big_tree, isolated_env, head_start, sig, code, name):
    env = {**isolated_env, "VBOOT_DISK_HEAD_START": "1" if head_start else "0"}
    with running(["disk", str(big_tree), "--json"], env) as proc:
        held = held_descendants(proc)
        proc.send_signal(sig)
        out, err = outcome(proc, held)
    assert proc.returncode == code, (out, err)
    interrupted_doc(out, code, name, "disk")
    assert "Traceback" not in err and err == ""
    assert_gone(held)


@pytest.mark.parametrize("sig, code, name", SIGNALS)
def test_disk_interrupted_without_json_says_so_in_one_line(big_tree, isolated_env, sig, code, name):
    with running(["disk", str(big_tree)], isolated_env) as proc:
        held = held_descendants(proc)
        proc.send_signal(sig)
        out, err = outcome(proc, held)
    assert proc.returncode == code and out == ""
    assert err.splitlines() == [f"error: interrupted by {name}; the command did not finish"], err
    assert_gone(held)


def test_disk_caches_json_interrupted_names_its_subcommand(big_tree, isolated_env):
    """The envelope's command is the command path for an interrupt too (tests/test_contract.py pins the rule)."""
    env = {**isolated_env, "PIP_CACHE_DIR": str(big_tree)}
    with running(["disk", "caches", "--json"], env) as proc:
        held = held_descendants(proc)
        proc.send_signal(signal.SIGTERM)
        out, _err = outcome(proc, held)
    assert proc.returncode == 143
    interrupted_doc(out, 143, "SIGTERM", "disk caches")
    assert_gone(held)


def test_a_signal_after_the_result_is_out_leaves_the_result_alone(tmp_path, isolated_env):
    """SIGTERM that arrives while (or after) the document is written neither cuts it nor adds a second one."""
    code = ("import os, signal, sys\n"
            "class Stdout:\n"
            "    def __init__(self, real): self.real = real\n"
            "    def write(self, text):\n"
            "        os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-write\n"
            "        return self.real.write(text)\n"
            "    def __getattr__(self, name): return getattr(self.real, name)\n"
            "sys.stdout = Stdout(sys.stdout)\n"
            "sys.argv = ['vboot', 'profiles', '--json']\n"
            "from bootstrap.cli import entry\n"
            "entry.main()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=isolated_env, cwd=REPO,
                          timeout=60)
    doc = json.loads(proc.stdout)
    assert doc["command"] == "profiles" and doc["status"] == "ok" and proc.returncode == doc["exit_code"] == 0


# -- pull: the real ModelScope client against a slow loopback hub ----------------------------------------------
@pytest.mark.e2e
@pytest.mark.parametrize("as_json", [True, False])
@pytest.mark.parametrize("sig, code, name", SIGNALS)
def test_pull_interrupted_mid_download(tmp_path, isolated_env, sig, code, name, as_json):
    from tests.support.hub_server import HubServer

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "config.json").write_text("{}")
    (repo / "weights.bin").write_bytes(os.urandom(4 * 1024 * 1024))
    with HubServer() as hub:
        hub.add_repo("vboot/slow", repo)
        hub.faults.slow_bps = 256 * 1024  # 16 s for the weights: the signal lands mid-file
        env = {**isolated_env, "MODELSCOPE_ENDPOINT": hub.url, "MODELSCOPE_HOME": str(tmp_path / "ms-home"),
               "TQDM_DISABLE": "1", "MODELSCOPE_DOWNLOAD_MAX_RETRIES": "1", "MODELSCOPE_DOWNLOAD_INTRA_CLOUD": "false",
               "VBOOT_PULL_MARGIN": "0"}
        snap = Path(isolated_env["MODELSCOPE_CACHE"]) / "models" / "vboot--slow" / "snapshots" / "master"
        with running(["pull", "vboot/slow", *(["--json"] if as_json else [])], env) as proc:
            deadline = time.monotonic() + 60
            while not (snap / "weights.bin.incomplete").exists():
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
                time.sleep(0.05)
            time.sleep(0.3)
            sent = time.monotonic()
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=30)
            took = time.monotonic() - sent
    assert proc.returncode == code, (out, err)
    assert took < 10, f"the download went on for {took:.1f} s after {name}"
    if as_json:
        interrupted_doc(out, code, name, "pull")
    else:
        assert out == "" and err.splitlines() == [f"error: interrupted by {name}; the command did not finish"], err
    assert "Traceback" not in err
    kept = (snap / "weights.bin.incomplete").stat().st_size
    assert 0 < kept < 4 * 1024 * 1024 and not (snap / "weights.bin").exists()  # a partial to resume, no false file
