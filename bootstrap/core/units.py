"""Parsing sizes and durations written by people ("3.1 GB", "7d"). Raw numbers everywhere else."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?i?b?)?\s*$", re.I)
_FACTORS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024, "ki": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2, "mi": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "gi": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4, "ti": 1024**4,
    "p": 1000**5, "pb": 1000**5, "pib": 1024**5, "pi": 1024**5,
}


def parse_size(value: int | float | str) -> int:
    """``"3.1 GB" -> 3100000000``, ``"16GiB" -> 17179869184``, ``1024 -> 1024``. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"a size cannot be negative: {value!r}")
        return int(value)
    m = _SIZE.match(value)
    if not m or (m.group(2) or "").lower() not in _FACTORS:
        raise ValueError(f"not a size: {value!r} (write e.g. 3.1GB, 16GiB or a number of bytes)")
    return int(float(m.group(1)) * _FACTORS[(m.group(2) or "").lower()])


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$", re.I)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: str) -> float:
    """``"7d" -> 604800.0``, ``"90m" -> 5400.0``, ``"30" -> 30.0`` seconds. Raises ValueError."""
    m = _DURATION.match(value)
    if not m:
        raise ValueError(f"not a duration: {value!r} (write e.g. 30s, 90m, 12h, 7d, 2w)")
    return float(m.group(1)) * _SECONDS[(m.group(2) or "s").lower()]
