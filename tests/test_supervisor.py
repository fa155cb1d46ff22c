"""The supervisor's decisions, replayed with a fake clock, a fake child and a fake process group."""

from __future__ import annotations

import signal

from bootstrap.core.supervisor import Supervisor, stop_group
from tests.support.fakes import FakeChild, FakeClock, FakeGroup


def make(child, group, clock, grace=20.0):
    return Supervisor(["vllm"], {}, None, popen=lambda *a, **k: child, ops=group.ops(), clock=clock, grace_s=grace)


def test_stop_sends_sigterm_and_waits_for_every_member():
    clock = FakeClock()
    group = FakeGroup([100, 101, 102], after_s=3.0, clock=clock)
    out = stop_group(100, group.ops(), clock, grace_s=20)
    assert group.sent == [signal.SIGTERM, signal.SIGCONT] and not out.escalated and out.survivors == ()
    assert 3.0 <= out.duration_s < 3.5 and out.signalled == (100, 101, 102)


def test_stop_escalates_to_sigkill_after_the_grace_period():
    clock = FakeClock()
    group = FakeGroup([100, 101], dies_on=None, clock=clock)
    out = stop_group(100, group.ops(), clock, grace_s=5)
    assert group.sent == [signal.SIGTERM, signal.SIGCONT, signal.SIGKILL] and out.escalated and out.survivors == ()
    assert 5.0 <= out.duration_s < 5.5


def test_stop_of_an_empty_group_sends_nothing():
    clock = FakeClock()
    group = FakeGroup([], clock=clock)
    out = stop_group(100, group.ops(), clock)
    assert group.sent == [] and out.signalled == ()


def test_sigint_gives_130_after_stopping_the_group():
    clock = FakeClock()
    group = FakeGroup([100, 101], clock=clock)
    sup = make(FakeChild(clock=clock), group, clock)
    sup.start()
    sup.request_stop(signal.SIGINT)
    assert sup.wait() == 130 and group.sent == [signal.SIGTERM, signal.SIGCONT]


def test_sigterm_gives_143():
    clock = FakeClock()
    group = FakeGroup([100], clock=clock)
    sup = make(FakeChild(clock=clock), group, clock)
    sup.start()
    sup.request_stop(signal.SIGTERM)
    assert sup.wait() == 143


def test_second_signal_does_not_change_the_first_reason():
    clock = FakeClock()
    sup = make(FakeChild(clock=clock), FakeGroup([100], clock=clock), clock)
    sup.start()
    sup.request_stop(signal.SIGTERM)
    sup.request_stop(signal.SIGINT)
    assert sup.wait() == 143


def test_child_exit_code_is_passed_on_and_leftovers_are_cleaned():
    clock = FakeClock()
    group = FakeGroup([101], clock=clock)  # an EngineCore still alive after the API server exited
    sup = make(FakeChild(exits_at=5.0, code=3, clock=clock), group, clock)
    sup.start()
    assert sup.wait() == 3
    assert group.sent == [signal.SIGTERM, signal.SIGCONT]


def test_child_killed_by_a_signal_maps_to_128_plus_n():
    clock = FakeClock()
    sup = make(FakeChild(exits_at=1.0, code=-9, clock=clock), FakeGroup([], clock=clock), clock)
    sup.start()
    assert sup.wait() == 137
