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
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat as stat_mod
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from bootstrap.core.disk import DiskReport, display_path, scan
from bootstrap.core.environ import Environ
from bootstrap.core.errors import ConflictError, UsageError
from bootstrap.core.paths import cache_home, modelscope_cache_source, partial_target

CACHE_NAMES = ("modelscope", "huggingface", "pip", "uv", "torch", "inductor", "vllm", "triton")
CLEAN_COMMANDS = {"pip": "pip cache purge", "uv": "uv cache clean"}
MS_TEMP = "._____temp"
# A partial file written this recently may belong to a download in progress: never planned for deletion.
BUSY_WINDOW_S = 120.0
LAST_USED_FILE_LIMIT = 5000


@dataclass(frozen=True)
class CacheItem:
    """One thing in a cache: a model (``kind`` model), partial downloads (partial), locks, or a top folder (entry).

    ``paths`` is what cleaning it removes (a legacy ModelScope model: its directory and its dotted symlink;
    partials: the partial files or the temp folder), and ``paths_bytes`` what each one holds. ``last_used`` is the newest access/modification
    time seen (epoch seconds). ``in_use_by`` names the live vboot server that serves it.
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


def _newer(a: float | None, b: float) -> float:
    return b if a is None or b > a else a


def _walk(path: Path | str, limit: int = LAST_USED_FILE_LIMIT) -> _Walked:
    """One walk below ``path`` (links not followed) for both facts an item needs:

    - last use: the newest atime/mtime of its first ``limit`` entries (directories: mtime only, as listing one
      moves its atime, this walk too). File atimes are moved by reads (relatime), never by our stat calls.
    - its partial downloads (``paths.partial_target``, the definition `vboot pull` uses) with their du bytes
      and newest mtime, looked for in the whole tree.
    """
    newest: float | None = None
    partials: list[str] = []
    partial_bytes = 0
    partial_newest: float | None = None
    seen = 0
    root = os.fspath(path)
    stack: list[tuple[str, bool]] = [(root, True)]  # (path, a real directory per its dir entry)
    while stack:
        current, is_dir = stack.pop()
        name = os.path.basename(current)
        timed = seen < limit
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
    return _Walked(newest, tuple(sorted(partials)), partial_bytes, partial_newest)


def _last_used(path: Path | str) -> float | None:
    return _walk(path).last_used


def _mtime(path: str) -> float | None:
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return None


def _model_item(model_id: str, model_dir: Path, layout: str, extra_paths: tuple[str, ...] = (),
                size: Size = _size) -> list[CacheItem]:
    """A model item (bytes without its partial files) plus, separately, its partial downloads."""
    walked = _walk(model_dir)
    full = size(model_dir)
    paths = (str(model_dir), *extra_paths)
    model = CacheItem(id=model_id, path=str(model_dir), bytes=full - walked.partial_bytes,
                      last_used=walked.last_used, kind="model", layout=layout, paths=paths,
                      paths_bytes=(full, *(size(x) for x in extra_paths)))
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
        items.append(CacheItem(id="(locks)", path=str(lock_dir), bytes=locks, last_used=_last_used(lock_dir),
                               kind="lock", layout="modelscope", paths=(str(lock_dir),), paths_bytes=(locks,)))
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
            items.append(CacheItem(id=model_id, path=entry.path, bytes=b, last_used=_last_used(entry.path),
                                   kind="partial", layout="modelscope-legacy", paths=(entry.path,), paths_bytes=(b,)))
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
            items.append(CacheItem(id="(locks)", path=entry.path, bytes=b, last_used=_last_used(entry.path),
                                   kind="lock", layout="huggingface", paths=(entry.path,), paths_bytes=(b,)))
    return items


def scan_generic(report: DiskReport) -> list[CacheItem]:
    """Top-level folders and files of a package/compiler cache, from the depth-1 scan of its root."""
    return [CacheItem(id=os.path.basename(e.path), path=e.path, bytes=e.bytes, last_used=_mtime(e.path),
                      kind="entry", paths=(e.path,), paths_bytes=(e.bytes,))
            for e in report.entries]


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
        if exists:
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
                                   last_used=last, warnings=tuple(warnings)))
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
    item_id: str
    path: str
    reason: str


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


def plan_clean(reports: list[CacheReport], *, partial: bool = False, models: Iterable[str] = (),
               caches: Iterable[str] = (), older_than_s: float | None = None, now: float | None = None,
               busy: Callable[[CacheReport], bool] | None = None) -> CleanPlan:
    """Choose what to delete. Selectors add up (``--partial``, ``--model``, ``--cache``); ``older_than_s``
    narrows them (alone, it selects every item not used for that long). Models a live server uses are refused.
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
                      or (bool(wanted_models) and item.kind in ("model", "partial") and _matches_model(item, wanted_models)))
            if not selectors:
                picked = True
            if not picked:
                continue
            if wanted_models and _matches_model(item, wanted_models):
                found_models.add(item.id.removesuffix(" (partial)"))
            if older_than_s is not None and item.last_used is not None and now - item.last_used < older_than_s:
                continue
            if item.in_use_by:
                refused.append(Refusal(item.id, item.path, f"in use by the running server {item.in_use_by!r} "
                                                           f"(stop it first: `vboot stop {item.in_use_by}`)"))
                continue
            if item.kind == "partial":
                if downloading is None:
                    downloading = busy(report)
                recent = item.last_used is not None and now - item.last_used < BUSY_WINDOW_S
                if downloading or recent:
                    refused.append(Refusal(item.id, item.path, "a download may be writing it right now "
                                                               "(a download lock is held or it changed <2 min ago)"))
                    continue
            chosen_here = True
            measured = dict(zip(item.paths, item.paths_bytes))
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
    if not entries and any("in use" in r.reason for r in refused):
        first = next(r for r in refused if "in use" in r.reason)
        raise ConflictError(f"refusing to delete {first.item_id}: {first.reason}",
                            hint="stop the server first (`vboot ps`, then `vboot stop NAME`)")
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


def _remove(path: str) -> None:
    st = os.lstat(path)
    if stat_mod.S_ISDIR(st.st_mode):
        shutil.rmtree(path)  # fd-based on Linux: removes symlinks inside, never what they point to
    else:
        os.unlink(path)  # a symlink: the link goes, its target stays


def execute_plan(plan: CleanPlan, active: dict[str, str] | None = None, env: Environ | None = None) -> CleanResult:
    """Delete what ``plan`` lists, re-checking each path first; measures what remains afterwards."""
    from bootstrap.probes.system import fs_usage

    if active is None:
        from bootstrap.core.runs import active_model_paths

        active = active_model_paths(env or Environ())
    removed: list[str] = []
    failed: list[Refusal] = []
    freed = 0
    before: dict[str, int] = {}
    after: dict[str, int] = {}
    for name, root in plan.roots.items():
        try:
            before[name] = fs_usage(root)[1]
        except OSError:
            pass
    for entry in plan.entries:
        root = plan.roots.get(entry.cache)
        if root is None or not _inside(entry.path, root):
            failed.append(Refusal(entry.item_id, entry.path, f"outside the {entry.cache} cache root: not touched"))
            continue
        if not os.path.lexists(entry.path):
            removed.append(entry.path)  # already gone (removed with its model, or by someone else)
            continue
        if not entry.is_symlink:
            real = os.path.realpath(entry.path)
            user = next((run for mp, run in active.items() if mp == real or mp.startswith(real + os.sep)), None)
            if user:
                failed.append(Refusal(entry.item_id, entry.path, f"in use by the running server {user!r}"))
                continue
        try:
            _remove(entry.path)
        except OSError as exc:
            failed.append(Refusal(entry.item_id, entry.path, exc.strerror or str(exc)))
        left = _size(entry.path) if os.path.lexists(entry.path) else 0
        freed += max(0, entry.bytes - left)
        if not left and not os.path.lexists(entry.path):
            removed.append(entry.path)
    for name, root in plan.roots.items():
        try:
            after[name] = fs_usage(root)[1]
        except OSError:
            pass
    return CleanResult(removed=tuple(removed), freed_bytes=freed, failed=tuple(failed),
                       fs_free_before_bytes=before, fs_free_after_bytes=after)
