"""HTTP Range (RFC 9110 §14) for one byte range; multi-range requests get the whole body."""

from __future__ import annotations

import re

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(Exception):
    pass


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
            raise RangeNotSatisfiable
        return max(0, size - n), size - 1
    first = int(first_s)
    last = min(int(last_s), size - 1) if last_s else size - 1
    if first >= size or (last_s and int(last_s) < first):
        raise RangeNotSatisfiable
    return first, last
