"""Pulling a model from ModelScope: the disk budget, stray partial files, and the pull record.

The flow of :func:`ensure_model`:

1. A recorded pull for (model, revision, cache dir) whose files are all still there with the recorded sizes
   answers at once: no hub, no hashing (``vboot serve`` on every start, ``vboot pull --offline``).
2. Otherwise list the repo once (the client's own listing call), look at what the cache already holds (complete
   files, resumable ``*.incomplete`` partials, stray partials of other revisions) and compare the bytes still
   to fetch with the free space of the target filesystem plus a margin: refuse *before* any byte moves.
3. Download exactly the listed files (the client skips its own listing; resume with Range, sha256 + size
   checks against that listing, retries), then record the pull atomically in ``$XDG_STATE_HOME/vboot/pulls/``.

After a full disk, the partial files this call created or grew are removed (the client leaves them).
The planning functions are pure; the machine is touched through injected collaborators (``hub``,
``free_space``) whose production defaults live in ``bootstrap.probes``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import TypeGuard

from bootstrap.core.environ import Environ
from bootstrap.core.errors import DiskFullError, ModelNotFoundError, NotEnoughSpaceError, UsageError
from bootstrap.core.hub import HubClient, RemoteFile
from bootstrap.core.paths import ModelInCache, files_under, locate_model, partial_target, state_dir, validate_model_id
from bootstrap.core.repoids import check_revision
from bootstrap.core.runs import write_json_atomic
from bootstrap.core.units import format_bytes, parse_size

MARGIN_ENV = "VBOOT_PULL_MARGIN"
MARGIN_MIN_BYTES = 256 * 1024**2  # room for logs, lock files and whatever else writes there meanwhile
MARGIN_FRACTION = 0.02
RECORD_VERSION = 1

Progress = Callable[[int, int], None]  # (bytes done, bytes total), called from download threads



@dataclass(frozen=True)
class Partial:
    """A partial download on disk: ``*.incomplete``, ``*.parallel_tmp`` or a range part ``NAME_START_END``."""

    path: str
    bytes: int
    resumes: str = ""  # the repo file this call will resume from it ("" = stray: nothing will reuse it)


@dataclass(frozen=True)
class CacheHint:
    """One of the largest caches that could go (from `vboot disk caches`)."""

    name: str
    path: str
    bytes: int
    clean_command: str = ""


@dataclass(frozen=True)
class PullPlan:
    """What a pull needs, before any byte moves. All sizes in bytes."""

    model: str
    revision: str
    snapshot_dir: str
    files: tuple[RemoteFile, ...]
    total_bytes: int  # the whole repo
    present_bytes: int  # files already in the snapshot with the listed size (the client re-hashes them)
    resumable_bytes: int  # partials of this snapshot the client will resume
    needed_bytes: int  # still to be written: total - present - resumable
    margin_bytes: int
    free_bytes: int
    filesystem_path: str  # where free space was measured (the cache dir or its nearest existing parent)
    partials: tuple[Partial, ...] = ()
    present_paths: frozenset[str] = frozenset()

    @property
    def stray_bytes(self) -> int:
        """Partials nothing will reuse (other revisions, files no longer listed): space that could go."""
        return sum(p.bytes for p in self.partials if not p.resumes)

    @property
    def enough_space(self) -> bool:
        return self.needed_bytes + self.margin_bytes <= self.free_bytes

    @property
    def missing_files(self) -> int:
        return sum(1 for f in self.files if f.path not in self.present_paths)


@dataclass(frozen=True)
class PullRecord:
    """A completed, verified pull (stored as JSON in ``$XDG_STATE_HOME/vboot/pulls/``)."""

    model: str
    revision: str
    cache_dir: str
    path: str
    bytes: int
    files: Mapping[str, int]  # repo path -> size in bytes
    sha256: Mapping[str, str]
    verified_at: float
    endpoint: str = ""
    version: int = RECORD_VERSION


@dataclass(frozen=True)
class PullResult:
    """What :func:`ensure_model` returns (and `vboot pull --json` prints as ``data``)."""

    model: str
    revision: str
    path: Path  # the snapshot directory the client returned
    bytes: int
    files: int
    downloaded_bytes: int
    verified_at: float | None  # None: found in the cache offline without a record (never verified by vboot)
    source: str = "hub"  # "hub" (client call), "record" (recorded pull, no hub, no hashing), "cache" (offline)
    cache_dir: str = ""
    elapsed_s: float = 0.0
    removed_partials_bytes: int = 0


def find_partials(where: ModelInCache, listed: Iterable[RemoteFile] = ()) -> list[Partial]:
    """Partial files of this model anywhere in the cache (every directory of ``where``;
    :func:`~bootstrap.core.paths.partial_target`, the definition `vboot disk clean --partial` uses too); those
    the coming call will resume are marked.

    Only a partial of a listed file inside the snapshot directory is resumed; ``*.parallel_tmp`` never is (the
    client rebuilds it from the range parts).
    """
    listed_paths = {f.path for f in listed}
    snapshot_dir = where.snapshot_dir
    out: list[Partial] = []
    seen: set[Path] = set()
    for root in where.dirs:
        for path, st in files_under(root):
            full = Path(path)
            base = partial_target(full.name, st.st_size)
            if base is None or full in seen:
                continue
            seen.add(full)
            in_snapshot = full.parent == snapshot_dir or snapshot_dir in full.parents
            rel_base = (full.parent / base).relative_to(snapshot_dir).as_posix() if in_snapshot else ""
            resumes = rel_base if rel_base in listed_paths and not full.name.endswith(".parallel_tmp") else ""
            out.append(Partial(path, st.st_size, resumes))
    return sorted(out, key=lambda p: p.path)


def present_files(snapshot_dir: Path, files: Iterable[RemoteFile]) -> frozenset[str]:
    """Listed files already in the snapshot with the listed size (the client still checks their sha256)."""
    out = set()
    for f in files:
        try:
            if (snapshot_dir / f.path).stat().st_size == f.size:
                out.add(f.path)
        except OSError:
            continue
    return frozenset(out)


def margin_for(total_bytes: int, env: Environ, override: int | None = None) -> int:
    """Free space to keep beyond the download: ``--margin``, else $VBOOT_PULL_MARGIN, else max(2%, 256 MiB)."""
    if override is not None:
        return override
    raw = env.get(MARGIN_ENV)
    if raw:
        try:
            return parse_size(raw)
        except ValueError as exc:
            raise UsageError(f"{MARGIN_ENV}={raw!r}: {exc}", hint=f"unset {MARGIN_ENV} or write e.g. 512MB") from None
    return max(MARGIN_MIN_BYTES, int(total_bytes * MARGIN_FRACTION))


def plan_pull(model_id: str, revision: str, snapshot_dir: Path, files: Sequence[RemoteFile], *,
              present: frozenset[str], partials: Sequence[Partial], free_bytes: int, filesystem_path: str,
              margin_bytes: int) -> PullPlan:
    """The disk budget of a pull (pure: every fact comes in as an argument)."""
    sizes = {f.path: f.size for f in files}
    total = sum(sizes.values())
    present_bytes = sum(sizes[p] for p in present if p in sizes)
    resumable: dict[str, int] = {}
    for p in partials:
        if p.resumes and p.resumes in sizes and p.resumes not in present:
            # Several range parts of one file add up; never count more than the file itself.
            resumable[p.resumes] = min(sizes[p.resumes], resumable.get(p.resumes, 0) + p.bytes)
    resumable_bytes = sum(resumable.values())
    needed = max(0, total - present_bytes - resumable_bytes)
    return PullPlan(
        model=model_id, revision=revision, snapshot_dir=str(snapshot_dir), files=tuple(files), total_bytes=total,
        present_bytes=present_bytes, resumable_bytes=resumable_bytes, needed_bytes=needed, margin_bytes=margin_bytes,
        free_bytes=free_bytes, filesystem_path=filesystem_path, partials=tuple(partials), present_paths=present,
    )


def free_space(path: Path) -> tuple[str, int]:
    """(the existing directory measured, bytes an ordinary user can write there): ``df -B1 DIR``'s Avail."""
    from bootstrap.probes.system import disk_free

    found = disk_free(path)
    return found.checked_path, found.free_bytes


def largest_caches(env: Environ, limit: int = 3) -> tuple[CacheHint, ...]:
    """The biggest caches `vboot disk caches` reports, to name in a refusal (never raises: a hint must not
    turn a clear refusal into a crash)."""
    from bootstrap.core.caches import scan_caches

    try:
        reports = scan_caches(env)
    except Exception:  # noqa: BLE001
        return ()
    hints = [CacheHint(r.name, r.path, r.bytes, r.clean_command or "") for r in reports if r.exists and r.bytes > 0]
    hints.sort(key=lambda h: h.bytes, reverse=True)
    return tuple(hints[:limit])


_gb = partial(format_bytes, binary=False)  # error lines: decimal units, as `df -H` and download sizes


def not_enough_space(plan: PullPlan, caches: Sequence[CacheHint]) -> NotEnoughSpaceError:
    """The refusal: both numbers, the largest caches that could go, and stray partials."""
    parts = [f"not enough space for {plan.model}@{plan.revision} in {plan.filesystem_path}: "
             f"need {_gb(plan.needed_bytes)} + {_gb(plan.margin_bytes)} margin, {_gb(plan.free_bytes)} free"]
    if caches:
        parts.append("largest caches: " + ", ".join(
            f"{c.path} {_gb(c.bytes)}" + (f" (`{c.clean_command}`)" if c.clean_command else "") for c in caches))
    if plan.stray_bytes:
        parts.append(f"stray partial downloads of this model: {_gb(plan.stray_bytes)} (`vboot disk clean --partial`)")
    return NotEnoughSpaceError(
        "; ".join(parts),
        hint="free space (`vboot disk caches`, then `vboot disk clean`), or pass --cache-dir on a larger disk",
        model=plan.model, revision=plan.revision, needed_bytes=plan.needed_bytes, margin_bytes=plan.margin_bytes,
        free_bytes=plan.free_bytes, filesystem=plan.filesystem_path, stray_partial_bytes=plan.stray_bytes,
        caches=[asdict(c) for c in caches],
    )


# ---------------------------------------------------------------------------------------------------------
# The pull record
# ---------------------------------------------------------------------------------------------------------
def record_path(env: Environ, model_id: str, revision: str, cache_dir: Path) -> Path:
    key = "\0".join((model_id, revision, str(Path(cache_dir).expanduser().resolve())))
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{model_id}@{revision}")[:80]
    return state_dir(env) / "pulls" / f"{slug}-{digest}.json"


def save_record(env: Environ, record: PullRecord) -> Path:
    path = record_path(env, record.model, record.revision, Path(record.cache_dir))
    payload = asdict(record)
    payload["files"] = dict(record.files)
    payload["sha256"] = dict(record.sha256)
    write_json_atomic(path, payload)
    return path


def load_record(env: Environ, model_id: str, revision: str, cache_dir: Path) -> PullRecord | None:
    """The recorded pull, or None when missing, unreadable or for another key (never raises)."""
    path = record_path(env, model_id, revision, cache_dir)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        rec = PullRecord(
            model=raw["model"], revision=raw["revision"], cache_dir=raw["cache_dir"], path=raw["path"],
            bytes=int(raw["bytes"]), files={str(k): int(v) for k, v in raw["files"].items()},
            sha256={str(k): str(v) for k, v in raw.get("sha256", {}).items()},
            verified_at=float(raw["verified_at"]), endpoint=raw.get("endpoint", ""),
            version=int(raw.get("version", RECORD_VERSION)),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if rec.model != model_id or rec.revision != revision:
        return None
    return rec


def record_intact(record: PullRecord) -> bool:
    """Every recorded file still exists with its recorded size (one stat each; no hashing)."""
    root = Path(record.path)
    for rel, size in record.files.items():
        try:
            st = (root / rel).stat()
        except OSError:
            return False
        if st.st_size != size:
            return False
    return root.is_dir()


def _result_from_record(record: PullRecord, start: float) -> PullResult:
    return PullResult(model=record.model, revision=record.revision, path=Path(record.path), bytes=record.bytes,
                      files=len(record.files), downloaded_bytes=0, verified_at=record.verified_at, source="record",
                      cache_dir=record.cache_dir, elapsed_s=time.monotonic() - start)


# ---------------------------------------------------------------------------------------------------------
# Progress accounting across the client's download threads
# ---------------------------------------------------------------------------------------------------------
class _Meter:
    """Sums the client's per-file byte deltas into one total for the progress callback.

    When the client resumes a file it first reports the bytes already in the partial file; those are counted
    for progress but not as downloaded.
    """

    def __init__(self, plan: PullPlan, progress: Progress | None) -> None:
        self._lock = threading.Lock()
        self._progress = progress
        self._total = plan.total_bytes
        self._done = plan.present_bytes
        self._downloaded = 0
        self._resume_prefix: dict[str, int] = {}
        for p in plan.partials:
            if p.resumes and p.resumes not in plan.present_paths and p.path.endswith(".incomplete"):
                self._resume_prefix[p.resumes] = p.bytes
        self._seen: set[str] = set()
        if progress is not None:
            progress(self._done, self._total)

    def __call__(self, filename: str, delta: int) -> None:
        with self._lock:
            first = filename not in self._seen
            self._seen.add(filename)
            self._done = max(0, min(self._total, self._done + delta))
            if not (first and delta == self._resume_prefix.get(filename)) and delta > 0:
                self._downloaded += delta
            done = self._done
        if self._progress is not None:
            self._progress(done, self._total)

    @property
    def downloaded(self) -> int:
        with self._lock:
            return self._downloaded


def _partial_sizes(snapshot_dir: Path) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime_ns) of partial files in the snapshot directory."""
    return {path: (st.st_size, st.st_mtime_ns) for path, st in files_under(snapshot_dir)
            if partial_target(os.path.basename(path), st.st_size) is not None}


def remove_new_partials(before: Mapping[str, tuple[int, int]], snapshot_dir: Path) -> int:
    """Delete partial files this call created or grew; returns the bytes freed (partials from earlier runs,
    untouched by this call, stay for a later resume)."""
    freed = 0
    for path, stat in _partial_sizes(snapshot_dir).items():
        if before.get(path) == stat:
            continue
        try:
            os.unlink(path)
            freed += stat[0]
        except OSError:
            continue
    return freed


# ---------------------------------------------------------------------------------------------------------
# The one entry point (`vboot pull`, `vboot serve`)
# ---------------------------------------------------------------------------------------------------------
def _default_hub() -> HubClient:
    from bootstrap.probes import modelscope_hub

    return modelscope_hub


def ensure_model(
    model_id: str,
    revision: str,
    cache_dir: Path,
    env: Environ,
    *,
    offline: bool = False,
    progress: Progress | None = None,
    verify: bool = False,
    margin_bytes: int | None = None,
    max_workers: int = 4,
    hub: HubClient | None = None,
    free_space: Callable[[Path], tuple[str, int]] = free_space,
    caches: Callable[[Environ], Sequence[CacheHint]] | None = None,
    on_plan: Callable[[PullPlan], None] | None = None,
    located: ModelInCache | None = None,
    measured: tuple[str, int] | None = None,
) -> PullResult:
    """Make ``model_id@revision`` present and verified in ``cache_dir``; return where it is.

    - A recorded pull whose files are all there with their recorded sizes answers at once (no hub, no
      hashing) unless ``verify`` (`vboot pull` without --offline) asks the client to re-check everything.
    - ``offline``: the record, else the client's local cache lookup (``local_files_only``); never the network.
    - Online: list, check the disk budget (refuse before downloading), download, record.

    ``located`` and ``measured`` are what `vboot serve`'s pre-flight already found (where the model is in the
    cache: :func:`~bootstrap.core.paths.locate_model`; the free space where it goes: ``(path measured, bytes)``);
    given, the pull looks neither up again. Otherwise it finds both itself (``free_space``).

    ``progress(done_bytes, total_bytes)`` is called from download threads (the CLI's bar:
    ``bootstrap.cli.pull.PullProgress``); core draws nothing itself. Raises NetworkError,
    ModelNotFoundError, NotEnoughSpaceError, DiskFullError, IntegrityError (all one-line with a hint).
    """
    start = time.monotonic()
    validate_model_id(model_id)
    check_revision(revision)  # before any path is built from it (snapshots/REVISION)
    cache_dir = Path(cache_dir).expanduser()
    debug = env.flag("VBOOT_DEBUG")
    record = load_record(env, model_id, revision, cache_dir)
    if record is not None and record_intact(record) and (offline or not verify):
        return _result_from_record(record, start)

    client = hub or _default_hub()
    where = located if _same_model(located, cache_dir, model_id, revision) else locate_model(cache_dir, model_id,
                                                                                             revision)
    local_dir = where.local_dir  # one answer for the plan and both client calls
    if offline:
        path = client.cached_snapshot(model_id, revision, cache_dir, local_dir=local_dir, debug=debug)
        return _offline_result(model_id, revision, path, cache_dir, start)

    endpoint = env.get("MODELSCOPE_ENDPOINT") or None
    files = client.list_files(model_id, revision, endpoint, debug=debug)
    if not files:
        raise ModelNotFoundError(f"{model_id}@{revision} lists no files", hint="check the model id and --revision",
                                 model=model_id, revision=revision)
    snapshot = where.snapshot_dir
    fs_path, free = measured if measured is not None else free_space(cache_dir)
    plan = plan_pull(model_id, revision, snapshot, files, present=present_files(snapshot, files),
                     partials=find_partials(where, files), free_bytes=free,
                     filesystem_path=fs_path, margin_bytes=margin_for(sum(f.size for f in files), env, margin_bytes))
    if on_plan is not None:
        on_plan(plan)
    if not plan.enough_space:
        hints = (caches or largest_caches)(env)
        raise not_enough_space(plan, hints)

    before = _partial_sizes(snapshot)
    meter = _Meter(plan, progress)
    try:
        path = client.download(model_id, revision, cache_dir, endpoint, files, on_bytes=meter, max_workers=max_workers,
                               local_dir=local_dir, debug=debug)
    except DiskFullError as exc:
        freed = remove_new_partials(before, snapshot)
        exc.context["removed_partial_bytes"] = freed
        if freed:
            exc.message += f"; removed {_gb(freed)} of partial files from this attempt"
        raise
    sizes = {f.path: f.size for f in files}
    rec = PullRecord(model=model_id, revision=revision, cache_dir=str(cache_dir), path=str(path),
                     bytes=sum(sizes.values()), files=sizes, sha256={f.path: f.sha256 for f in files},
                     verified_at=time.time(), endpoint=endpoint or "")
    if not record_intact(rec):
        # The client said done but a file is missing or has another size: never record that as complete.
        from bootstrap.core.errors import IntegrityError

        bad = sorted(p for p, s in sizes.items() if not (path / p).is_file() or (path / p).stat().st_size != s)
        raise IntegrityError(f"{model_id}@{revision}: {', '.join(bad[:5])} missing or of the wrong size after download",
                             hint="re-run `vboot pull`", model=model_id, revision=revision, files=bad)
    save_record(env, rec)
    return PullResult(model=model_id, revision=revision, path=path, bytes=rec.bytes, files=len(sizes),
                      downloaded_bytes=meter.downloaded, verified_at=rec.verified_at, source="hub",
                      cache_dir=str(cache_dir), elapsed_s=time.monotonic() - start)


def _same_model(located: ModelInCache | None, cache_dir: Path, model_id: str,
                revision: str) -> TypeGuard[ModelInCache]:
    """``located`` answers for this pull (a caller's lookup of another model or cache is not used)."""
    return located is not None and (located.cache_dir, located.model_id, located.revision) == (
        cache_dir, model_id, revision)


def _offline_result(model_id: str, revision: str, path: Path, cache_dir: Path, start: float) -> PullResult:
    """A snapshot found offline without a record: sizes from disk; refused when partial files remain."""
    total = 0
    count = 0
    partial: list[str] = []
    for full, st in files_under(path):
        if partial_target(os.path.basename(full), st.st_size) is not None:
            partial.append(os.path.relpath(full, path))
            continue
        total += st.st_size
        count += 1
    if partial or count == 0:
        raise ModelNotFoundError(
            f"{model_id}@{revision} in {path} is incomplete ({', '.join(sorted(partial)[:3]) or 'no files'})",
            hint=f"run `vboot pull {model_id}` while online to finish it", model=model_id, revision=revision,
            path=str(path))
    return PullResult(model=model_id, revision=revision, path=path, bytes=total, files=count, downloaded_bytes=0,
                      verified_at=None, source="cache", cache_dir=str(cache_dir),
                      elapsed_s=time.monotonic() - start)
