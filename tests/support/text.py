"""Text the tests write: TOML strings for profiles holding any character."""

from __future__ import annotations


def toml_str(value: str) -> str:
    """``value`` as a TOML basic string (escapes for everything not printable, and for " and \\)."""
    def esc(ch: str) -> str:
        if ch.isprintable() and ch not in '"\\':
            return ch
        return f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}"

    return '"' + "".join(esc(ch) for ch in value) + '"'
