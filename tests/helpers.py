"""Small hand-written fakes shared by the unit tests (clock, ...)."""

from __future__ import annotations


class FakeClock:
    """A monotonic clock that only moves when somebody sleeps."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds
