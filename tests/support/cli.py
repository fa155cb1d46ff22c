"""Running `vboot` in a test: in-process (the default: fast, real tracebacks) or as a real process.

:func:`run_in_process` calls :func:`bootstrap.cli.main.main` with stdin, stdout and stderr replaced and the
environment updated for the call, and answers what :func:`subprocess.run` would: the exit code and the two
streams. It is for everything that needs no process of its own. :func:`run_process` starts the installed console
script, for what only a process shows: the entry point itself and the disk head start (bootstrap.cli.entry),
closed pipes, signals, what a child process inherits, anything end-to-end.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Ran:
    """What a run of `vboot` left: the fields of :class:`subprocess.CompletedProcess` the tests read."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    stdout_bytes: bytes = b""


def vboot_exe() -> list[str]:
    """The installed `vboot` console script next to this interpreter (falls back to `python -m bootstrap`)."""
    exe = Path(sys.executable).with_name("vboot")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("vboot")
    return [found] if found else [sys.executable, "-m", "bootstrap"]


def run_process(*args: str, env: Mapping[str, str] | None = None, timeout: float = 120,
                input: str | None = None) -> subprocess.CompletedProcess:  # noqa: A002 - subprocess.run's name
    """The real `vboot` binary with ``env`` over this process's environment (which the tests' fixture has
    already isolated); stdin is empty unless ``input`` is given."""
    full = {**os.environ, **(env or {})}
    return subprocess.run([*vboot_exe(), *args], capture_output=True, text=True, env=full, timeout=timeout,
                          input=input, stdin=None if input is not None else subprocess.DEVNULL)


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Kept(io.BytesIO):
    """A pipe's far end: what was written stays readable after the writer closed its stream (vboot closes
    stderr when its reader went away, bootstrap.cli.output.broken_pipe)."""

    def close(self) -> None:
        pass


def _stream() -> io.TextIOWrapper:
    # What a pipe gives a Python process here (C.UTF-8): UTF-8 that passes undecodable bytes through.
    return io.TextIOWrapper(_Kept(), encoding="utf-8", errors="surrogateescape", write_through=True)


def _text(stream: io.TextIOWrapper) -> tuple[str, bytes]:
    if not stream.closed:
        stream.flush()
    raw = stream.buffer.getvalue()  # type: ignore[attr-defined]
    return raw.decode("utf-8", "surrogateescape"), raw


class _TimedOut(BaseException):
    """The call ran past its timeout (a BaseException: vboot's own handlers of Exception do not catch it)."""


@contextmanager
def _deadline(timeout: float | None) -> Iterator[None]:
    """SIGALRM after ``timeout`` seconds raises :class:`_TimedOut` where the call is (a blocking open of a FIFO
    included), as :func:`subprocess.run` would kill a process that hangs."""
    if not timeout:
        yield
        return

    def expire(_signum: int, _frame: object) -> None:
        raise _TimedOut()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_in_process(*args: str, env: Mapping[str, str] | None = None, timeout: float | None = None,
                   input: str | None = None) -> Ran:  # noqa: A002 - as run_process
    """`vboot ARGS` run by :func:`bootstrap.cli.main.main` in this process. ``env`` is set for the call only;
    stdin holds ``input`` (or nothing) and is no terminal, like a pipe. An exception that leaves main() (only
    with VBOOT_DEBUG set) is printed as Python would print it, with exit code 1. Past ``timeout`` seconds the
    call is interrupted and :class:`subprocess.TimeoutExpired` raised, as :func:`run_process` does."""
    from bootstrap.cli import output
    from bootstrap.cli.main import main

    out, err = _stream(), _stream()
    saved = sys.stdin, sys.stdout, sys.stderr
    code: int = 0
    timed_out = False
    with _environment(env or {}):
        sys.stdin, sys.stdout, sys.stderr = io.StringIO(input or ""), out, err
        try:
            with _deadline(timeout):
                main(list(args))
        except _TimedOut:
            timed_out = True
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                err.write(f"{exc.code}\n")
                code = 1
        except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught exception
            err.write(traceback.format_exc())
            code = 1
        finally:
            sys.stdin, sys.stdout, sys.stderr = saved
            output.STATE.reset()
    stdout, raw = _text(out)
    stderr, _ = _text(err)
    if timed_out:
        raise subprocess.TimeoutExpired(["vboot", *args], timeout or 0, stdout, stderr)
    return Ran(list(args), code, stdout, stderr, raw)
