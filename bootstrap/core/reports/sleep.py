"""`vboot sleep`'s and `vboot wake`'s reports (see bootstrap.core.reports)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SleepDone:
    """`vboot sleep`: what NVML saw around the sleep (bootstrap.core.colocate.SleepReport)."""

    name: str
    level: int
    took_s: float
    before_bytes: int
    after_bytes: int
    freed_bytes: int
    server_bytes: int  # what the server's processes held before
    too_little: bool  # it freed much less than the server held

    @property
    def status(self) -> str:
        return "warn" if self.too_little else "ok"


@dataclass(frozen=True)
class WakeDone:
    name: str
    took_s: float
    before_bytes: int
    after_bytes: int
    taken_bytes: int
