"""`vboot pull`'s reports (see bootstrap.core.reports)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LocalModel:
    """`vboot pull` of a profile that serves a local directory: nothing to download, its size on disk.
    (A pulled model reports :class:`bootstrap.core.pull.PullResult`.)"""

    model: str
    revision: str
    path: str
    bytes: int
    files: int
    downloaded_bytes: int = 0
    source: str = "local"
    verified_at: float | None = None
