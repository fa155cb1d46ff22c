"""Running `vboot` in a test: the installed console script."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def vboot_exe() -> list[str]:
    """The installed `vboot` console script next to this interpreter (falls back to `python -m bootstrap`)."""
    exe = Path(sys.executable).with_name("vboot")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("vboot")
    return [found] if found else [sys.executable, "-m", "bootstrap"]
