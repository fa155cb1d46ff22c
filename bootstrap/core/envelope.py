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
from typing import Any, Generic, TypeVar

ENVELOPE_VERSION = 1
STATUSES = ("ok", "warn", "fail", "error")

PayloadT = TypeVar("PayloadT")


@dataclass(frozen=True)
class CommandResult(Generic[PayloadT]):
    """What a command hands to the output layer: its payload (a frozen report dataclass from core, which becomes
    the envelope's ``data`` through :func:`to_jsonable`, and which the human renderer takes as is) plus the
    verdict. Commands never print; after pipx's ``OperationResult[_PayloadT]``."""

    command: str
    data: PayloadT
    status: str = "ok"
    exit_code: int = 0
    errors: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {self.status!r}")


# A report field's metadata: the key is left out of the JSON while the field is None (a key only some runs of a
# command have, such as `disk clean`'s measurements after it deleted something). See :func:`key_when_set`.
OMIT_WHEN_NONE = "vboot.omit_when_none"


# A report field's metadata: never in the JSON (words for people that the JSON says otherwise). See :func:`for_people`.
NOT_IN_JSON = "vboot.not_in_json"


def key_when_set() -> Any:
    """A report field (default None) whose key the JSON carries only once it is set."""
    return field(default=None, metadata={OMIT_WHEN_NONE: True})


def for_people(default: Any) -> Any:
    """A report field for the human view only: the JSON leaves it out."""
    return field(default=default, metadata={NOT_IN_JSON: True})


def to_jsonable(value: Any) -> Any:
    """The one serializer of the envelope's ``data``: dataclasses (their fields in order, without the
    :func:`key_when_set` ones that are None and the :func:`for_people` ones), enums, paths, tuples and mappings to
    plain JSON types (NaN/inf become null)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(v) for f in dataclasses.fields(value) if not f.metadata.get(NOT_IN_JSON)
                and ((v := getattr(value, f.name)) is not None or not f.metadata.get(OMIT_WHEN_NONE))}
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


def envelope(result: CommandResult[Any]) -> dict[str, Any]:
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
    """The document of a command that ended in ``error`` instead of a result: empty data."""
    empty: dict[str, Any] = {}
    return envelope(CommandResult(command=command, data=empty, status="error", exit_code=exit_code, errors=(error,)))


def from_jsonable(cls: Any, value: Any) -> Any:
    """The inverse of :func:`to_jsonable` for a value of type ``cls``: dataclasses (by their annotations), ``X |
    None``, tuples, lists, dicts and plain values. For messages vboot sends itself (the detached supervisor's
    status lines), so it trusts the shape and raises ``TypeError``/``ValueError`` on anything else."""
    import types
    import typing

    if value is None:
        return None
    origin = typing.get_origin(cls)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(cls) if a is not type(None)]
        return from_jsonable(options[0], value) if len(options) == 1 else value
    if origin is tuple:
        args = typing.get_args(cls)
        item = args[0] if args else Any
        return tuple(from_jsonable(item, v) for v in value)
    if origin is list:
        (item,) = typing.get_args(cls) or (Any,)
        return [from_jsonable(item, v) for v in value]
    if origin in (dict, Mapping) or cls in (dict, Mapping):
        return dict(value)
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls)
        kwargs = {f.name: from_jsonable(hints[f.name], value[f.name]) for f in dataclasses.fields(cls)
                  if f.name in value}
        return cls(**kwargs)
    if isinstance(cls, type) and issubclass(cls, enum.Enum):
        return cls(value)
    if isinstance(cls, type) and issubclass(cls, PurePath):
        return cls(value)
    return value
