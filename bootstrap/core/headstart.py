"""Run a function in a forked child and collect its result later: a head start for work whose inputs are
known before the rest of the program has loaded.

The child imports the function's module itself, after the fork, so starting costs the caller one ``fork``
and nothing else; its stdout and stderr are /dev/null (the function returns its result, it never prints). The
function gets ``watch_parent=PID`` and must stop soon after that process goes away (the child is re-parented
when its starter dies, even by SIGKILL). Its return value travels back through a pipe with :mod:`marshal`
(plain values only). This module imports only the cheapest parts of the standard library, since it runs before
anything else is loaded.
"""

from __future__ import annotations

import atexit
import importlib
import marshal
import os
import signal


def _release_output() -> None:
    """The child never prints: stdout and stderr become /dev/null, so that a reader of the starter's output sees
    its end when the starter ends (a child still winding down must not hold the pipe open)."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)


class HeadStart:
    """``module:function(*args, watch_parent=<this PID>)`` running in a forked child."""

    def __init__(self, target: str, args: tuple) -> None:
        self.target = target
        self.args = args
        starter = os.getpid()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never returns into the caller
            code = 1
            try:
                os.close(r)
                _release_output()
                module_name, attr = target.split(":")
                value = getattr(importlib.import_module(module_name), attr)(*args, watch_parent=starter)
                data = memoryview(marshal.dumps(value))
                while data:
                    data = data[os.write(w, data):]
                code = 0
            except BaseException:  # noqa: BLE001 - the caller does the work itself when this failed
                pass
            finally:
                os._exit(code)
        os.close(w)
        self.pid: int | None = pid
        self._fd: int | None = r
        atexit.register(self.cancel)

    def result(self) -> object | None:
        """Wait for the child; its return value, or None when it failed or was cancelled."""
        if self.pid is None or self._fd is None:
            return None
        chunks = []
        try:
            while chunk := os.read(self._fd, 1 << 20):
                chunks.append(chunk)
        finally:
            os.close(self._fd)
            self._fd = None
        try:
            status: int | None = os.waitpid(self.pid, 0)[1]
        except ChildProcessError:  # reaped by the system (SIGCHLD ignored): judge by what arrived
            status = None
        self.pid = None
        if status not in (0, None) or not chunks:
            return None
        try:
            return marshal.loads(b"".join(chunks))
        except (EOFError, ValueError, TypeError):  # cut short
            return None

    def cancel(self) -> None:
        """Kill the child (what it started follows through ``watch_parent``) and reap it. Idempotent."""
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.pid = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
