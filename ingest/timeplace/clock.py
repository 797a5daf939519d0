"""Time helpers shared by every reader: zone offsets, plausible dates, container times."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

STAGE_TIME: Final = "capture_time"
STAGE_PLACE: Final = "place"

DEFAULT_LOCAL_OFFSET: Final = timedelta(hours=8)
"""Zone assumed for local times with no zone and no hint: Asia/Shanghai (no DST since 1991)."""

MAX_UTC_OFFSET: Final = timedelta(hours=14)
"""Widest real zone offsets are -12:00 and +14:00; anything beyond is a wrong clock."""

_EARLIEST: Final = datetime(1990, 1, 1, tzinfo=UTC)
_LATEST: Final = datetime(2100, 1, 1, tzinfo=UTC)


def require_aware(value: datetime | None, name: str) -> None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


def plausible(value: datetime) -> bool:
    """Zero dates (1904/1970 epochs, 0000:00:00) and far-future dates are absent, not facts."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return _EARLIEST <= aware < _LATEST


def microseconds(fraction: str) -> int:
    return int((fraction + "000000")[:6]) if fraction else 0


def offset_from_text(text: str) -> timedelta | None:
    """'+03:00', '-0500', 'Z' → timedelta; None when malformed or beyond ±14 h."""
    text = text.strip().rstrip("\x00").strip()
    if text in ("Z", "z"):
        return timedelta(0)
    match = re.fullmatch(r"([+-])(\d{2}):?(\d{2})", text)
    if match is None:
        return None
    hours, minutes = int(match[2]), int(match[3])
    if minutes >= 60:
        return None
    offset = timedelta(hours=hours, minutes=minutes) * (-1 if match[1] == "-" else 1)
    return offset if abs(offset) <= MAX_UTC_OFFSET else None


def format_offset(offset: timedelta) -> str:
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


_CONTAINER_TIME_RE: Final = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?\s*(Z|[+-]\d{2}:?\d{2})?$"
)


def parse_container_time(s: str) -> datetime | None:
    """Parse a container ``creation_time`` tag as UTC (ffprobe prints ``...Z``).

    A time without a zone is UTC, as QuickTime/MP4 store it. The QuickTime (1904) and Unix
    (1970) epoch zero values that cameras without a set clock write are treated as absent.
    """
    match = _CONTAINER_TIME_RE.match(s.strip())
    if match is None:
        return None
    zone = offset_from_text(match[8]) if match[8] else timedelta(0)
    if zone is None:
        return None
    year, month, day, hour, minute, second = (int(match[i]) for i in range(1, 7))
    try:
        value = datetime(
            year, month, day, hour, minute, second, microseconds(match[7] or ""), timezone(zone)
        ).astimezone(UTC)
    except (ValueError, OverflowError):  # year 1 at +05:00 is before the calendar in UTC
        return None
    return value if plausible(value) else None
