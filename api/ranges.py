"""HTTP Range (RFC 9110 §14) for one byte range; multi-range requests get the whole body."""

from __future__ import annotations

import re

from integrity.errors import LiuhenError

_RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$", re.ASCII)
_BEYOND = 10**19
"""What a position of 19 digits or more counts as: beyond any object (and ``int()`` refuses
4,300 digits and more)."""


class RangeNotSatisfiable(LiuhenError):
    """The requested range lies outside the representation (HTTP 416)."""

    code = "range_not_satisfiable"

    def __init__(self, header: str | None = None, size: int = 0) -> None:
        super().__init__(f"range {header!r} is outside the {size} bytes")
        self.size = size


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) inclusive, or None for the whole representation."""
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if not m:
        return None  # unsupported forms (several ranges, other units) are ignored, per RFC
    first_s, last_s = m.groups()
    if not first_s and not last_s:
        return None
    if not first_s:  # suffix: the last N bytes
        n = _position(last_s)
        if n == 0 or size == 0:  # nothing to give (RFC 9110 §14.1.2)
            raise RangeNotSatisfiable(header, size)
        return max(0, size - n), size - 1
    first = _position(first_s)
    last = min(_position(last_s), size - 1) if last_s else size - 1
    if first >= size or (last_s and _position(last_s) < first):
        raise RangeNotSatisfiable(header, size)
    return first, last


def _position(digits: str) -> int:
    return int(digits) if len(digits) < 19 else _BEYOND
