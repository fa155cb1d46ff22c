"""`vboot disk`'s head start: the scan forked before click loads is used only for exactly the parsed request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from bootstrap.cli import disk_request as plain
from bootstrap.cli.disk import report_cmd
from bootstrap.core.disk import report_from_wire, scan, scan_wire
from bootstrap.core.headstart import HeadStart
from tests.support.disk import (
    SLOW_OPEN,
    SPY,
    comparable,
    du,
    forked_children,
    kill_and_expect_gone,
    script_running,
    vboot_disk_spied,
)
from tests.support.trees import build, wide_tree

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("args", [
    [], ["/data"], ["/data", "--json"], ["--json", "/data"], ["/data", "--depth", "2"], ["/data", "--depth=3"],
    ["/data", "-d", "0"], ["/data", "-d2"], ["-x", "/data"], ["/data", "--one-file-system", "--apparent"],
    ["/data", "--top", "5"], ["/data", "-n3", "--json"], ["--", "-odd-name"], ["/a", "/b"], ["rel/dir"],
])
def test_the_plain_grammar_agrees_with_click(args, monkeypatch):
    monkeypatch.setenv("HOME", "/home/someone")
    got = plain.disk_request(args)
    assert got is not None
    ctx = report_cmd.make_context("disk", list(args))
    p = ctx.params
    assert got == {"paths": list(p["paths"]), "depth": p["depth"], "top": p["top"], "apparent": p["apparent"],
                   "one_file_system": p["one_file_system"], "json": p["as_json"]}
    root = p["paths"][0] if p["paths"] else "/home/someone"
    assert plain.scan_args(got) == (root, p["depth"], p["apparent"], p["one_file_system"])


@pytest.mark.parametrize("args", [
    ["caches"], ["clean", "--partial"], ["/data", "--depth", "x"], ["/data", "--depth", "65"], ["/data", "-d"],
    ["/data", "--top", "0"], ["/data", "-xd", "2"], ["/data", "--verbose"], ["-h"], ["--help"], ["/data", "-d", "-1"],
    ["/data", "--depth", "²"], ["/data", "--depth", "1" * 5000], ["/data", "-n", "9" * 40],
])
def test_anything_else_gets_no_head_start(args):
    assert plain.disk_request(args) is None


def test_every_option_of_the_report_is_in_the_grammar():
    # A new option left out of the grammar would quietly cost every `vboot disk` that uses it its head start.
    names = {opt for param in report_cmd.params if param.param_type_name == "option" for opt in param.opts}
    assert names - {"-h", "--help"} == set(plain._FLAG) | set(plain._VALUED)


def test_a_head_start_for_the_same_request_returns_the_same_report(tmp_path, monkeypatch):
    root = build(tmp_path / "t")
    monkeypatch.setattr(plain, "HEAD_START", HeadStart("bootstrap.core.duwalk:scan_wire", (str(root), 2, False, False)))
    wire = plain.take_head_start(str(root) + "/", 2, False, False)  # the same directory, spelled differently
    assert wire is not None and plain.HEAD_START is None
    rep = report_from_wire(wire)
    direct = scan(root, depth=2)
    assert (rep.total_bytes, rep.entries, rep.root) == (direct.total_bytes, direct.entries, direct.root)
    assert {**{e.path: e.bytes for e in rep.entries}, rep.root: rep.total_bytes} == du(root, 2)


@pytest.mark.parametrize("other", [(1, False, False), (2, True, False), (2, False, True)])
def test_a_head_start_for_another_request_is_killed_and_not_used(tmp_path, monkeypatch, other):
    root = build(tmp_path / "t")
    started = HeadStart("bootstrap.core.duwalk:scan_wire", (str(root), 2, False, False))
    pid = started.pid
    monkeypatch.setattr(plain, "HEAD_START", started)
    assert plain.take_head_start(str(root), *other) is None
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # already reaped: nothing left behind


def test_a_failed_head_start_yields_none_so_the_command_meets_the_error_itself(tmp_path, monkeypatch):
    missing = str(tmp_path / "nope")
    monkeypatch.setattr(plain, "HEAD_START", HeadStart("bootstrap.core.duwalk:scan_wire", (missing, 1, False, False)))
    assert plain.take_head_start(missing, 1, False, False) is None


def test_scan_wire_round_trips_warnings_and_odd_names(tmp_path):
    root = build(tmp_path / "t")
    os.mkdir(os.path.join(os.fsencode(root), b"bad\xffname"))
    rep = scan(root, depth=1)
    assert report_from_wire(scan_wire(str(root), 1)).warnings == rep.warnings != ()


def test_the_head_start_child_loads_only_the_walk(isolated_env):
    """The child scans while the parent imports click: the walk's own import must not pay for dataclasses,
    typing or the report types (they cost ~20 ms of one CPU of two, before the first directory is read)."""
    code = ("import sys; before = set(sys.modules); import bootstrap.core.duwalk; "
            "print(' '.join(sorted(set(sys.modules) - before)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=isolated_env,
                          cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    loaded = set(proc.stdout.split())
    assert loaded and not loaded & {"dataclasses", "typing", "inspect", "bootstrap.core.disk", "bootstrap.core.errors",
                                    "collections", "pathlib"}, loaded


@pytest.mark.parametrize("extra, used", [([], True), (["--depth", "2"], True), (["-xd", "2"], False)])
def test_the_cli_uses_the_head_start_only_when_it_matches(tmp_path, isolated_env, extra, used):
    root = build(tmp_path / "t")
    depth = 2 if extra else 1
    proc = subprocess.run([sys.executable, "-c", SPY, "disk", str(root), *extra, "--json"], capture_output=True,
                          text=True, env=isolated_env, cwd=REPO, stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"head start used: {used}" in proc.stderr
    data = json.loads(proc.stdout)["data"]
    assert {**{e["path"]: e["bytes"] for e in data["entries"]}, data["root"]: data["total_bytes"]} == du(root, depth)


def test_the_cli_without_head_start_when_turned_off(tmp_path, isolated_env):
    root = build(tmp_path / "t")
    proc = subprocess.run([sys.executable, "-c", SPY, "disk", str(root), "--json"], capture_output=True, text=True,
                          env={**isolated_env, "VBOOT_DISK_HEAD_START": "0"}, cwd=REPO, stdin=subprocess.DEVNULL,
                          timeout=60)
    assert proc.returncode == 0 and "head start used: False" in proc.stderr


@pytest.mark.parametrize("extra", [[], ["--depth", "2", "-n", "2"], ["--apparent", "-x"], ["-d0"]])
@pytest.mark.parametrize("as_json", [True, False])
def test_a_plain_request_prints_without_click_exactly_what_the_cli_prints(tmp_path, isolated_env, extra, as_json):
    root = build(tmp_path / "t")
    os.mkdir(os.path.join(os.fsencode(root), b"bad\xffname"))  # a warning: status "warn", a note in the view
    args = [str(root), *extra, *(["--json"] if as_json else [])]
    fast, cli = vboot_disk_spied(args, isolated_env, True), vboot_disk_spied(args, isolated_env, False)
    assert (fast.returncode, cli.returncode) == (0, 0), fast.stderr + cli.stderr
    assert "head start used: True" in fast.stderr and "click loaded: False" in fast.stderr
    assert "head start used: False" in cli.stderr and "click loaded: True" in cli.stderr
    assert comparable(fast, as_json) == comparable(cli, as_json)
    assert str(root) in fast.stdout


def test_an_ascii_only_stdout_gets_ascii_bars_both_ways(tmp_path, isolated_env):
    root = build(tmp_path / "t")
    env = {**isolated_env, "PYTHONIOENCODING": "ascii"}
    fast, cli = vboot_disk_spied([str(root)], env, True), vboot_disk_spied([str(root)], env, False)
    assert (fast.returncode, cli.returncode) == (0, 0), fast.stderr + cli.stderr
    assert "#" in fast.stdout and "█" not in fast.stdout
    assert comparable(fast, False) == comparable(cli, False)


def test_an_unexpected_failure_on_the_fast_path_is_one_line(tmp_path, isolated_env):
    """As in the CLI's own handler: one line and exit 1, the traceback only with VBOOT_DEBUG=1."""
    code = ("import sys; from bootstrap.cli import disk_view, entry\n"
            "def broken(data): raise RuntimeError('render broke')\n"
            "disk_view.render_report = broken\n"
            "sys.argv = ['vboot', 'disk', sys.argv[1]]; entry.main()")
    root = build(tmp_path / "t")
    for debug in ("", "1"):
        proc = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True,
                              env={**isolated_env, "VBOOT_DEBUG": debug}, cwd=REPO, timeout=60)
        assert proc.returncode == 1
        assert ("Traceback" in proc.stderr) == bool(debug), proc.stderr
        if not debug:
            assert proc.stderr.startswith("error: internal error: RuntimeError: render broke"), proc.stderr

def test_a_plain_request_on_a_missing_path_gets_the_cli_error(tmp_path, isolated_env):
    missing = str(tmp_path / "nope")
    for as_json in (True, False):
        args = [missing, *(["--json"] if as_json else [])]
        fast, cli = vboot_disk_spied(args, isolated_env, True), vboot_disk_spied(args, isolated_env, False)
        assert fast.returncode == cli.returncode != 0
        assert fast.stdout == cli.stdout
        assert "no such file or directory" in (fast.stdout if as_json else fast.stderr)
        assert "Traceback" not in fast.stderr


def test_several_paths_go_through_the_cli_with_the_head_start(tmp_path, isolated_env):
    a, b = build(tmp_path / "a"), build(tmp_path / "b")
    proc = vboot_disk_spied([str(a), str(b)], isolated_env, True)
    assert proc.returncode == 0, proc.stderr
    assert "head start used: True" in proc.stderr and "click loaded: True" in proc.stderr
    assert str(a) in proc.stdout and str(b) in proc.stdout


_ORPHAN = SLOW_OPEN + """
from bootstrap.core import headstart

OUT = os.dup(1)  # the head start's own stdout is /dev/null: it reports its PID through this copy

def slow_scan(root, *, watch_parent):
    os.write(OUT, f"scanning {os.getpid()}\\n".encode())
    return disk.scan(root, workers=3, split_after=1, open_dir=slow, watch_parent=watch_parent).total_bytes

headstart.HeadStart("__main__:slow_scan", (sys.argv[1],))
time.sleep(60)
"""


def test_a_head_start_stops_when_its_starter_is_killed(tmp_path):
    root = wide_tree(tmp_path / "t")
    with script_running(_ORPHAN, root) as (proc, line):
        assert line[0] == b"scanning"
        child = psutil.Process(int(line[1]))
        tree = [child, *forked_children(child, 2, "the head start")]
        kill_and_expect_gone(proc, tree, "the head start")


def test_the_head_start_and_its_workers_let_go_of_stdout_and_stderr(tmp_path):
    """They never print; holding the caller's pipes would keep `vboot disk | reader` waiting after vboot ended."""
    root = wide_tree(tmp_path / "t")
    with script_running(_ORPHAN, root) as (proc, line):
        child = psutil.Process(int(line[1]))
        for p in [child, *forked_children(child, 2, "the head start")]:
            assert [os.readlink(f"/proc/{p.pid}/fd/{fd}") for fd in (1, 2)] == [os.devnull, os.devnull]


def test_an_ignored_sigchld_does_not_break_the_command(tmp_path, isolated_env):
    # SIG_IGN for SIGCHLD survives exec; vboot resets it, and a scan whose children the system reaped still works.
    root = build(tmp_path / "t")
    code = ("import os, signal, sys; signal.signal(signal.SIGCHLD, signal.SIG_IGN); "
            "os.execv(sys.executable, [sys.executable, '-m', 'bootstrap', 'disk', sys.argv[1], '--json'])")
    proc = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True,
                          env=isolated_env, cwd=REPO, stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["data"]["total_bytes"] == du(root, 0)[str(root)]


def test_results_survive_children_reaped_by_the_system(tmp_path):
    import signal

    root = build(tmp_path / "t")
    old = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        started = HeadStart("bootstrap.core.duwalk:scan_wire", (str(root), 1, False, False))
        wire = started.result()
        parallel = scan(root, depth=2, workers=2, split_after=1)
    finally:
        signal.signal(signal.SIGCHLD, old)
    assert wire is not None and report_from_wire(wire).total_bytes == du(root, 0)[str(root)]
    assert {**{e.path: e.bytes for e in parallel.entries}, parallel.root: parallel.total_bytes} == du(root, 2)
