"""What a model hub answers and what a pull asks of it: the one module both sides of a pull import.

:mod:`bootstrap.core.pull` plans and orchestrates a download against a :class:`HubClient`;
:mod:`bootstrap.probes.modelscope_hub`, the production client, answers with :class:`RemoteFile` listings.
Neither imports the other's module for these names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# (file path in the repo, byte delta) from the client's download threads; the delta is negative when the
# client restarts a file from byte 0.
ByteSink = Callable[[str, int], None]


@dataclass(frozen=True)
class RemoteFile:
    """One file of the repo listing."""

    path: str
    size: int
    sha256: str = ""


class HubClient(Protocol):
    """The ModelScope client operations a pull needs (production: ``bootstrap.probes.modelscope_hub``)."""

    def list_files(self, model_id: str, revision: str, endpoint: str | None, *, debug: bool = False
                   ) -> tuple[RemoteFile, ...]: ...

    def download(self, model_id: str, revision: str, cache_dir: Path, endpoint: str | None,
                 files: Sequence[RemoteFile], *, on_bytes: ByteSink | None = None,
                 max_workers: int = 4, local_dir: Path | None = None, debug: bool = False) -> Path: ...

    def cached_snapshot(self, model_id: str, revision: str, cache_dir: Path, *, local_dir: Path | None = None,
                        debug: bool = False) -> Path: ...
