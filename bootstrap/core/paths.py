"""Where vboot keeps its files (XDG base directories), where the ModelScope cache is, and what a partial download
in a model cache looks like."""

from __future__ import annotations

import os
import re
import stat as stat_mod
from collections.abc import Iterator
from pathlib import Path

from bootstrap.core.environ import Environ


def config_dir(env: Environ) -> Path:
    """User profiles live in ``$XDG_CONFIG_HOME/vboot/profiles`` (default ``~/.config``)."""
    return (env.path("XDG_CONFIG_HOME") or env.home() / ".config") / "vboot"


def state_dir(env: Environ) -> Path:
    """Run directories, the pull record and the recorded vLLM environment (default ``~/.local/state``)."""
    return (env.path("XDG_STATE_HOME") or env.home() / ".local" / "state") / "vboot"


def data_home(env: Environ) -> Path:
    """``$XDG_DATA_HOME`` (default ``~/.local/share``): vboot's venvs, and Jupyter's kernels on Linux."""
    return env.path("XDG_DATA_HOME") or env.home() / ".local" / "share"


def cache_home(env: Environ) -> Path:
    return env.path("XDG_CACHE_HOME") or env.home() / ".cache"


def runs_dir(env: Environ) -> Path:
    return state_dir(env) / "runs"


def user_profiles_dir(env: Environ) -> Path:
    return config_dir(env) / "profiles"


def modelscope_cache_source(env: Environ) -> tuple[Path, str]:
    """The cache root the ModelScope client (modelscope-hub >= 0.5) uses, and the variable that set it.

    ``$MODELSCOPE_CACHE``, else the legacy ``$MS_CACHE_HOME``, else ``~/.cache/modelscope`` ("default"; not
    ``$XDG_CACHE_HOME``: the client ignores it). Models land in ``<root>/models/Owner--Name/snapshots/REV``; SDKs
    <= 1.37 used ``<root>/[hub/]models/Owner/Name___with___dots``, which the client still reuses when present.
    """
    for var in ("MODELSCOPE_CACHE", "MS_CACHE_HOME"):
        value = env.path(var)
        if value:
            return value, var
    return env.home() / ".cache" / "modelscope", "default"


def modelscope_cache(env: Environ) -> Path:
    """The cache root the ModelScope client uses (:func:`modelscope_cache_source` without the source)."""
    return modelscope_cache_source(env)[0]


# Partial downloads, as the clients name them beside their target file NAME (modelscope-hub 0.5 ``_download.py``):
# ``NAME.incomplete`` (one stream, resumed with Range), ``NAME.parallel_tmp`` (range parts being merged; rebuilt,
# never resumed) and ``NAME_START_END`` (one range part of a large file); huggingface_hub: ``blobs/HASH.incomplete``.
PARTIAL_SUFFIXES = (".incomplete", ".parallel_tmp")
_RANGE_PART = re.compile(r"^(?P<base>.+)_(?P<start>\d+)_(?P<end>\d+)$")


def partial_target(name: str, size: int) -> str | None:
    """The name of the file the partial download ``name`` (``size`` bytes) belongs to, or None when it is not one.

    The one definition `vboot pull` (its budget and its refusal) and `vboot disk clean --partial` share. A range part
    ``NAME_START_END`` never holds more than END - START + 1 bytes (the client drops a longer one), so an ordinary
    file that merely ends in ``_1_2`` is not taken for one.
    """
    for suffix in PARTIAL_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    m = _RANGE_PART.match(name)
    if m is None:
        return None
    start, end = int(m.group("start")), int(m.group("end"))
    return m.group("base") if start <= end and size <= end - start + 1 else None


def files_under(root: Path | str) -> Iterator[tuple[str, os.stat_result]]:
    """(path, stat) of every regular file below ``root``, like `find -L ROOT -type f` that does not descend into
    linked directories (``os.walk`` never does): a file link counts with its target's stat; entries that vanish
    or cannot be read are skipped. The one walk of a model directory (pull's partials, offline sizes, local models).
    """
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            full = os.path.join(dirpath, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            if stat_mod.S_ISREG(st.st_mode):
                yield full, st
