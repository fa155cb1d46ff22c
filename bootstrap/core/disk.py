"""`vboot disk`'s numbers as typed reports: :func:`scan` measures a tree like ``du -a -B1 --max-depth=N``.

The walk itself (counting rules, speed, worker processes) is :mod:`bootstrap.core.duwalk`, which imports only
what a forked child needs; this module gives its plain result the types the rest of vboot uses.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bootstrap.core.duwalk import (  # noqa: F401 - re-exported: the scanner's public names
    SPLIT_AFTER,
    default_open_dir,
    display_path,
    mount_table,
    pseudo_mounts,
    scan_wire,
)

OpenDir = Callable[[str, str, "int | None"], int]  # (full path, name, parent's fd or None) -> directory fd


@dataclass(frozen=True)
class DiskEntry:
    """One file or directory down to the requested depth. ``bytes`` includes everything below it."""

    path: str
    bytes: int
    is_dir: bool
    depth: int


@dataclass(frozen=True)
class ScanWarning:
    """Something the scan could not read. ``kind``: unreadable | error | non_utf8 | too_deep."""

    path: str
    kind: str
    message: str


@dataclass(frozen=True)
class DiskReport:
    """The result of :func:`scan`: what ``du -a -B1 --max-depth=DEPTH ROOT`` would print, as data."""

    root: str
    total_bytes: int
    entries: tuple[DiskEntry, ...]  # largest first
    warnings: tuple[ScanWarning, ...] = ()
    unreadable_count: int = 0  # directories whose contents could not be listed (their own size is counted)
    unreadable_paths: tuple[str, ...] = ()
    error_count: int = 0
    depth: int = 1
    apparent: bool = False
    one_file_system: bool = False
    entry_count: int = 0  # files and directories looked at
    workers: int = 1  # processes that took part
    elapsed_s: float = 0.0
    fs_total_bytes: int | None = None
    fs_free_bytes: int | None = None  # f_bavail: what an ordinary user can still write
    skipped_mounts: tuple[str, ...] = ()  # pseudo filesystems below the root that were not entered

    @property
    def complete(self) -> bool:
        return self.unreadable_count == 0 and self.error_count == 0


def scan(root: os.PathLike[str] | str, depth: int = 1, apparent: bool = False, one_file_system: bool = False,
         *, workers: int | None = None, split_after: int = SPLIT_AFTER,
         open_dir: OpenDir = default_open_dir, watch_parent: int | None = None,
         skip_mounts: Mapping[str, int] | None = None) -> DiskReport:
    """Measure ``root`` like ``du -a -B1 --max-depth=DEPTH ROOT`` (``du --apparent-size`` with ``apparent``).

    The arguments are :func:`bootstrap.core.duwalk.scan_wire`'s. Raises NotFoundError when ``root`` does not
    exist; everything below it only produces warnings.
    """
    return report_from_wire(scan_wire(os.fspath(root), depth, apparent, one_file_system, workers=workers,
                                      split_after=split_after, open_dir=open_dir, watch_parent=watch_parent,
                                      skip_mounts=skip_mounts))


def report_from_wire(wire: dict) -> DiskReport:
    """The report of a :func:`bootstrap.core.duwalk.scan_wire` result, with the filesystem's size and free space."""
    fields = dict(wire)
    fs_total, fs_free = filesystem_usage(fields.pop("fs_path"))
    fields["entries"] = tuple(DiskEntry(*e) for e in wire["entries"])
    fields["warnings"] = tuple(ScanWarning(*w) for w in wire["warnings"])
    return DiskReport(**fields, fs_total_bytes=fs_total, fs_free_bytes=fs_free)


def filesystem_usage(path: str) -> tuple[int | None, int | None]:
    """(size, free for ordinary users) of the filesystem holding ``path``, like ``df -B1 PATH``; None if unknown."""
    from bootstrap.probes.system import fs_usage

    try:
        return fs_usage(path)
    except OSError:
        return None, None
