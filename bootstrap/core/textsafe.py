"""Untrusted text made safe to put on one line: in an error message, a log line or a generated comment."""

from __future__ import annotations


def one_line(text: str) -> str:
    """``text`` with every character that is not printable written as its escape: line breaks of every kind
    (``\\n``, ``\\r``, ``\\v``, ``\\f``, NEL U+0085, U+2028, U+2029 are all ``str.splitlines`` breaks), NUL, ESC and
    other control or format characters (``\\x1b``, ``\\u200e``). Printable text, non-ASCII included, is kept as is,
    so a hostile value quoted in a message or a comment can neither end its line nor reach a terminal raw."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
