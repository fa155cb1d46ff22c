"""The `vboot` console script: gives `vboot disk` a head start, then runs the CLI.

Python's start-up plus importing click and parsing take 50-120 ms before any command runs, while the other
CPUs idle; a 200k-entry scan on 8 processes takes about as long. So when the arguments of `vboot disk` are
plain (bootstrap.cli.disk_request: a grammar generated from the table the click command is declared from), the
scan starts in a forked child *before* anything else is imported (bootstrap.core.headstart,
bootstrap.core.duwalk). With one PATH at most, the report is then printed without loading click at all
(bootstrap.cli.disk_view.print_head_start): on a 2-CPU box loading click would take CPU time from the scan.
Otherwise (several PATHs, or no report from the head start) the CLI runs, and its report command takes the head
start's result only if click parsed the same root, depth and flags. Tests hold the grammar to click's parsing
(tests/test_disk_headstart.py), so the head start can change how soon the report comes, never what it says.
`VBOOT_DISK_HEAD_START=0` turns it off.
"""

from __future__ import annotations

import os
import signal
import sys


def _terminated(_signum: int, _frame: object) -> None:
    """SIGTERM's handler until the CLI has loaded: :func:`bootstrap.cli.interrupt.install`'s, imported late."""
    from bootstrap.cli.interrupt import Terminated

    raise Terminated()


def main() -> None:
    argv = sys.argv[1:]
    ours = argv[: argv.index("--")] if "--" in argv else argv
    request = None
    started = False
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
            from bootstrap.cli import disk_request as plain

            request = plain.disk_request(argv[1:])
            if request is not None:
                from bootstrap.core.headstart import HeadStart

                try:
                    plain.HEAD_START = HeadStart("bootstrap.core.duwalk:scan_wire", plain.scan_args(request))
                    started = True
                except OSError:  # fork refused (process limit): the command scans itself
                    plain.HEAD_START = None
        if started and request is not None and len(request["paths"]) <= 1:
            from bootstrap.cli.disk_view import print_head_start

            code = print_head_start(request)  # None: the head start brought no report
            if code is not None:
                # The report is out and flushed. Python's own teardown (clearing every loaded module, rich's
                # included) would take another 6-11 ms before the shell gets its prompt back; nothing is left to
                # release (the head start has been reaped, no file is open for writing), so leave now.
                os._exit(code)
        from bootstrap.cli.main import main as run
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM while loading the CLI, or during the disk fast path
        from bootstrap.cli import output

        if request is not None:  # `vboot disk` by the grammar above: its command path, as click would resolve it
            output.STATE.command = "disk"
        output.STATE.json = output.STATE.json or "--json" in ours
        sys.exit(output.interrupted(exc))
    run()


if __name__ == "__main__":
    main()
