"""What a model id and a revision may be, checked before any path, URL or vLLM argument is built from them.

Both end up in paths: the ModelScope client (modelscope-hub 0.5) downloads into
``CACHE/models/OWNER--NAME/snapshots/REVISION`` (``_download.py``: ``root / "snapshots" / revision``) and reuses
``CACHE/models/OWNER/NAME___x`` when present, with no check of its own on the main download path, so a revision
``../../..`` or an owner ``..`` would put files outside the cache. vLLM gets them as arguments, where a leading
``-`` would be read as an option. The rules:

- **ModelScope ids** are ``OWNER/NAME``. The client checks only that shape (``modelscope_hub/api.py::_parse_repo_id``:
  two non-empty halves); the hub's own forms take letters, digits, ``-``, ``_`` and ``.``. vboot takes exactly those
  (ASCII), at most 128 characters per half, each half starting with a letter, digit or ``_`` (so never ``.``,
  ``..`` or ``-``).
- **Hugging Face ids** follow ``huggingface_hub.utils.validate_repo_id``: ``[NAMESPACE/]NAME`` of letters, digits,
  ``-``, ``_`` and ``.``, at most 96 characters for the name, starting and ending with a letter or digit (its
  ``\\b`` anchors), no ``--`` or ``..``, not ending in ``.git``.
- **Revisions** are git branch or tag names or commit hashes on both hubs, so they follow
  ``git check-ref-format --branch``: no ``..``, no control characters, space, ``~ ^ : ? * [ \\``, no ``@{``, not
  ``@``, no component starting with ``.`` or ending with ``.lock``, no empty component (``//``, a leading or
  trailing ``/``), not ending with ``.``, not starting with ``-``. A ``/`` inside (``release/v1``) is a legal branch
  name; it nests a directory below ``snapshots/``, still inside the cache. modelscope-hub's resumable download
  refuses the same escapes (``_resilient_download.py``: an absolute revision or a ``..`` part).
"""

from __future__ import annotations

import re

from bootstrap.core.errors import UsageError

_MS_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", re.ASCII)
_HF_ID = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?/)?[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?",
                    re.ASCII)
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
MAX_REVISION_CHARS = 255

MODELSCOPE_EXAMPLE = "Qwen/Qwen2.5-1.5B-Instruct"


def model_id_problem(model_id: str, source: str = "modelscope") -> str | None:
    """Why ``model_id`` is not a model id of ``source`` ("modelscope" or "huggingface"), or None when it is one.
    Other sources (``local``) name no hub repo: their id is a label and is not checked here."""
    if source == "modelscope":
        parts = model_id.split("/")
        if len(parts) != 2 or not all(parts):
            return f"{_shown(model_id)} is not a ModelScope model id (OWNER/NAME, e.g. {MODELSCOPE_EXAMPLE})"
        for what, part in zip(("owner", "name"), parts, strict=True):
            if not _MS_PART.fullmatch(part):
                return (f"{_shown(model_id)} is not a ModelScope model id: the {what} {_shown(part)} may hold only "
                        "letters, digits, '-', '_' and '.' (at most 128, not starting with '.' or '-')")
        return None
    if source == "huggingface":
        if not _HF_ID.fullmatch(model_id) or "--" in model_id or ".." in model_id or model_id.endswith(".git"):
            return (f"{_shown(model_id)} is not a Hugging Face model id ([NAMESPACE/]NAME of letters, digits, '-', "
                    "'_' and '.', starting and ending with a letter or digit, no '--' or '..', e.g. Qwen/Qwen2.5-7B)")
        return None
    return None


def revision_problem(revision: str) -> str | None:
    """Why ``revision`` is not a branch, tag or commit name a hub can have (git's rules), or None."""
    shown = _shown(revision)
    if not revision:
        return "the revision is empty (write a branch, tag or commit, e.g. master)"
    if len(revision) > MAX_REVISION_CHARS:
        return f"the revision {shown} is longer than {MAX_REVISION_CHARS} characters"
    bad = _REF_FORBIDDEN.search(revision)
    if bad:
        return (f"the revision {shown} contains {bad.group()!r}, which no git branch, tag or commit name holds "
                "(no spaces, control characters or ~ ^ : ? * [ \\)")
    if revision.startswith("-"):
        return f"the revision {shown} starts with '-' (it would be read as an option)"
    if ".." in revision or "@{" in revision or revision == "@" or revision.endswith("."):
        return f"the revision {shown} is not a git branch, tag or commit name (no '..', '@{{', trailing '.')"
    for part in revision.split("/"):
        if not part or part.startswith(".") or part.endswith(".lock"):
            return (f"the revision {shown} is not a git branch, tag or commit name (no empty part, no part "
                    "starting with '.' or ending with '.lock')")
    return None


def check_model_id(model_id: str, source: str = "modelscope") -> None:
    """Raise :class:`UsageError` when :func:`model_id_problem` finds one."""
    problem = model_id_problem(model_id, source)
    if problem:
        raise UsageError(problem, hint=f"write OWNER/NAME, e.g. {MODELSCOPE_EXAMPLE}, or a profile name")


def check_revision(revision: str) -> None:
    """Raise :class:`UsageError` when :func:`revision_problem` finds one."""
    problem = revision_problem(revision)
    if problem:
        raise UsageError(problem, hint="pass a branch, tag or commit of the repo, e.g. --revision master")


def _shown(text: str) -> str:
    """``text`` quoted for a one-line message: escapes show control characters and line breaks."""
    shown = repr(text)
    return shown if len(shown) <= 80 else shown[:77] + "..."
