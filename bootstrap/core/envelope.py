"""The versioned JSON envelope every ``--json`` command prints (pinned by tests/test_contract.py).

``{"version": 1, "command": str, "status": "ok"|"warn"|"fail"|"error", "exit_code": int,
   "data": {...}, "errors": [{"code", "message", "hint"}]}``

Field names may be added; existing ones never change meaning.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

ENVELOPE_VERSION = 1
STATUSES = ("ok", "warn", "fail", "error")


@dataclass(frozen=True)
class CommandResult:
    """What a command hands to the output layer: data plus the verdict. Commands never print."""

    command: str
    data: Any
    status: str = "ok"
    exit_code: int = 0
    errors: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {self.status!r}")


def to_jsonable(value: Any) -> Any:
    """Dataclasses, enums, paths, tuples and mappings to plain JSON types (NaN/inf become null)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return [to_jsonable(v) for v in sorted(value, key=str)]
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return value


def envelope(result: CommandResult) -> dict[str, Any]:
    """The one JSON document a ``--json`` command prints."""
    return {
        "version": ENVELOPE_VERSION,
        "command": result.command,
        "status": result.status,
        "exit_code": result.exit_code,
        "data": to_jsonable(result.data) if result.data is not None else {},
        "errors": [to_jsonable(e) for e in result.errors],
    }


def error_envelope(command: str, error: Mapping[str, Any], exit_code: int) -> dict[str, Any]:
    return envelope(CommandResult(command=command, data={}, status="error", exit_code=exit_code, errors=(error,)))
