"""Quote user text in messages: shortened, with control characters escaped.

Whatever a user typed or wrote in a file may be huge or hold terminal escapes; messages quote
it through these helpers so an error stays one readable paragraph.
"""

from __future__ import annotations

from typing import Any

#: Longest quoted value, in characters, before it is shortened with an ellipsis.
MAX_QUOTED = 200


def shorten(text: str, limit: int = MAX_QUOTED) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with ``...`` and the length left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def quote(value: Any, limit: int = MAX_QUOTED) -> str:
    """``repr(value)``, shortened; large containers are cut before they are formatted."""
    if isinstance(value, (list, tuple, dict)) and len(value) > limit:
        value = _head(value, limit)
    try:
        text = repr(value)
    except RecursionError:
        text = f"<{type(value).__name__} nested too deeply to show>"
    return shorten(printable(text), limit)


def printable(text: str) -> str:
    """``text`` with control, format and unpaired surrogate characters escaped (newlines kept)."""
    if text.isprintable():
        return text
    return "".join(ch if ch == "\n" or ch.isprintable() or ch == " " else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    if ch in "\t\r":
        return {"\t": "\\t", "\r": "\\r"}[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _head(value: list[Any] | tuple[Any, ...] | dict[Any, Any], count: int) -> Any:
    if isinstance(value, dict):
        return dict(list(value.items())[:count])
    return type(value)(value[:count])
