"""`vboot disk`'s reports (see bootstrap.core.reports)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bootstrap.core.envelope import key_when_set

if TYPE_CHECKING:  # types only: `vboot disk`'s fast path imports this module and must not load the checks
    from bootstrap.core.caches import CacheReport, PlanEntry, Refusal
    from bootstrap.core.disk import DiskEntry, DiskReport, ScanWarning


@dataclass(frozen=True)
class DiskView:
    """`vboot disk PATH...`: the first report's fields at the top (the JSON contract), every report under
    ``reports``, and the options the human view needs."""

    root: str
    total_bytes: int
    entries: tuple[DiskEntry, ...]
    warnings: tuple[ScanWarning, ...]
    unreadable_count: int
    unreadable_paths: tuple[str, ...]
    error_count: int
    depth: int
    apparent: bool
    entry_count: int
    fs_total_bytes: int | None
    fs_free_bytes: int | None
    elapsed_s: float
    workers: int
    skipped_mounts: tuple[str, ...]
    reports: tuple[DiskReport, ...]
    top: int  # rows per directory in the human view

    @property
    def status(self) -> str:
        return "warn" if any(not r.complete for r in self.reports) else "ok"


def disk_view(reports: Sequence[DiskReport], depth: int, apparent: bool, top: int) -> DiskView:
    first = reports[0]
    return DiskView(
        root=first.root, total_bytes=first.total_bytes, entries=first.entries, warnings=first.warnings,
        unreadable_count=first.unreadable_count, unreadable_paths=first.unreadable_paths,
        error_count=first.error_count, depth=depth, apparent=apparent, entry_count=first.entry_count,
        fs_total_bytes=first.fs_total_bytes, fs_free_bytes=first.fs_free_bytes, elapsed_s=first.elapsed_s,
        workers=first.workers, skipped_mounts=first.skipped_mounts, reports=tuple(reports), top=top)


@dataclass(frozen=True)
class CachesView:
    """`vboot disk caches`."""

    caches: tuple[CacheReport, ...]
    total_bytes: int
    warnings: tuple[str, ...] | None = key_when_set()  # run records that had to be skipped

    @property
    def status(self) -> str:
        return "warn" if self.warnings else "ok"


@dataclass(frozen=True)
class CleanReport:
    """`vboot disk clean`: the plan (all a dry run or a refusal reports), then, once confirmed, what was removed
    and the free space measured before and after."""

    plan: tuple[PlanEntry, ...]
    plan_bytes: int
    refused: tuple[Refusal, ...]
    notes: tuple[str, ...]
    dry_run: bool
    freed_bytes: int = 0
    removed: tuple[str, ...] = ()
    failed: tuple[Refusal, ...] = ()
    warnings: tuple[str, ...] | None = key_when_set()  # run records that had to be skipped
    fs_free_before_bytes: Mapping[str, int] | None = key_when_set()
    fs_free_after_bytes: Mapping[str, int] | None = key_when_set()
    confirmed: bool | None = key_when_set()  # True once it deleted

    @property
    def status(self) -> str:
        """warn when an item was kept (in use, being downloaded, a mount point inside)."""
        return "warn" if self.refused else "ok"
