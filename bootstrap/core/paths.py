"""Where vboot keeps its files (XDG base directories)."""

from __future__ import annotations

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


def modelscope_cache(env: Environ) -> Path:
    """The cache root the ModelScope client (modelscope-hub >= 0.5) uses.

    ``$MODELSCOPE_CACHE``, else the legacy ``$MS_CACHE_HOME``, else ``~/.cache/modelscope`` (not ``$XDG_CACHE_HOME``:
    the client ignores it). Models land in ``<root>/models/Owner--Name/snapshots/REV``; SDKs <= 1.37 used
    ``<root>/[hub/]models/Owner/Name___with___dots``, which the client still reuses when present.
    """
    explicit = env.path("MODELSCOPE_CACHE")
    if explicit:
        return explicit
    legacy = env.path("MS_CACHE_HOME")
    if legacy:
        return legacy
    return env.home() / ".cache" / "modelscope"
