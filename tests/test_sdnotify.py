"""What vboot tells systemd, event by event (sd_notify(3)), and a real datagram socket."""

from __future__ import annotations

import socket

from bootstrap.core.diagnosis import Diagnosis
from bootstrap.core.lifecycle import (
    Failed,
    Failure,
    ProbeFailed,
    ProbeResult,
    ProbeSucceeded,
    Ready,
    Restarting,
    Starting,
    Stopping,
    Waiting,
)
from bootstrap.core.sdnotify import Notifier, probe_interval, send_datagram, watchdog_seconds


def notifier(env=None, clock=lambda: 0.0):
    sent = []
    n = Notifier({"NOTIFY_SOCKET": "/run/x.sock", **(env or {})}, "qwen", send=lambda addr, msg: sent.append(msg),
                 clock=clock)
    return n, sent


OK_SMOKE = ProbeResult(True, 0.2, 8, 40.0, "hi")
FAILURE = Failure("exited", "vLLM exited with code 0 while serving", "serving", 1.0, 0)


def test_nothing_is_sent_without_a_notify_socket():
    sent = []
    n = Notifier({}, "qwen", send=lambda a, m: sent.append(m))
    n.on_event(Ready(1, 3.0, OK_SMOKE, (2,)))
    assert not n.enabled and sent == []


def test_ready_is_sent_once_the_smoke_chat_succeeded():
    n, sent = notifier()
    n.on_event(Starting(1, 10, 10, "/l"))
    n.on_event(Waiting(1, 5.0, "loading"))
    assert not any("READY=1" in m for m in sent)
    n.on_event(Ready(1, 3.0, OK_SMOKE, (2,)))
    assert sent[-1].split("\n")[0] == "READY=1" and "STATUS=ready: qwen" in sent[-1]


def test_a_failed_smoke_chat_delays_ready_until_a_generation_succeeds():
    n, sent = notifier()
    n.on_event(Ready(1, 3.0, ProbeResult(False, 0.1, error="HTTP 500"), (2,)))
    assert not any("READY=1" in m for m in sent)
    n.on_event(ProbeSucceeded(1, 0.05))
    assert "READY=1" in sent[-1]


def test_ready_is_not_repeated_after_a_restart():
    n, sent = notifier()
    n.on_event(Ready(1, 3.0, OK_SMOKE, ()))
    n.on_event(Restarting(2, 1, 0.0, FAILURE))
    n.on_event(Ready(2, 3.0, OK_SMOKE, ()))
    assert sum("READY=1" in m for m in sent) == 1
    assert sent[-1] == "STATUS=ready: qwen (generation 2)"


def test_watchdog_pings_follow_successful_probes_only_when_systemd_asked():
    n, sent = notifier({"WATCHDOG_USEC": "20000000"})
    n.on_event(Ready(1, 3.0, OK_SMOKE, ()))
    n.on_event(ProbeSucceeded(1, 0.05))
    n.on_event(ProbeFailed(1, "liveness", "timed out", 1))
    assert sent[-2] == "WATCHDOG=1" and not sent[-1].startswith("WATCHDOG")
    plain, sent2 = notifier()
    plain.on_event(Ready(1, 3.0, OK_SMOKE, ()))
    plain.on_event(ProbeSucceeded(1, 0.05))
    assert not any("WATCHDOG" in m for m in sent2)


def test_stopping_and_failures_are_reported():
    n, sent = notifier()
    diag = Diagnosis("cuda_oom", "the GPU ran out of memory", "lower it", "x")
    n.on_event(Failed(1, Failure("exited", "vLLM exited", "serving", 1.0, 1, None, diag), None))
    n.on_event(Stopping(15))
    assert sent[0].startswith("STATUS=failed: vLLM exited") and sent[1] == "STOPPING=1\nSTATUS=stopping"


def test_status_lines_while_starting_are_rate_limited_and_one_line():
    t = [0.0]
    n, sent = notifier(clock=lambda: t[0])
    for i in range(20):
        t[0] = i * 1.0
        n.on_event(Waiting(1, float(i), "line one\nline two"))
    assert len(sent) == 4 and all("\n" not in m for m in sent)


def test_the_watchdog_is_ours_only_when_its_pid_is():
    assert watchdog_seconds({"WATCHDOG_USEC": "30000000"}, pid=5) == 30.0
    assert watchdog_seconds({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "5"}, pid=5) == 30.0
    assert watchdog_seconds({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "6"}, pid=5) is None
    assert watchdog_seconds({"WATCHDOG_USEC": "x"}) is None and watchdog_seconds({}) is None


def test_probes_come_at_least_twice_per_watchdog_period():
    assert probe_interval(30.0, None) == 30.0
    assert probe_interval(30.0, 20.0) == 10.0
    assert probe_interval(5.0, 60.0) == 5.0
    assert probe_interval(0.0, 60.0) == 30.0  # a watchdog needs probes even when they were turned off


def test_a_real_datagram_reaches_a_socket_in_the_abstract_namespace_and_on_disk(tmp_path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as abstract, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as on_disk:
        abstract.bind("\0vboot-test-notify")
        on_disk.bind(str(tmp_path / "notify.sock"))
        send_datagram("@vboot-test-notify", "READY=1\nSTATUS=ready")
        send_datagram(str(tmp_path / "notify.sock"), "WATCHDOG=1")
        assert abstract.recv(4096) == b"READY=1\nSTATUS=ready"
        assert on_disk.recv(4096) == b"WATCHDOG=1"
