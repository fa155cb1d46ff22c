"""`vboot doctor`'s reports (see bootstrap.core.reports)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # types only: the command imports its reports on its start path
    from bootstrap.core.checks import CheckResult, Status


@dataclass(frozen=True)
class CheckInfo:
    """One line of `vboot doctor --list-checks`: a check's id, group, title and the shell command that shows
    the same fact (its docstring)."""

    id: str
    group: str
    title: str
    shows: str


@dataclass(frozen=True)
class CheckListing:
    """`vboot doctor --list-checks`."""

    checks: tuple[CheckInfo, ...]


def check_listing() -> CheckListing:
    from bootstrap.core.checks import CHECKS

    return CheckListing(tuple(CheckInfo(c.id, c.group, c.title, (c.fn.__doc__ or "").strip()) for c in CHECKS))


@dataclass(frozen=True)
class CheckRow:
    """One verdict of `vboot doctor`, as its JSON lists it."""

    id: str
    group: str
    status: Status
    summary: str
    hint: str
    data: Mapping[str, Any]  # the check's raw facts (bytes, versions, PIDs)


@dataclass(frozen=True)
class CheckCounts:
    """How many checks ended in each status."""

    ok: int
    warn: int
    fail: int
    skip: int


@dataclass(frozen=True)
class DoctorReport:
    """`vboot doctor`: the device serve would use and why, every verdict, and the variables vboot read."""

    profile: str
    device: str  # "gpu" | "cpu"
    device_reason: str
    checks: tuple[CheckRow, ...]
    counts: CheckCounts
    env_read: tuple[str, ...]  # sorted


def doctor_report(profile: str, device: str, device_reason: str, results: Sequence[CheckResult],
                  env_read: Iterable[str]) -> DoctorReport:
    from bootstrap.core.checks import Status

    rows = tuple(CheckRow(r.id, r.group, r.status, r.summary, r.hint, r.data) for r in results)
    counts = {s: sum(1 for r in results if r.status == s) for s in Status}
    return DoctorReport(profile, device, device_reason, rows,
                        CheckCounts(counts[Status.OK], counts[Status.WARN], counts[Status.FAIL], counts[Status.SKIP]),
                        tuple(sorted(env_read)))
