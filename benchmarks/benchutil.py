"""Helpers the benchmark scripts share (importable because a script's own folder is on sys.path)."""

from __future__ import annotations

import compileall
import sys
from pathlib import Path


def vboot_argv() -> list[str]:
    """The `vboot` console script beside this Python when installed, else the same CLI through this Python."""
    exe = Path(sys.executable).with_name("vboot")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "bootstrap"]


def compile_like_install() -> None:
    """Compile vboot's bytecode once, as a pip install does.

    A checkout run with PYTHONDONTWRITEBYTECODE=1 would recompile every module at every start and measure the
    compiler, not vboot.
    """
    import bootstrap

    compileall.compile_dir(str(Path(bootstrap.__file__).parent), quiet=1)
