"""HTTP Range (RFC 9110 §14) for one byte range; multi-range requests get the whole body."""

from __future__ import annotations

import re

from integrity.errors import LiuhenError

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


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
        n = int(last_s)
        if n == 0 or size == 0:  # nothing to give (RFC 9110 §14.1.2)
            raise RangeNotSatisfiable(header, size)
        return max(0, size - n), size - 1
    first = int(first_s)
    last = min(int(last_s), size - 1) if last_s else size - 1
    if first >= size or (last_s and int(last_s) < first):
        raise RangeNotSatisfiable(header, size)
    return first, last
