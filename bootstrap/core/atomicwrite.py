"""The one way vboot writes a file another process may read or a user may have planted something beside."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` so that no reader ever sees half a file or a file with looser permissions than
    ``mode``, and nothing planted in the directory (a link at a predictable temporary name) is followed: a
    temporary file created exclusively in the same directory (``mkstemp``: a random name, ``O_EXCL``, mode 0600
    from the first byte), set to ``mode``, then renamed over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
