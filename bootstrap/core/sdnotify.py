"""systemd's notify protocol, spoken by vboot itself (sd_notify(3): one datagram per message to the socket named
by ``NOTIFY_SOCKET``; no library needed).

What vboot tells systemd, from the lifecycle's events:
- ``STATUS=`` for each phase (starting, the latest log line while vLLM loads, ready, restarting, stopping);
- ``READY=1`` only once the server really generated: ``/health`` said 200 **and** the smoke chat succeeded (or,
  when it did not or was skipped, the first liveness generation that succeeds);
- ``WATCHDOG=1`` after each successful liveness generation, when systemd set ``WATCHDOG_USEC`` (serve then probes
  at least twice per watchdog period, :func:`probe_interval`); a hung engine stops the pings and systemd acts;
- ``STOPPING=1`` when vboot starts to shut the server down.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping

from bootstrap.core.lifecycle import (
    Event,
    Failed,
    GaveUp,
    ProbeFailed,
    ProbeSucceeded,
    Ready,
    Restarting,
    Starting,
    Stopping,
    Waiting,
)

STATUS_EVERY_S = 5.0  # at most one STATUS= line per this many seconds while vLLM starts


def send_datagram(address: str, message: str) -> None:
    """One datagram to the notify socket; ``@name`` is an abstract-namespace socket."""
    addr = "\0" + address[1:] if address.startswith("@") else address
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(addr)
        sock.sendall(message.encode("utf-8", "replace"))


def watchdog_seconds(env: Mapping[str, str], pid: int | None = None) -> float | None:
    """systemd's watchdog period for this process (``WATCHDOG_USEC``; honoured only when ``WATCHDOG_PID`` is
    unset or ours), or None."""
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner and owner.strip() != str(pid if pid is not None else os.getpid()):
        return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    return usec / 1e6 if usec > 0 else None


def probe_interval(configured_s: float, watchdog_s: float | None) -> float:
    """The liveness interval to use: the configured one, shortened to half the watchdog period when there is
    one (so two probes fall in every period), and never off while a watchdog expects pings."""
    if watchdog_s is None:
        return configured_s
    half = watchdog_s / 2
    return half if configured_s <= 0 else min(configured_s, half)


def _one_line(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]


class Notifier:
    """Turns lifecycle events into notify messages. Disabled (does nothing) without ``NOTIFY_SOCKET``."""

    def __init__(self, env: Mapping[str, str], name: str, send: Callable[[str, str], None] = send_datagram,
                 clock: Callable[[], float] | None = None) -> None:
        import time

        self.socket = env.get("NOTIFY_SOCKET") or None
        self.watchdog_s = watchdog_seconds(env)
        self.name = name
        self._send = send
        self._clock = clock or time.monotonic
        self.ready_sent = False
        self._last_status = -1e9
        self.sent: list[str] = []  # what was sent, for the supervisor's log

    @property
    def enabled(self) -> bool:
        return self.socket is not None

    def notify(self, *lines: str) -> None:
        if not self.socket:
            return
        message = "\n".join(lines)
        try:
            self._send(self.socket, message)
            self.sent.append(message)
        except OSError:
            pass  # systemd went away or the socket is not ours: serving goes on

    def on_event(self, event: Event) -> None:
        if not self.enabled:
            return
        if isinstance(event, Starting):
            self._status(f"starting vLLM (generation {event.generation})")
        elif isinstance(event, Waiting):
            if self._clock() - self._last_status >= STATUS_EVERY_S:
                self._status(f"starting vLLM: {event.elapsed_s:.0f} s: {_one_line(event.last_line, 120)}")
        elif isinstance(event, Ready):
            generated = event.smoke is not None and event.smoke.ok
            text = f"ready: {self.name} (generation {event.generation})"
            if generated and not self.ready_sent:
                self.ready_sent = True
                self.notify("READY=1", f"STATUS={text}")
            else:
                self._status(text if generated or self.ready_sent else f"{text}; waiting for a first generation")
        elif isinstance(event, ProbeSucceeded):
            lines = []
            if not self.ready_sent:
                self.ready_sent = True
                lines += ["READY=1", f"STATUS=ready: {self.name} (generation {event.generation})"]
            if self.watchdog_s is not None:
                lines.append("WATCHDOG=1")
            if lines:
                self.notify(*lines)
        elif isinstance(event, ProbeFailed):
            self._status(f"{event.kind} probe failed ({event.consecutive}): {_one_line(event.detail, 120)}")
        elif isinstance(event, Failed):
            self._status(f"failed: {_one_line(event.failure.summary)}")
        elif isinstance(event, Restarting):
            self._status(f"restarting in {event.delay_s:g} s (restart {event.restarts}): "
                         f"{_one_line(event.failure.summary, 120)}")
        elif isinstance(event, GaveUp):
            self._status(f"gave up: {_one_line(event.why)}")
        elif isinstance(event, Stopping):
            self.notify("STOPPING=1", "STATUS=stopping")

    def _status(self, text: str) -> None:
        self._last_status = self._clock()
        self.notify(f"STATUS={text}")
