"""The only module that imports the ModelScope client (``modelscope_hub``, the library ``modelscope`` >= 1.38
delegates every download to).

Imports happen inside functions. We call ``modelscope_hub.api.HubApi`` (what ``modelscope.hub.snapshot_download``
ends in) rather than the ``modelscope`` shim: importing the shim loads the whole ``modelscope`` package (~0.4 s more
per process here, and torch when torch is installed). The one thing the shim adds, reusing pre-1.38 cache layouts, is
done by ``bootstrap.core.paths.locate_model`` (its ``local_dir``).

A pull lists the repo once (:func:`list_files`) and hands that listing to :func:`download` (``file_list``): the
client then skips its own listing, so the disk budget and the bytes fetched come from the same answer of the hub.

Every client exception leaves this module as a :class:`~bootstrap.core.errors.VbootError` with one line and a
hint (:func:`translate`); callers never see a ``modelscope_hub`` type.
"""

from __future__ import annotations

import errno
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bootstrap.core.errors import (
    CacheUnwritableError,
    DiskFullError,
    IntegrityError,
    MissingDependencyError,
    ModelNotFoundError,
    NetworkError,
    VbootError,
)
from bootstrap.core.hub import ByteSink, RemoteFile

DEFAULT_ENDPOINT = "https://www.modelscope.cn"


def _quiet_client(debug: bool) -> None:
    """The client logs every file at INFO on stderr; vboot shows its own progress instead."""
    level = logging.DEBUG if debug else logging.ERROR
    for name in ("modelscope_hub", "modelscope"):
        logging.getLogger(name).setLevel(level)


def list_files(model_id: str, revision: str, endpoint: str | None, *, debug: bool = False) -> tuple[RemoteFile, ...]:
    """The repo's files at ``revision`` with sizes and sha256, through the client's own listing call.

    Same request as `curl "$MODELSCOPE_ENDPOINT/api/v1/models/OWNER/NAME/repo/files?Revision=R&Recursive=True"`.
    """
    try:
        from modelscope_hub.api import HubApi

        _quiet_client(debug)
        entries = HubApi(endpoint=endpoint).list_repo_files(model_id, "model", revision=revision, recursive=True)
    except Exception as exc:  # every client failure is translated below
        raise translate(exc, model_id, revision, endpoint) from exc
    return tuple(
        RemoteFile(path=e.path, size=int(e.size or 0), sha256=e.sha256 or "")
        for e in entries
        if e.type != "tree" and e.path
    )


def download(model_id: str, revision: str, cache_dir: Path, endpoint: str | None, files: Sequence[RemoteFile], *,
             on_bytes: ByteSink | None = None, max_workers: int = 4, local_dir: Path | None = None,
             debug: bool = False) -> Path:
    """Download ``files`` (the listing :func:`list_files` returned) into ``cache_dir``; returns the snapshot
    directory the client returns.

    ``HubApi.download_repo(file_list=...)`` skips the client's own listing request, so a branch that moves
    between the plan and the download cannot swap the files: each one is checked against the planned sha256 and
    size. The client re-hashes files already in the cache and resumes ``*.incomplete`` files with ``Range``.
    """
    try:
        from modelscope_hub.api import HubApi

        _quiet_client(debug)
        callbacks = [_callback_class(on_bytes)] if on_bytes is not None else None
        listing = [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in files]
        path = HubApi(endpoint=endpoint).download_repo(
            model_id, "model", revision=revision, cache_dir=cache_dir, local_dir=local_dir, max_workers=max_workers,
            progress_callbacks=callbacks, file_list=listing)
    except Exception as exc:
        raise translate(exc, model_id, revision, endpoint) from exc
    return Path(path)


def cached_snapshot(model_id: str, revision: str, cache_dir: Path, *, local_dir: Path | None = None,
                    debug: bool = False) -> Path:
    """The snapshot directory already in the cache (``local_files_only``: no network, no hashing); ``local_dir``
    is the legacy directory a pull would reuse (``bootstrap.core.paths.locate_model``'s ``local_dir``)."""
    try:
        from modelscope_hub.compat.snapshot_download import snapshot_download

        _quiet_client(debug)
        return Path(snapshot_download(model_id, revision=revision, cache_dir=str(cache_dir),
                                      local_dir=str(local_dir) if local_dir else None, local_files_only=True))
    except Exception as exc:
        raise translate(exc, model_id, revision, None, cache_dir=cache_dir) from exc


def _callback_class(sink: ByteSink) -> type:
    """A ProgressCallback class for the client (it instantiates one per file with (file_path, file_size))."""

    class _Sink:
        def __init__(self, filename: str, file_size: int) -> None:
            self.filename = filename
            self.file_size = file_size

        def update(self, size: int) -> None:
            sink(self.filename, size)

        def end(self) -> None:
            pass

    return _Sink


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and its chain of causes/contexts (the client wraps OSError and requests errors)."""
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _is_enospc(exc: BaseException) -> bool:
    return any(isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) for e in _causes(exc)) or \
        "No space left on device" in str(exc)


def _status(exc: BaseException) -> int | None:
    for e in _causes(exc):
        code = getattr(e, "status_code", None)
        if code is None:
            resp = getattr(e, "response", None)
            code = getattr(resp, "status_code", None)
        if isinstance(code, int):
            return code
    return None


def _headline(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def translate(exc: BaseException, model_id: str, revision: str, endpoint: str | None, *,
              cache_dir: Path | None = None) -> VbootError:
    """One VbootError (one line, a hint, stable code and exit code) for any client failure; ``cache_dir`` is the
    cache a local-only lookup searched (named when the model is not there)."""
    if isinstance(exc, VbootError):
        return exc
    if isinstance(exc, ImportError) and (exc.name or "").split(".")[0] in ("modelscope_hub", "modelscope"):
        # modelscope is a dependency of vboot: only an install made with --no-deps (or a broken one) lacks it.
        return MissingDependencyError(f"the ModelScope client is not installed in vboot's environment ({exc})",
                                      hint=f"reinstall vboot with its dependencies (`{sys.executable} -m pip install "
                                           "'modelscope>=1.38'`)")
    from modelscope_hub import errors as ms

    where = endpoint or DEFAULT_ENDPOINT
    ctx: dict[str, Any] = {"model": model_id, "revision": revision, "endpoint": where}
    if _is_enospc(exc):
        return DiskFullError(f"the disk filled up while downloading {model_id}@{revision}",
                             hint="free space (`vboot disk caches`) or pass --cache-dir on a larger disk, then re-run",
                             **ctx)
    if isinstance(exc, ms.FileDownloadError) and exc.failed_files:
        failed = exc.failed_files
        for path, inner in failed.items():
            if _is_enospc(inner):
                return DiskFullError(f"the disk filled up while downloading {model_id}@{revision} ({path})",
                                     hint="free space (`vboot disk caches`) or pass --cache-dir on a larger disk, "
                                          "then re-run", file=path, **ctx)
        bad = {p: e for p, e in failed.items() if isinstance(e, ms.FileIntegrityError)}
        if bad:
            names = ", ".join(sorted(bad))
            kind = "size" if all(isinstance(e, ms.FileSizeMismatchError) for e in bad.values()) else "sha256"
            return IntegrityError(
                f"{names} from {model_id}@{revision} failed its {kind} check after retries "
                f"({_headline(next(iter(bad.values())))})",
                hint="the hub served bad bytes; re-run `vboot pull` later, or report the file to the repo owner",
                files=sorted(bad), **ctx)
        first_path, first = next(iter(failed.items()))
        inner_err = translate(first, model_id, revision, endpoint)
        inner_err.message = f"{inner_err.message} ({len(failed)} file(s) failed, first: {first_path})"
        inner_err.context.setdefault("files", sorted(failed))
        return inner_err
    if isinstance(exc, ms.CacheNotFound):
        where_cached = f" {cache_dir}" if cache_dir is not None else ""
        return ModelNotFoundError(f"{model_id}@{revision} is not in the local cache{where_cached}",
                                  hint=f"run `vboot pull {model_id}` while online (or pass --cache-dir)",
                                  cache_dir=str(cache_dir) if cache_dir is not None else None, **ctx)
    status = _status(exc)
    if isinstance(exc, ms.NotExistError) or status == 404:
        return ModelNotFoundError(f"{where} has no model {model_id!r} at revision {revision!r}",
                                  hint="check the model id and --revision (ids look like Qwen/Qwen2.5-1.5B-Instruct)",
                                  **ctx)
    if isinstance(exc, (ms.AuthenticationError, ms.PermissionDeniedError)) or status in (401, 403):
        return ModelNotFoundError(f"{where} refused access to {model_id}@{revision} (HTTP {status})",
                                  hint="the repo may be private: set MODELSCOPE_API_TOKEN or run `modelscope login`",
                                  **ctx)
    if isinstance(exc, ms.NetworkError) or isinstance(exc, ConnectionError) or _is_requests_network(exc):
        return NetworkError(f"cannot reach the ModelScope hub at {where} ({_network_reason(exc)})",
                            hint="check the network or MODELSCOPE_ENDPOINT; `vboot pull --offline` uses the local "
                                 "cache only", **ctx)
    if isinstance(exc, ms.ServerError) or (status is not None and status >= 500):
        return NetworkError(f"the ModelScope hub at {where} failed (HTTP {status}): {_headline(exc)[:160]}",
                            hint="retry later; completed files are kept and partial ones resume", **ctx)
    if isinstance(exc, ms.FileIntegrityError):
        return IntegrityError(f"{model_id}@{revision}: {_headline(exc)}",
                              hint="re-run `vboot pull`; report the file to the repo owner if it keeps failing", **ctx)
    if isinstance(exc, OSError):
        return CacheUnwritableError(f"cannot write the model cache: {exc}",
                          hint="check permissions of the cache directory or pass --cache-dir", **ctx)
    return NetworkError(f"download of {model_id}@{revision} failed: {_headline(exc)[:200]}",
                        hint="re-run `vboot pull` (partial files resume); VBOOT_DEBUG=1 shows the traceback", **ctx)


_REASONS = ("Connection refused", "Connection reset", "timed out", "Name or service not known",
            "Temporary failure in name resolution", "No route to host", "Network is unreachable",
            "Remote end closed connection", "Connection aborted")


def _network_reason(exc: BaseException) -> str:
    text = " ".join(str(e) for e in _causes(exc))
    for reason in _REASONS:
        if reason.lower() in text.lower():
            return reason.lower()
    return type(exc).__name__


def _is_requests_network(exc: BaseException) -> bool:
    try:
        import requests
    except ImportError:  # pragma: no cover - requests comes with modelscope
        return False
    return any(isinstance(e, (requests.ConnectionError, requests.Timeout)) for e in _causes(exc))
