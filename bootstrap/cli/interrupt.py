"""SIGTERM as an exception, like Ctrl-C's KeyboardInterrupt, so that an interrupted command still reports.

Python turns SIGINT into KeyboardInterrupt; SIGTERM's default action ends the process on the spot, leaving a
`--json` caller with an empty stdout. :func:`install` makes SIGTERM raise :class:`Terminated`, a
KeyboardInterrupt, so that everything written for Ctrl-C runs for it too (``finally`` blocks, the scan's worker
cleanup, the ModelScope client's cancellation, ``subprocess.run`` killing its child) and the one handler at the
entry point prints the error envelope (:func:`bootstrap.cli.output.interrupted`) and exits 143.

Commands that own their signals (``serve`` while it supervises, ``top``'s full-screen loop) install their own
handlers over this one and restore it afterwards. The console script installs an equivalent handler before
anything is loaded (bootstrap.cli.entry: it imports this module only when the signal comes), and install()
leaves that one in place. This module imports nothing but :mod:`signal` (not even typing: ~7 ms).
"""

from __future__ import annotations

import signal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived. ``signum`` tells it from Ctrl-C (a plain KeyboardInterrupt means SIGINT)."""

    signum = signal.SIGTERM


def _raise_terminated(_signum: int, _frame: Any) -> None:
    raise Terminated()


def install() -> Any:
    """Make SIGTERM raise :class:`Terminated` unless its handling was changed before us (a caller that starts
    vboot with SIGTERM ignored keeps it ignored). Returns the previous handler, for :func:`restore`."""
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_terminated)
    return previous


def restore(previous: Any) -> None:
    """Put back what :func:`install` replaced (for in-process callers such as tests)."""
    if signal.getsignal(signal.SIGTERM) is _raise_terminated and previous is not None:
        signal.signal(signal.SIGTERM, previous)


class Stopped(BaseException):
    """A KeyboardInterrupt (or :class:`Terminated`) carried past click, which would turn it into a bare
    ``Abort`` after printing a blank line; ``interrupt`` is the original."""

    def __init__(self, interrupt: KeyboardInterrupt) -> None:
        super().__init__(interrupt)
        self.interrupt = interrupt
        self.signum = getattr(interrupt, "signum", signal.SIGINT)
