"""What body-camera and phone file names say: device, 警号 (officer number), start time."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from ingest.timeplace.clock import plausible


@dataclass(frozen=True)
class FileNameInfo:
    """What a capture file's name says. The name is only ever parsed, never used as a path."""

    device_id: str | None
    officer_id: str | None
    """警号, six digits."""
    started_at: datetime | None
    """Recording start: naive local time, or aware when the pattern is defined in UTC (PXL_)."""
    raw: str
    pattern: str = ""
    """Name of the matched pattern, see `parse_capture_filename`."""


_STAMP: Final = r"(?P<ymd>\d{8})_?(?P<hms>\d{6})"
_FILENAME_PATTERNS: Final[Sequence[tuple[str, re.Pattern[str]]]] = (
    (
        "gat947",
        re.compile(
            r"^(?:DSJ[_-])?(?P<device>[A-Za-z0-9]{5,20})_(?P<officer>\d{6})_"
            + _STAMP
            + r"(?:_\w+)?$"
        ),
    ),
    ("stamp_officer", re.compile(r"^" + _STAMP + r"_(?P<officer>\d{6})(?:_\w+)?$")),
    (
        "dsj_device",
        re.compile(r"^DSJ[_-](?P<device>[A-Za-z0-9]{5,20})_" + _STAMP + r"(?:_\w+)?$"),
    ),
    ("pixel_utc", re.compile(r"^PXL_(?P<ymd>\d{8})_(?P<hms>\d{6})(?P<ms>\d{3})(?:\.\w+)*$")),
    ("android", re.compile(r"^(?:VID|IMG)_" + _STAMP + r"(?:_\w+)?$")),
    ("samsung", re.compile(r"^" + _STAMP + r"(?:\(\d+\)|_\d+)?$")),
    (
        "dashed",
        re.compile(r"^(?P<ymd>\d{4}-\d{2}-\d{2}) (?P<hms>\d{2}\.\d{2}\.\d{2})(?:[-_ ]\d+)?$"),
    ),
)


def _stamp(ymd: str, hms: str, millis: str | None) -> datetime | None:
    digits_date, digits_time = ymd.replace("-", ""), hms.replace(".", "")
    try:
        value = datetime(  # noqa: DTZ001 - names carry the device's local time
            int(digits_date[:4]),
            int(digits_date[4:6]),
            int(digits_date[6:8]),
            int(digits_time[:2]),
            int(digits_time[2:4]),
            int(digits_time[4:6]),
            int(millis or 0) * 1000,
        )
    except ValueError:
        return None
    return value if plausible(value) else None


def parse_capture_filename(name: str) -> FileNameInfo | None:
    """Parse a body-camera or phone file name. Returns None for anything unrecognised.

    ====================  =============================================  ====================
    pattern               example                                        gives
    ====================  =============================================  ====================
    gat947                ``A123456_123456_20260301080000_0001.MP4``     device, 警号, local
                          ``DSJ_A1234567_123456_20260301_080000.MP4``
    stamp_officer         ``20260301080000_123456_0001.MP4``             警号, local
    dsj_device            ``DSJ_A1234567_20260301_080000.MP4``           device, local
    pixel_utc             ``PXL_20260301_080000123.mp4``                 UTC (Pixel names)
    android               ``VID_20260301_080000.mp4``, ``IMG_..._1.jpg``  local
    samsung               ``20260301_080000.mp4``                        local
    dashed                ``2026-03-01 08.00.00.jpg``                    local
    ====================  =============================================  ====================

    Device IDs are 5-20 letters/digits; 警号 are six digits; dates must be real and in
    1990-2099. Names with path separators, ``..`` or control characters are refused.
    """
    if not name or len(name) > 255 or re.search(r"[/\\\x00-\x1f]|\.\.", name):
        return None
    stem = name.rsplit(".", 1)[0] if re.search(r"\.[A-Za-z0-9]{1,5}$", name) else name
    for pattern_name, pattern in _FILENAME_PATTERNS:
        match = pattern.match(stem)
        if match is None:
            continue
        groups = match.groupdict()
        started = _stamp(groups["ymd"], groups["hms"], groups.get("ms"))
        if started is None:
            return None
        if pattern_name == "pixel_utc":
            started = started.replace(tzinfo=UTC)
        return FileNameInfo(
            device_id=groups.get("device"),
            officer_id=groups.get("officer"),
            started_at=started,
            raw=name,
            pattern=pattern_name,
        )
    return None
