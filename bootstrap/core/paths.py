"""Where vboot keeps its files (XDG base directories), where the ModelScope cache is, where a model lies in it
(every layout the client has used), and what a partial download in a model cache looks like."""

from __future__ import annotations

import os
import re
import stat as stat_mod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bootstrap.core.environ import Environ
from bootstrap.core.errors import UsageError  # noqa: F401 - raised by validate_model_id


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


# ---------------------------------------------------------------------------------------------------------
# Where the client puts things (mirrors modelscope-hub 0.5 DownloadManager; the returned path wins)
# ---------------------------------------------------------------------------------------------------------
def validate_model_id(model_id: str) -> None:
    """Refuse what is not a ModelScope OWNER/NAME before a path is built from it (the rules:
    :mod:`bootstrap.core.repoids`)."""
    from bootstrap.core.repoids import check_model_id

    check_model_id(model_id, "modelscope")


@dataclass(frozen=True)
class ModelLayout:
    """Every directory below a cache root that may hold one model's files (the one list of layouts)."""

    new: Path  # models/Owner--Name (snapshots/REV below it): modelscope-hub 0.5, SDK >= 1.38
    probed: tuple[Path, ...]  # models/Owner/Name___x, hub/models/Owner/Name___x: the client reuses these itself
    flat: tuple[Path, ...]  # older layouts the client does not probe (the modelscope shim passes one as local_dir)
    temp: tuple[Path, ...]  # legacy SDK partial downloads (models/._____temp/Owner/Name___x)

    @property
    def dirs(self) -> tuple[Path, ...]:
        return tuple(dict.fromkeys((self.new, *self.probed, *self.temp, *self.flat)))


def model_layout(cache_dir: Path, model_id: str) -> ModelLayout:
    """Where modelscope-hub 0.5 (``DownloadManager._find_legacy_repo_dir``) and the ``modelscope`` shim
    (``find_reusable_legacy_repo_dir``) look for ``model_id`` below ``cache_dir``, in their order."""
    owner, name = model_id.split("/", 1)
    safe = name.replace(".", "___")
    return ModelLayout(
        new=cache_dir / "models" / f"{owner}--{name}",
        probed=(cache_dir / "models" / owner / safe, cache_dir / "hub" / "models" / owner / safe),
        flat=(cache_dir / owner / name, cache_dir / owner / safe, cache_dir / "hub" / owner / name,
              cache_dir / "hub" / owner / safe, cache_dir / "models" / owner / name),
        temp=(cache_dir / "models" / "._____temp" / owner / safe,
              cache_dir / "hub" / "models" / "._____temp" / owner / safe),
    )


def _non_empty_dir(path: Path) -> bool:
    try:
        return path.is_dir() and any(path.iterdir())
    except OSError:
        return False


@dataclass(frozen=True)
class ModelInCache:
    """One model at one revision in one ModelScope cache, looked up once (after huggingface_hub's
    ``scan_cache_dir``: the disk is read when this is built; every later question is asked of it).

    The pre-flight's disk check, the pull's plan, its search for partial downloads and both client calls all
    take their answers from the same object, so they cannot disagree about where the model is."""

    cache_dir: Path
    model_id: str
    revision: str
    layout: ModelLayout
    # A pre-1.38 directory that modelscope-hub does not probe itself, reused so an old cache is not downloaded
    # again (what the ``modelscope`` shim passes as ``local_dir``); None when the client finds its own.
    local_dir: Path | None
    # Where the client finds or writes the files: ``local_dir``, else a non-empty legacy directory the client
    # probes, else ``models/Owner--Name/snapshots/REVISION``.
    snapshot_dir: Path

    @property
    def dirs(self) -> tuple[Path, ...]:
        """Every directory that may hold this model's files (every layout), and the snapshot directory when it
        lies outside them: wherever the client writes, its partial files count."""
        dirs = self.layout.dirs
        inside = any(self.snapshot_dir == d or d in self.snapshot_dir.parents for d in dirs)
        return dirs if inside else (*dirs, self.snapshot_dir)


def locate_model(cache_dir: Path, model_id: str, revision: str) -> ModelInCache:
    """Where ``model_id@revision`` is (or will be) below ``cache_dir``, by the clients' own rules
    (modelscope-hub 0.5 ``DownloadManager._find_legacy_repo_dir``, the ``modelscope`` shim's
    ``find_reusable_legacy_repo_dir``). Raises :class:`UsageError` for an id that is not OWNER/NAME or a
    revision that is no branch, tag or commit (before a path is built from either)."""
    from bootstrap.core.repoids import check_revision

    validate_model_id(model_id)
    check_revision(revision)
    layout = model_layout(cache_dir, model_id)
    local_dir = None
    if not (_non_empty_dir(layout.new) or _non_empty_dir(layout.probed[0])):
        local_dir = next((d for d in layout.flat if _non_empty_dir(d)), None)
    snapshot = local_dir or next((d for d in layout.probed if _non_empty_dir(d)),
                                 layout.new / "snapshots" / revision)
    return ModelInCache(cache_dir=cache_dir, model_id=model_id, revision=revision, layout=layout,
                        local_dir=local_dir, snapshot_dir=snapshot)
