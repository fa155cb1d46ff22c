"""The `vboot` console script: gives `vboot disk` a head start, then runs the CLI.

Python's start-up plus importing click and parsing take 50-120 ms before any command runs, while the other
CPUs idle; a 200k-entry scan on 8 processes takes about as long. So when the arguments of `vboot disk` are
plain (the grammar below, nothing else), the scan starts in a forked child *before* anything else is imported
(bootstrap.core.headstart, bootstrap.core.duwalk). With one PATH at most, the report is then printed without
loading click at all (bootstrap.cli.disk_view.print_head_start): on a 2-CPU box loading click would take CPU
time from the scan. Otherwise (several PATHs, or no report from the head start) the CLI runs, and its report
command takes the head start's result only if click parsed the same root, depth and flags. The grammar is
held to click's parsing by tests (tests/test_disk_headstart.py), so the head start can change how soon the
report comes, never what it says. `VBOOT_DISK_HEAD_START=0` turns it off.
"""

from __future__ import annotations

import os
import signal
import sys

# `vboot disk` options the head start understands; any other option means no head start.
_FLAGS = {"--json": "json", "--apparent": "apparent", "-x": "one_file_system", "--one-file-system": "one_file_system"}
_VALUED = {"--depth": "depth", "-d": "depth", "--top": "top", "-n": "top"}
_SUBCOMMANDS = ("caches", "clean")

HEAD_START = None  # the HeadStart running this process's first disk scan, if any


def disk_request(args: list[str]) -> dict | None:
    """What `vboot disk ARGS` asks for, when ARGS are plain: {"paths", "depth", "top", "apparent",
    "one_file_system", "json"} with click's defaults; None for anything else (click then parses it)."""
    found: dict = {"paths": [], "depth": 1, "top": 15, "apparent": False, "one_file_system": False, "json": False}
    paths = found["paths"]
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            paths.extend(args[i:])
            break
        if not arg.startswith("-") or arg == "-":
            paths.append(arg)
            continue
        if arg in _FLAGS:
            found[_FLAGS[arg]] = True
            continue
        name, value = arg, None
        if arg.startswith("--") and "=" in arg:
            name, value = arg.split("=", 1)
        elif not arg.startswith("--") and len(arg) > 2:
            name, value = arg[:2], arg[2:]
        if name not in _VALUED:
            return None
        if value is None:
            if i >= len(args):
                return None
            value, i = args[i], i + 1
        if not (value.isascii() and value.isdigit()) or len(value) > 9:
            return None
        found[_VALUED[name]] = int(value)
    if found["depth"] > 64 or found["top"] < 1 or (paths and paths[0] in _SUBCOMMANDS):
        return None  # click will refuse it, or it is a subcommand
    return found


def scan_args(request: dict) -> tuple[str, int, bool, bool]:
    """(root, depth, apparent, one_file_system) of a request's first report: the scan the head start runs."""
    root = request["paths"][0] if request["paths"] else os.environ.get("HOME") or os.path.expanduser("~")
    return root, request["depth"], request["apparent"], request["one_file_system"]


def _same(a: tuple, b: tuple) -> bool:
    return (os.path.abspath(a[0]), *a[1:]) == (os.path.abspath(b[0]), *b[1:])


def take_head_start(root: str, depth: int, apparent: bool, one_file_system: bool) -> dict | None:
    """The head start's result (what :func:`bootstrap.core.duwalk.scan_wire` returns) when it measured exactly
    this request; otherwise None, after stopping a head start that measured something else."""
    global HEAD_START
    started, HEAD_START = HEAD_START, None
    if started is None:
        return None
    if not _same(started.args, (root, depth, apparent, one_file_system)):
        started.cancel()
        return None
    result = started.result()
    return result if isinstance(result, dict) else None


def _terminated(_signum: int, _frame: object) -> None:
    """SIGTERM's handler until the CLI has loaded: :func:`bootstrap.cli.interrupt.install`'s, imported late."""
    from bootstrap.cli.interrupt import Terminated

    raise Terminated()


def main() -> None:
    global HEAD_START
    argv = sys.argv[1:]
    ours = argv[: argv.index("--")] if "--" in argv else argv
    request = None
    try:
        # SIGTERM raises (like Ctrl-C) from the start, so that `vboot ... --json` stopped at any time still prints
        # its one JSON document (bootstrap.cli.interrupt, imported only when the signal comes: before the head
        # start forks, every millisecond is the scan's).
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _terminated)
        # An ignored SIGCHLD is inherited across exec; it would hide the exit status of every child vboot waits
        # for (disk's scan processes, the supervised vLLM server).
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # Started with stdout or stderr closed (`vboot ... >&-`): write to /dev/null rather than crash, so the
        # exit code still says what happened.
        for stream in ("stdout", "stderr"):
            if getattr(sys, stream) is None:
                setattr(sys, stream, open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process
        if argv[:1] == ["disk"] and os.environ.get("VBOOT_DISK_HEAD_START", "1") != "0":
            request = disk_request(argv[1:])
            if request is not None:
                from bootstrap.core.headstart import HeadStart

                try:
                    HEAD_START = HeadStart("bootstrap.core.duwalk:scan_wire", scan_args(request))
                except OSError:  # fork refused (process limit): the command scans itself
                    HEAD_START = None
        if request is not None and HEAD_START is not None and len(request["paths"]) <= 1:
            from bootstrap.cli.disk_view import print_head_start

            print_head_start(request)  # exits, unless the head start brought no report
        from bootstrap.cli.main import main as run
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM while loading the CLI, or during the disk fast path
        from bootstrap.cli import output

        if request is not None:  # `vboot disk` by the grammar above: its command path, as click would resolve it
            output.STATE.command = "disk"
        output.STATE.json = output.STATE.json or "--json" in ours
        output.exit_interrupted(exc)
    run()


if __name__ == "__main__":
    main()
