"""Sizes, durations and CUDA versions between people and numbers: parsing what people write ("3.1 GB", "7d") and
the one way vboot writes a byte count or a CUDA version for people (:func:`format_bytes`, :func:`cuda_str`).
Raw numbers everywhere else: data carries bytes, the human view and the messages format them here.

Imported by the disk fast path's output (bootstrap.cli.output): it stays light (``fractions`` is imported only
when a size is parsed).
"""

from __future__ import annotations

import math
import re

_SIZE = re.compile(r"^\s*(\d+)(\.\d+)?\s*([kmgtp]?i?b?)?\s*$", re.I | re.ASCII)
_FACTORS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024, "ki": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2, "mi": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "gi": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4, "ti": 1024**4,
    "p": 1000**5, "pb": 1000**5, "pib": 1024**5, "pi": 1024**5,
}


#: The largest size vboot accepts anywhere (1 PiB). Larger values are typos or hostile input ("1e30", "9" * 400),
#: and no model, disk or margin is that large; refusing them keeps every later sum and comparison meaningful.
MAX_SIZE_BYTES = 1024**5


def parse_size(value: object) -> int:
    """``"3.1 GB" -> 3100000000``, ``"16GiB" -> 17179869184``, ``1024 -> 1024``, in exact arithmetic.

    Raises ValueError (never another exception, whatever ``value`` is: a list, a bool, ``inf``, ``nan``, a
    negative number, a string of 400 digits) with a message that says what to write instead. Sizes above
    :data:`MAX_SIZE_BYTES` are refused."""
    shown = _shown(value)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"not a size: {shown} (write e.g. 3.1GB, 16GiB or a number of bytes)")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"not a size: {shown} (a size is a finite number of bytes, e.g. 3.1GB)")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"a size cannot be negative: {shown}")
        n_bytes = int(value) if value <= MAX_SIZE_BYTES else MAX_SIZE_BYTES + 1
    else:
        m = _SIZE.match(value)
        unit = (m.group(3) or "").lower() if m else ""
        if not m or unit not in _FACTORS:
            raise ValueError(f"not a size: {shown} (write e.g. 3.1GB, 16GiB or a number of bytes)")
        whole, fraction = m.group(1).lstrip("0"), m.group(2) or ""
        if len(whole) > 20:  # beyond any factor's reach of 1 PiB; and int() of thousands of digits is refused
            n_bytes = MAX_SIZE_BYTES + 1
        else:  # exact: no float rounding, no overflow to inf
            from fractions import Fraction

            n_bytes = int(Fraction((whole or "0") + fraction[:40]) * _FACTORS[unit])
    if n_bytes > MAX_SIZE_BYTES:
        raise ValueError(f"{shown} is larger than 1 PiB, more than any model, disk or margin (write e.g. 3.1GB)")
    return n_bytes


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$", re.I)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: str) -> float:
    """``"7d" -> 604800.0``, ``"90m" -> 5400.0``, ``"30" -> 30.0`` seconds. Raises ValueError."""
    m = _DURATION.match(value)
    if not m:
        raise ValueError(f"not a duration: {value!r} (write e.g. 30s, 90m, 12h, 7d, 2w)")
    return float(m.group(1)) * _SECONDS[(m.group(2) or "s").lower()]


_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_DECIMAL = ("B", "kB", "MB", "GB", "TB", "PB")


def format_bytes(n: int | float | None, *, binary: bool = True, unit: str | None = None, missing: str = "-") -> str:
    """A byte count for people, one decimal: ``12884901888 -> '12.0 GiB'``, ``binary=False``: ``'12.9 GB'``;
    whole bytes below the first step (``'512 B'``). ``unit`` fixes the unit (``unit="GiB"``: ``'0.5 GiB'``);
    ``None`` is written as ``missing``. The one formatter: the human views and core's messages both use it."""
    if n is None:
        return missing
    step = 1024.0 if binary else 1000.0
    units = _BINARY if binary else _DECIMAL
    value = float(n)
    if unit is not None:
        return f"{value / step ** units.index(unit):.1f} {unit}"
    for name in units:
        if abs(value) < step or name == units[-1]:
            return f"{value:.0f} {name}" if name == "B" else f"{value:.1f} {name}"
        value /= step
    return f"{value:.1f} {units[-1]}"  # pragma: no cover - the loop returns at the last unit


def cuda_str(value: int | None) -> str:
    """A CUDA version in NVML's encoding for people: 13000 -> "13.0", 12080 -> "12.8"; "unknown" for None/0."""
    return f"{value // 1000}.{(value % 1000) // 10}" if value else "unknown"
