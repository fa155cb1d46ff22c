"""The model and package caches on this box: where they are, what is in them, and how to clean them safely.

Locations follow each tool's own rules (read through :class:`Environ`):

==============  ============================================================================================
modelscope      ``$MODELSCOPE_CACHE`` / ``$MS_CACHE_HOME`` / ``~/.cache/modelscope`` (``paths.modelscope_cache_source``)
huggingface     ``$HF_HUB_CACHE`` / ``$HF_HOME/hub`` / ``$XDG_CACHE_HOME/huggingface/hub``
pip             ``$PIP_CACHE_DIR`` / ``$XDG_CACHE_HOME/pip``
uv              ``$UV_CACHE_DIR`` / ``$XDG_CACHE_HOME/uv``
torch           ``$TORCH_HOME`` / ``$XDG_CACHE_HOME/torch`` (torch hub checkpoints and kernels)
inductor        ``$TORCHINDUCTOR_CACHE_DIR`` / ``$TMPDIR/torchinductor_$USER``
vllm            ``$VLLM_CACHE_ROOT`` / ``$XDG_CACHE_HOME/vllm`` (torch.compile cache, model info)
triton          ``$TRITON_CACHE_DIR`` / ``$TRITON_HOME/.triton/cache`` / ``~/.triton/cache``
==============  ============================================================================================

ModelScope keeps models in two layouts, both read here: ``models/Owner--Name/snapshots/REV/`` (modelscope-hub,
SDK >= 1.38) with partial files (``*.incomplete``, ``*.parallel_tmp``, range parts ``NAME_START_END``:
``paths.partial_target``, shared with `vboot pull`) beside their targets and locks in ``.lock/``; and the legacy
``models/Owner/Name___with___dots/`` (dots written as ``___``; under ``hub/models`` when no cache variable was
set), with a dotted symlink ``Name.with.dots -> Name___with___dots`` beside it and partial downloads under
``models/._____temp/Owner/Name___``. The Hugging Face hub keeps ``models--owner--name/{blobs,snapshots,refs}``
with snapshot files as relative symlinks into ``blobs`` and partials as ``blobs/*.incomplete``.

Cleaning is scan -> plan -> execute: :func:`plan_clean` returns data (every path and the bytes it frees),
:func:`execute_plan` deletes only inside a recognised cache root, never follows a symlink (a link is removed,
not its target), re-checks that no live vboot server uses a model, and measures what is left afterwards.

What cleaning never deletes, whatever the selectors:

- anything outside the cache roots above;
- anything in a root that is not a cache of its own (:func:`unsafe_root`): ``/``, the home directory or one of
  its ancestors, a system directory, a user's home, the XDG base directories, a directory holding another cache.
  Such a root comes from a variable set by mistake (``PIP_CACHE_DIR=$HOME``); it is not scanned, and cleaning
  it is refused, naming the variable;
- an item with a mount point inside it (a bind mount, a tmpfs, another disk), found in the mount table when
  planning and again just before deleting; the delete itself never enters another mount either
  (:func:`_remove_tree`), so a mount made in between stops it there and the item is reported as not removed.
  Refused rather than emptied up to the mount: what is left would look like a model and be half of one;
- models a live vboot server uses.

``--older-than`` judges an item by the newest access or modification time of the files inside it (a bounded
walk, :data:`LAST_USED_FILE_LIMIT` entries); an item with more entries than that cannot be proven old, so it
is kept (refused with ``not_judged``) rather than judged by a sample.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat as stat_mod
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from bootstrap.core.disk import DiskReport, display_path, mount_table, scan
from bootstrap.core.environ import Environ
from bootstrap.core.errors import ConflictError, MountCrossing, UnsafeCacheRootError, UsageError
from bootstrap.core.paths import cache_home, config_dir, data_home, modelscope_cache_source, partial_target, state_dir

CACHE_NAMES = ("modelscope", "huggingface", "pip", "uv", "torch", "inductor", "vllm", "triton")
CLEAN_COMMANDS = {"pip": "pip cache purge", "uv": "uv cache clean"}
MS_TEMP = "._____temp"
# A partial file written this recently may belong to a download in progress: never planned for deletion.
BUSY_WINDOW_S = 120.0
# Entries one item's walk looks at for its last use; beyond it the answer is only a lower bound.
LAST_USED_FILE_LIMIT = 5000

# A cache root equal to one of these holds far more than a cache: refused (see unsafe_root).
SYSTEM_DIRS = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media", "/mnt", "/nix",
    "/opt", "/proc", "/root", "/run", "/run/user", "/sbin", "/snap", "/srv", "/sys", "/tmp", "/usr", "/usr/local",
    "/usr/local/share", "/var", "/var/cache", "/var/lib", "/var/log", "/var/mail", "/var/opt", "/var/spool",
    "/var/tmp", "/var/www",
})
# Trees that hold the operating system and nothing of a user's: a root anywhere inside them is refused.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sbin", "/sys",
                "/usr/bin", "/usr/include", "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libexec", "/usr/sbin",
                "/usr/share", "/usr/src", "/usr/local/bin", "/usr/local/lib", "/usr/local/sbin", "/nix/store")
PASSWD = "/etc/passwd"


@dataclass(frozen=True)
class CacheItem:
    """One thing in a cache: a model (``kind`` model), partial downloads (partial), locks, or a top folder (entry).

    ``paths`` is what cleaning it removes (a legacy ModelScope model: its directory and its dotted symlink;
    partials: the partial files or the temp folder), and ``paths_bytes`` what each one holds. ``last_used`` is the
    newest access/modification time seen (epoch seconds). ``in_use_by`` names the live vboot server that serves it.
    """

    id: str
    path: str
    bytes: int
    last_used: float | None
    kind: str = "entry"
    layout: str = ""
    paths: tuple[str, ...] = ()
    in_use_by: str | None = None
    paths_bytes: tuple[int, ...] = ()  # what each of ``paths`` holds, measured with the item (for the plan)
    # False when the item has more than LAST_USED_FILE_LIMIT entries: ``last_used`` is then the newest of those
    # looked at, a lower bound, and --older-than keeps the item (it cannot be proven old).
    last_used_complete: bool = True


@dataclass(frozen=True)
class CacheReport:
    """One cache: where it is (and which variable said so), its size and its items, largest first."""

    name: str
    path: str
    bytes: int
    items: tuple[CacheItem, ...]
    exists: bool = True
    source: str = "default"  # the variable that set the location, or "default"
    clean_command: str | None = None
    last_used: float | None = None
    warnings: tuple[str, ...] = ()
    refused: str | None = None  # why this root is no cache of its own (unsafe_root): not scanned, never cleaned


def _pick(env: Environ, candidates: Iterable[tuple[str, Callable[[Path], Path]]], default: Path) -> tuple[Path, str]:
    for var, transform in candidates:
        value = env.path(var)
        if value:
            return transform(value), var
    return default, "default"


def cache_locations(env: Environ) -> dict[str, tuple[Path, str]]:
    """name -> (path, source variable or "default"), following each tool's own precedence."""
    xdg = cache_home(env)
    home = env.home()
    same: Callable[[Path], Path] = lambda p: p  # noqa: E731
    user = env.get("USER") or env.get("LOGNAME") or _login_name()
    tmp = env.path("TMPDIR") or Path("/tmp")
    return {
        "modelscope": modelscope_cache_source(env),
        "huggingface": _pick(env, [("HF_HUB_CACHE", same), ("HF_HOME", lambda p: p / "hub")],
                             xdg / "huggingface" / "hub"),
        "pip": _pick(env, [("PIP_CACHE_DIR", same)], xdg / "pip"),
        "uv": _pick(env, [("UV_CACHE_DIR", same)], xdg / "uv"),
        "torch": _pick(env, [("TORCH_HOME", same)], xdg / "torch"),
        "inductor": _pick(env, [("TORCHINDUCTOR_CACHE_DIR", same)], tmp / f"torchinductor_{user}"),
        "vllm": _pick(env, [("VLLM_CACHE_ROOT", same)], xdg / "vllm"),
        "triton": _pick(env, [("TRITON_CACHE_DIR", same), ("TRITON_HOME", lambda p: p / ".triton" / "cache")],
                        home / ".triton" / "cache"),
    }


def _real(path: Path | str) -> str:
    return os.path.realpath(os.path.expanduser(os.fspath(path)))


def _within(path: str, top: str) -> bool:
    """``path`` is ``top`` or below it (both real, absolute)."""
    return path == top or path.startswith(top.rstrip("/") + "/")


def _account_homes(passwd: str = PASSWD) -> frozenset[str]:
    """The home directories in the local account database (read directly: no NSS, no network)."""
    try:
        with open(passwd, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return frozenset()
    return frozenset(fields[5] for fields in (line.split(":") for line in lines) if len(fields) > 5 and fields[5])


def unsafe_root(name: str, path: Path | str, env: Environ, locations: dict[str, tuple[Path, str]] | None = None,
                passwd: str = PASSWD) -> str | None:
    """Why ``path`` cannot be the root of the ``name`` cache, or None when it can.

    A cache root is a directory of its own: its top entries are the cache's items, and cleaning removes them.
    Refused (compared after resolving symlinks): ``/``; the home directory or an ancestor of it; a system
    directory (:data:`SYSTEM_DIRS`) or anything inside the operating system's trees (:data:`SYSTEM_TREES`); the
    home of any local account; the XDG base directories and ``~/.local`` (or an ancestor of them); a directory
    holding another cache's root (``locations``: :func:`cache_locations`'s answer, computed when omitted).
    """
    real = _real(path)
    home = _real(env.home())
    if real == "/":
        return "it is the root directory"
    if _within(home, real):
        return "it is your home directory" if real == home else f"it holds your home directory ({home})"
    if real in SYSTEM_DIRS:
        return "it is a system directory"
    tree = next((t for t in SYSTEM_TREES if _within(real, t)), None)
    if tree is not None:
        return f"it is inside {tree}, which belongs to the operating system"
    if real in {_real(h) for h in _account_homes(passwd)}:
        return "it is a user's home directory"
    bases = {"XDG_CACHE_HOME": cache_home(env), "XDG_CONFIG_HOME": config_dir(env).parent,
             "XDG_DATA_HOME": data_home(env), "XDG_STATE_HOME": state_dir(env).parent,
             "~/.local": env.home() / ".local"}
    for label, base in bases.items():
        if _real(base) == real:
            return f"it is {label} ({base})"
    for label, base in bases.items():
        if _within(_real(base), real):
            return f"it holds {label} ({base})"
    for other, (other_path, _source) in (cache_locations(env) if locations is None else locations).items():
        other_real = _real(other_path)
        if other != name and other_real != real and _within(other_real, real):
            return f"it holds the {other} cache ({other_path})"
    return None


def _login_name() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return str(os.getuid())


def _size(path: Path | str) -> int:
    """du -s -B1 of one path; a symlink counts only itself (never its target)."""
    p = os.fspath(path)
    try:
        st = os.lstat(p)
    except OSError:
        return 0
    if not stat_mod.S_ISDIR(st.st_mode):
        return st.st_blocks * 512
    return scan(p, depth=0).total_bytes


Size = Callable[["Path | str"], int]

# How deep one scan of a cache root goes so that every item path below it is listed (a ModelScope temp download
# sits at hub/models/._____temp/Owner/Name: depth 5).
SCAN_DEPTH = {"modelscope": 5, "huggingface": 1}


def _sizes_from(report: DiskReport) -> Size:
    """Sizes of the paths the scan of a cache root listed; anything else is measured on its own."""
    listed = {e.path: e.bytes for e in report.entries}

    def size(path: Path | str) -> int:
        found = listed.get(os.path.abspath(os.fspath(path)))
        return found if found is not None else _size(path)

    return size


@dataclass(frozen=True)
class _Walked:
    """What one walk of a directory found (see :func:`_walk`)."""

    last_used: float | None
    partials: tuple[str, ...] = ()
    partial_bytes: int = 0
    partial_last_used: float | None = None
    last_used_complete: bool = True  # False: more than ``limit`` entries, ``last_used`` is the newest of the first


def _newer(a: float | None, b: float) -> float:
    return b if a is None or b > a else a


def _walk(path: Path | str, limit: int | None = None) -> _Walked:
    """One walk below ``path`` (links not followed) for both facts an item needs:

    - last use: the newest atime/mtime of its first ``limit`` entries (directories: mtime only, as listing one
      moves its atime, this walk too). File atimes are moved by reads (relatime), never by our stat calls.
      With more entries than ``limit``, ``last_used_complete`` is False and ``last_used`` is only a lower bound.
    - its partial downloads (``paths.partial_target``, the definition `vboot pull` uses) with their du bytes
      and newest mtime, looked for in the whole tree.
    """
    newest: float | None = None
    partials: list[str] = []
    partial_bytes = 0
    partial_newest: float | None = None
    limit = LAST_USED_FILE_LIMIT if limit is None else limit
    seen = 0
    cut = False
    root = os.fspath(path)
    stack: list[tuple[str, bool]] = [(root, True)]  # (path, a real directory per its dir entry)
    while stack:
        current, is_dir = stack.pop()
        name = os.path.basename(current)
        timed = seen < limit
        cut = cut or not timed
        # A name that is no partial at size 0 is none at any size (the size only narrows a range part).
        if timed or (not is_dir and partial_target(name, 0) is not None):
            try:
                st = os.lstat(current)
            except OSError:
                continue
            is_dir = stat_mod.S_ISDIR(st.st_mode)
            if timed:
                newest = _newer(newest, st.st_mtime if is_dir else max(st.st_atime, st.st_mtime))
                seen += 1
            if not is_dir and current != root and partial_target(name, st.st_size) is not None:
                partials.append(current)
                partial_bytes += st.st_blocks * 512
                partial_newest = _newer(partial_newest, st.st_mtime)
        if is_dir:
            try:
                with os.scandir(current) as it:
                    stack.extend((e.path, e.is_dir(follow_symlinks=False)) for e in it)
            except OSError:
                continue
    return _Walked(newest, tuple(sorted(partials)), partial_bytes, partial_newest, not cut)


def _last_used(path: Path | str) -> tuple[float | None, bool]:
    """(newest atime/mtime inside ``path``, whether every entry was looked at): see :func:`_walk`."""
    walked = _walk(path)
    return walked.last_used, walked.last_used_complete


def _model_item(model_id: str, model_dir: Path, layout: str, extra_paths: tuple[str, ...] = (),
                size: Size = _size) -> list[CacheItem]:
    """A model item (bytes without its partial files) plus, separately, its partial downloads."""
    walked = _walk(model_dir)
    full = size(model_dir)
    paths = (str(model_dir), *extra_paths)
    model = CacheItem(id=model_id, path=str(model_dir), bytes=full - walked.partial_bytes,
                      last_used=walked.last_used, kind="model", layout=layout, paths=paths,
                      paths_bytes=(full, *(size(x) for x in extra_paths)),
                      last_used_complete=walked.last_used_complete)
    if not walked.partials:
        return [model]
    return [model, CacheItem(id=f"{model_id} (partial)", path=str(model_dir), bytes=walked.partial_bytes,
                             last_used=walked.partial_last_used, kind="partial", layout=layout,
                             paths=walked.partials)]


def scan_modelscope(root: Path, size: Size = _size) -> list[CacheItem]:
    """Models in both ModelScope layouts, partial downloads and the lock folder."""
    items: list[CacheItem] = []
    for base, prefix in ((root / "models", ""), (root / "hub" / "models", ""),
                         (root / "datasets", "dataset:"), (root / "hub" / "datasets", "dataset:")):
        if not base.is_dir() or base.is_symlink():
            continue
        for entry in sorted(os.scandir(base), key=lambda e: e.name):
            path = Path(entry.path)
            if entry.is_symlink() or not entry.is_dir(follow_symlinks=False):
                continue
            if entry.name == MS_TEMP:
                items.extend(_legacy_temp_items(path, prefix, size))
            elif "--" in entry.name and (path / "snapshots").is_dir():
                items.extend(_model_item(prefix + entry.name.replace("--", "/", 1), path, "modelscope", size=size))
            else:
                items.extend(_legacy_owner_items(path, prefix, size))
    lock_dir = root / ".lock"
    if lock_dir.is_dir() and not lock_dir.is_symlink():
        locks = size(lock_dir)
        used, complete = _last_used(lock_dir)
        items.append(CacheItem(id="(locks)", path=str(lock_dir), bytes=locks, last_used=used, kind="lock",
                               layout="modelscope", paths=(str(lock_dir),), paths_bytes=(locks,),
                               last_used_complete=complete))
    return items


def _legacy_owner_items(owner_dir: Path, prefix: str, size: Size = _size) -> list[CacheItem]:
    """``models/Owner/Name___x`` (legacy SDK) with the dotted symlink ``Name.x`` pointing at it."""
    links: dict[str, list[str]] = {}
    dirs = []
    for entry in sorted(os.scandir(owner_dir), key=lambda e: e.name):
        if entry.is_symlink():
            try:
                target = os.path.realpath(entry.path)
            except OSError:
                continue
            links.setdefault(target, []).append(entry.path)
        elif entry.is_dir(follow_symlinks=False):
            dirs.append(entry)
    items: list[CacheItem] = []
    for entry in dirs:
        model_id = f"{prefix}{owner_dir.name}/{entry.name.replace('___', '.')}"
        extra = tuple(links.get(os.path.realpath(entry.path), ()))
        items.extend(_model_item(model_id, Path(entry.path), "modelscope-legacy", extra, size))
    return items


def _legacy_temp_items(temp_dir: Path, prefix: str, size: Size = _size) -> list[CacheItem]:
    items = []
    for owner in sorted(os.scandir(temp_dir), key=lambda e: e.name):
        if owner.is_symlink() or not owner.is_dir(follow_symlinks=False):
            continue
        for entry in sorted(os.scandir(owner.path), key=lambda e: e.name):
            model_id = f"{prefix}{owner.name}/{entry.name.replace('___', '.')} (partial)"
            b = size(entry.path)
            used, complete = _last_used(entry.path)
            items.append(CacheItem(id=model_id, path=entry.path, bytes=b, last_used=used, kind="partial",
                                   layout="modelscope-legacy", paths=(entry.path,), paths_bytes=(b,),
                                   last_used_complete=complete))
    return items


def scan_huggingface(root: Path, size: Size = _size) -> list[CacheItem]:
    """``models--owner--name`` (and datasets--, spaces--) per repo, ``blobs/*.incomplete`` as partials."""
    items: list[CacheItem] = []
    if not root.is_dir():
        return items
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_symlink() or not entry.is_dir(follow_symlinks=False):
            continue
        kind, sep, rest = entry.name.partition("--")
        if sep and kind in ("models", "datasets", "spaces"):
            prefix = "" if kind == "models" else f"{kind[:-1]}:"
            items.extend(_model_item(prefix + rest.replace("--", "/", 1), Path(entry.path), "huggingface",
                                     size=size))
        elif entry.name == ".locks":
            b = size(entry.path)
            used, complete = _last_used(entry.path)
            items.append(CacheItem(id="(locks)", path=entry.path, bytes=b, last_used=used, kind="lock",
                                   layout="huggingface", paths=(entry.path,), paths_bytes=(b,),
                                   last_used_complete=complete))
    return items


def scan_generic(report: DiskReport) -> list[CacheItem]:
    """Top-level folders and files of a package/compiler cache, from the depth-1 scan of its root; each one's last
    use is the newest file inside it (:func:`_walk`), not its own mtime (which a new file deep inside never moves)."""
    items = []
    for e in report.entries:
        used, complete = _last_used(e.path)
        items.append(CacheItem(id=os.path.basename(e.path), path=e.path, bytes=e.bytes, last_used=used, kind="entry",
                               paths=(e.path,), paths_bytes=(e.bytes,), last_used_complete=complete))
    return items


def _mark_in_use(items: list[CacheItem], active: dict[str, str]) -> list[CacheItem]:
    if not active:
        return items
    out = []
    for item in items:
        user = None
        if item.kind in ("model", "partial"):  # a served model's partial files wait for the server too
            base = os.path.realpath(item.path)
            for model_path, run in active.items():
                if model_path == base or model_path.startswith(base + os.sep):
                    user = run
                    break
        out.append(replace(item, in_use_by=user) if user else item)
    return out


def scan_caches(env: Environ, active: dict[str, str] | None = None,
                names: Iterable[str] = CACHE_NAMES) -> list[CacheReport]:
    """Every known cache (present or not), each with its items largest first.

    ``active`` maps resolved model directories to the live vboot server using them (default:
    :func:`bootstrap.core.runs.active_model_paths`).
    """
    if active is None:
        from bootstrap.core.runs import active_model_paths

        active = active_model_paths(env)
    locations = cache_locations(env)
    reports = []
    for name in names:
        path, source = locations[name]
        exists = path.is_dir()
        warnings: list[str] = []
        items: list[CacheItem] = []
        total = 0
        why = unsafe_root(name, path, env, locations)
        refused = None
        if why is not None:
            setter = f"{source}={path}" if source != "default" else f"its default location {path}"
            refused = f"{setter} is no cache of its own: {why}"
            warnings.append(f"not scanned and never cleaned: {refused}")
        elif exists:
            try:
                # One scan of the root: its total, and the size of every item path below it.
                report = scan(path, depth=SCAN_DEPTH.get(name, 1))
                if name == "modelscope":
                    items = scan_modelscope(path, _sizes_from(report))
                elif name == "huggingface":
                    items = scan_huggingface(path, _sizes_from(report))
                else:
                    items = scan_generic(report)
                total = report.total_bytes
                if not report.complete:
                    warnings.append(f"{report.unreadable_count + report.error_count} entries could not be read")
            except OSError as exc:
                warnings.append(f"cannot read {path}: {exc.strerror or exc}")
        items = _mark_in_use(items, active)
        items.sort(key=lambda i: (-i.bytes, i.id))
        last = max((i.last_used for i in items if i.last_used is not None), default=None)
        reports.append(CacheReport(name=name, path=display_path(str(path))[0], bytes=total, items=tuple(items),
                                   exists=exists, source=source, clean_command=CLEAN_COMMANDS.get(name),
                                   last_used=last, warnings=tuple(warnings), refused=refused))
    return reports


# ---------------------------------------------------------------------------------------------- clean plan


@dataclass(frozen=True)
class PlanEntry:
    """One path the clean will remove and the bytes that frees (du -s -B1, links not followed)."""

    path: str
    bytes: int
    cache: str
    item_id: str
    kind: str  # model | partial | lock | entry
    is_symlink: bool = False


@dataclass(frozen=True)
class Refusal:
    """An item (or path) kept, and why. ``code``: in_use | downloading | mount_point | not_judged (planning);
    outside_root | unsafe_root | in_use | mount_point | os_error (execution)."""

    item_id: str
    path: str
    reason: str
    code: str = ""


@dataclass(frozen=True)
class CleanPlan:
    """What ``vboot disk clean`` would do: data only, shown before anything is deleted."""

    entries: tuple[PlanEntry, ...]
    total_bytes: int
    refused: tuple[Refusal, ...] = ()
    notes: tuple[str, ...] = ()
    roots: dict[str, str] = field(default_factory=dict)  # cache name -> root (deletions stay inside)


@dataclass(frozen=True)
class CleanResult:
    removed: tuple[str, ...]
    freed_bytes: int  # plan bytes minus what is still on disk afterwards (measured after)
    failed: tuple[Refusal, ...] = ()
    fs_free_before_bytes: dict[str, int] = field(default_factory=dict)
    fs_free_after_bytes: dict[str, int] = field(default_factory=dict)


def _matches_model(item: CacheItem, wanted: set[str]) -> bool:
    base = item.id.removesuffix(" (partial)")
    forms = {base, base.lower(), base.replace("/", "--"), base.replace("/", "--").lower()}
    return bool(forms & wanted)


def downloads_running(root: Path) -> bool:
    """True when a ModelScope download holds one of the locks in ``ROOT/.lock`` (a flock we cannot take)."""
    lock_dir = root / ".lock"
    if not lock_dir.is_dir():
        return False
    for entry in os.scandir(lock_dir):
        if not entry.name.endswith(".lock") or entry.is_symlink():
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return True
        finally:
            os.close(fd)
    return False


def mount_points() -> frozenset[str]:
    """Every mount point of this mount namespace (``/proc/self/mountinfo``; what ``findmnt -l`` lists)."""
    return frozenset(point for point, _dev, _fstype in mount_table())


def mounts_inside(path: str, points: Iterable[str]) -> list[str]:
    """The mount points at or below ``path`` (resolved; mountinfo lists real paths), sorted. A bind mount of the
    same filesystem counts too: it has no other device number, only the mount table knows it."""
    real = os.path.realpath(path)
    return sorted(p for p in points if _within(p, real))


def _in_scope(report: CacheReport, *, partial: bool, models: bool, caches: set[str], selectors: bool) -> bool:
    """Whether a selection reaches into ``report``'s cache (partial downloads and models live in the hub caches)."""
    if not selectors or report.name in caches:
        return True
    return (partial or models) and report.name in ("modelscope", "huggingface")


def plan_clean(reports: list[CacheReport], *, partial: bool = False, models: Iterable[str] = (),
               caches: Iterable[str] = (), older_than_s: float | None = None, now: float | None = None,
               busy: Callable[[CacheReport], bool] | None = None,
               mounts: Callable[[], Iterable[str]] = mount_points) -> CleanPlan:
    """Choose what to delete. Selectors add up (``--partial``, ``--model``, ``--cache``); ``older_than_s``
    narrows them (alone, it selects every item not used for that long).

    Refused: a cache whose root is no cache of its own (``report.refused``) when the selection reaches it
    (UnsafeCacheRootError, before anything is planned); models a live server uses; items with a mount point
    inside (``mounts``: the mount points, from the mount table); with ``older_than_s``, items whose last use
    could not be established (too many entries). ConflictError when refusals leave nothing to delete.
    """
    now = time.time() if now is None else now
    wanted_models = {m.strip() for m in models if m.strip()}
    wanted_models |= {m.lower() for m in wanted_models}
    wanted_caches = set(caches)
    unknown = wanted_caches - set(CACHE_NAMES)
    if unknown:
        raise UsageError(f"unknown cache: {', '.join(sorted(unknown))}", hint=f"choose from {', '.join(CACHE_NAMES)}")
    if not (partial or wanted_models or wanted_caches or older_than_s is not None):
        raise UsageError("say what to clean", hint="pass --partial, --model ID, --cache NAME or --older-than 30d "
                                                  "(see `vboot disk caches`)")
    selectors = partial or bool(wanted_models) or bool(wanted_caches)
    for report in reports:
        if report.refused and _in_scope(report, partial=partial, models=bool(wanted_models), caches=wanted_caches,
                                        selectors=selectors):
            variable = report.source if report.source != "default" else "HOME or XDG_CACHE_HOME"
            raise UnsafeCacheRootError(
                f"refusing to clean the {report.name} cache: {report.refused}",
                hint=f"point {variable} at a directory that holds only this cache (or unset it), then check "
                     f"`vboot disk caches`; nothing was deleted", cache=report.name, path=report.path,
                variable=report.source)
    points: frozenset[str] | None = None
    busy = busy or (lambda r: r.name == "modelscope" and downloads_running(Path(r.path)))
    entries: list[PlanEntry] = []
    refused: list[Refusal] = []
    notes: list[str] = []
    found_models: set[str] = set()
    roots = {}
    for report in reports:
        if not report.exists:
            continue
        roots[report.name] = report.path
        downloading = None
        chosen_here = False
        for item in report.items:
            picked = ((partial and item.kind == "partial")
                      or (report.name in wanted_caches)
                      or (bool(wanted_models) and item.kind in ("model", "partial")
                          and _matches_model(item, wanted_models)))
            if not selectors:
                picked = True
            if not picked:
                continue
            if wanted_models and _matches_model(item, wanted_models):
                found_models.add(item.id.removesuffix(" (partial)"))
            if older_than_s is not None and item.last_used is not None and now - item.last_used < older_than_s:
                continue
            if older_than_s is not None and not item.last_used_complete:
                refused.append(Refusal(item.id, item.path, f"more than {LAST_USED_FILE_LIMIT} files: its last use "
                                                           f"cannot be established, so it is not judged old (drop "
                                                           f"--older-than to delete it anyway)", "not_judged"))
                continue
            if item.in_use_by:
                refused.append(Refusal(item.id, item.path, f"in use by the running server {item.in_use_by!r} "
                                                           f"(stop it first: `vboot stop {item.in_use_by}`)", "in_use"))
                continue
            if item.kind == "partial":
                if downloading is None:
                    downloading = busy(report)
                recent = item.last_used is not None and now - item.last_used < BUSY_WINDOW_S
                if downloading or recent:
                    refused.append(Refusal(item.id, item.path, "a download may be writing it right now "
                                                               "(a download lock is held or it changed <2 min ago)",
                                           "downloading"))
                    continue
            if points is None:
                points = frozenset(mounts())
            inside = [m for p in item.paths if not os.path.islink(p) for m in mounts_inside(p, points)]
            if inside:
                more = f" and {len(inside) - 1} more" if len(inside) > 1 else ""
                refused.append(Refusal(item.id, item.path, f"{inside[0]}{more} is mounted inside it: vboot never "
                                                           f"deletes across a mount point (unmount it first)",
                                       "mount_point"))
                continue
            chosen_here = True
            measured = dict(zip(item.paths, item.paths_bytes, strict=False))  # a path not measured is measured below
            for p in item.paths:
                b = measured[p] if p in measured else _size(p)
                entries.append(PlanEntry(path=p, bytes=b, cache=report.name, item_id=item.id, kind=item.kind,
                                         is_symlink=os.path.islink(p)))
        if chosen_here and report.clean_command:
            notes.append(f"{report.name} has its own cleaner: `{report.clean_command}` "
                         f"(safe while no install is running)")
    named = sorted({m.strip() for m in models if m.strip()})
    if named and not found_models:
        raise UsageError(f"no cached model matches {', '.join(named)}",
                         hint="see `vboot disk caches` for the ids (Owner/Name)")
    blocking = [r for r in refused if r.code in ("in_use", "mount_point")]
    if not entries and blocking:
        first = blocking[0]
        hint = ("stop the server first (`vboot ps`, then `vboot stop NAME`)" if first.code == "in_use" else
                "unmount what is mounted there (`findmnt -R PATH` lists it), or leave that item alone")
        raise ConflictError(f"refusing to delete {first.item_id}: {first.reason}", hint=hint, item=first.item_id,
                            path=first.path, reason=first.code)
    # An item may be listed twice (a partial file inside a model being removed): keep the outermost path.
    entries = _drop_nested(entries)
    return CleanPlan(entries=tuple(entries), total_bytes=sum(e.bytes for e in entries), refused=tuple(refused),
                     notes=tuple(notes), roots=roots)


def _drop_nested(entries: list[PlanEntry]) -> list[PlanEntry]:
    dirs = sorted({e.path for e in entries if not e.is_symlink})
    out = []
    seen = set()
    for e in entries:
        if e.path in seen:
            continue
        if any(e.path.startswith(d + os.sep) for d in dirs if d != e.path):
            continue
        seen.add(e.path)
        out.append(e)
    return out


def _inside(path: str, root: str) -> bool:
    """True when ``path``'s parent resolves inside ``root`` (the path itself is not resolved: it may be a link)."""
    parent = os.path.realpath(os.path.dirname(path))
    real_root = os.path.realpath(root)
    return parent == real_root or parent.startswith(real_root.rstrip(os.sep) + os.sep)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _remove_tree(top: str, points: frozenset[str]) -> None:
    """``rm -r --one-file-system`` of directory ``top`` that stops at any mount point instead of skipping it.

    Like shutil.rmtree on Linux it works through directory fds opened with O_NOFOLLOW (a symlink inside is
    removed, never followed; a directory swapped for a link between listing and opening is refused) and it is
    iterative (no recursion limit on deep trees). Before entering a directory it checks that it is on ``top``'s
    device and not in ``points`` (a bind mount of the same filesystem keeps the device number); a crossing raises
    MountCrossing and leaves that mount, and the directories above it, in place. Other errors raise OSError.
    """
    real_top = os.path.realpath(top)
    if real_top in points:
        raise MountCrossing(errno.EXDEV, f"{real_top} is a mount point: not entered")
    st = os.lstat(top)
    frames: list[tuple[int, str, list[str]]] = []  # (directory fd, its real path, subdirectories still to remove)
    try:
        _enter(frames, os.open(top, _DIR_FLAGS), real_top, st)
        while frames:
            fd, path, subdirs = frames[-1]
            if not subdirs:
                os.close(fd)
                frames.pop()
                if frames:
                    os.rmdir(os.path.basename(path), dir_fd=frames[-1][0])
                continue
            name = subdirs.pop()
            child = f"{path}/{name}"
            sub_st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if sub_st.st_dev != st.st_dev or child in points:
                raise MountCrossing(errno.EXDEV, f"{child} is a mount point: not entered, nothing below it removed")
            _enter(frames, os.open(name, _DIR_FLAGS, dir_fd=fd), child, sub_st)
    finally:
        for fd, _path, _subdirs in frames:
            os.close(fd)
    os.rmdir(top)


def _enter(frames: list[tuple[int, str, list[str]]], fd: int, path: str, listed: os.stat_result) -> None:
    """Push directory ``fd`` (opened at ``path``) after checking it is the one ``listed`` and unlinking its files."""
    frames.append((fd, path, []))
    now = os.fstat(fd)
    if (now.st_dev, now.st_ino) != (listed.st_dev, listed.st_ino):
        raise OSError(errno.ELOOP, f"{path} changed while being removed")
    frames[-1][2].extend(_clear_files(fd))


def _clear_files(fd: int) -> list[str]:
    """Unlink every non-directory in directory ``fd``; returns the names of its subdirectories."""
    subdirs = []
    with os.scandir(fd) as it:
        for entry in it:
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.name)
            else:
                os.unlink(entry.name, dir_fd=fd)
    return subdirs


def _remove(path: str, points: frozenset[str] = frozenset()) -> None:
    st = os.lstat(path)
    if stat_mod.S_ISDIR(st.st_mode):
        _remove_tree(path, points)
    else:
        os.unlink(path)  # a symlink: the link goes, its target stays


def execute_plan(plan: CleanPlan, active: dict[str, str] | None = None, env: Environ | None = None,
                 mounts: Callable[[], Iterable[str]] = mount_points,
                 usage: Callable[[str], tuple[int, int]] | None = None) -> CleanResult:
    """Delete what ``plan`` lists, re-checking each path first (inside its root, the root still a cache of its
    own, no live server using it, no mount point inside: the mount table is read again now); measures what
    remains afterwards (``usage``: (size, free) of a filesystem, ``df -B1``; production default
    bootstrap.probes.system.fs_usage). A path that fails is reported in ``failed`` with a code and a reason."""
    if usage is None:
        from bootstrap.probes.system import fs_usage  # the production default

        usage = fs_usage

    env = env or Environ()
    if active is None:
        from bootstrap.core.runs import active_model_paths

        active = active_model_paths(env)
    locations = cache_locations(env)
    unsafe = {name: why for name, root in plan.roots.items()
              if (why := unsafe_root(name, root, env, locations)) is not None}
    points = frozenset(mounts())
    removed: list[str] = []
    failed: list[Refusal] = []
    freed = 0
    before: dict[str, int] = {}
    after: dict[str, int] = {}
    for name, cache_root in plan.roots.items():
        try:
            before[name] = usage(cache_root)[1]
        except OSError:
            pass
    for entry in plan.entries:
        root = plan.roots.get(entry.cache)
        if root is None or not _inside(entry.path, root):
            failed.append(Refusal(entry.item_id, entry.path, f"outside the {entry.cache} cache root: not touched",
                                  "outside_root"))
            continue
        if entry.cache in unsafe:
            failed.append(Refusal(entry.item_id, entry.path, f"the {entry.cache} cache root {root} is no cache of "
                                                             f"its own ({unsafe[entry.cache]}): not touched",
                                  "unsafe_root"))
            continue
        if not os.path.lexists(entry.path):
            removed.append(entry.path)  # already gone (removed with its model, or by someone else)
            continue
        if not entry.is_symlink:
            real = os.path.realpath(entry.path)
            user = next((run for mp, run in active.items() if mp == real or mp.startswith(real + os.sep)), None)
            if user:
                failed.append(Refusal(entry.item_id, entry.path, f"in use by the running server {user!r}", "in_use"))
                continue
            inside = mounts_inside(entry.path, points)
            if inside:
                failed.append(Refusal(entry.item_id, entry.path, f"{inside[0]} is mounted inside it: not touched",
                                      "mount_point"))
                continue
        try:
            _remove(entry.path, points)
        except MountCrossing as exc:
            failed.append(Refusal(entry.item_id, entry.path, exc.strerror or str(exc), "mount_point"))
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename and exc.filename != entry.path else ""
            failed.append(Refusal(entry.item_id, entry.path, f"{exc.strerror or exc}{where}", "os_error"))
        left = _size(entry.path) if os.path.lexists(entry.path) else 0
        freed += max(0, entry.bytes - left)
        if not left and not os.path.lexists(entry.path):
            removed.append(entry.path)
    for name, cache_root in plan.roots.items():
        try:
            after[name] = usage(cache_root)[1]
        except OSError:
            pass
    return CleanResult(removed=tuple(removed), freed_bytes=freed, failed=tuple(failed),
                       fs_free_before_bytes=before, fs_free_after_bytes=after)
