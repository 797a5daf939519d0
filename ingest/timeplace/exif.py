"""A photo's EXIF (and XMP) capture metadata: camera clock, zone, GPS position and time.

Damaged metadata becomes a Problem and whatever was readable is returned.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Final

import exifread

from ingest.errors import MetadataError
from ingest.problems import Problem, ProblemCode
from ingest.sniff import image_brand
from ingest.timeplace.clock import (
    STAGE_PLACE,
    STAGE_TIME,
    format_offset,
    microseconds,
    offset_from_text,
    plausible,
)
from ingest.timeplace.geo import Fix, make_fix

_XMP_SCAN_BYTES: Final = 1024 * 1024


@dataclass(frozen=True)
class PhotoMeta:
    """What a photo's EXIF says about its capture. Fields are None when absent or unreadable."""

    make: str | None = None
    model: str | None = None
    orientation: int | None = None
    """EXIF Orientation 1..8."""
    datetime_original: datetime | None = None
    """DateTimeOriginal as written: local time of the camera clock, naive, whole seconds."""
    offset_time_original: str | None = None
    """OffsetTimeOriginal normalised to ``±HH:MM``, e.g. ``+03:00``."""
    subsec: str | None = None
    """SubSecTimeOriginal digits, e.g. ``348`` for .348 s."""
    gps: Fix | None = None
    """Position from the GPS IFD (its ``time`` is ``gps_datetime``)."""
    gps_datetime: datetime | None = None
    """GPSDateStamp + GPSTimeStamp, UTC."""
    problems: tuple[Problem, ...] = ()

    @property
    def utc_offset(self) -> timedelta | None:
        return offset_from_text(self.offset_time_original) if self.offset_time_original else None

    @property
    def local_time(self) -> datetime | None:
        """DateTimeOriginal with its sub-seconds, still naive."""
        if self.datetime_original is None:
            return None
        digits = (self.subsec or "").strip()
        if not digits.isdigit():
            return self.datetime_original
        return self.datetime_original + timedelta(microseconds=microseconds(digits))


class _Reader:
    """Reads typed values out of an exifread tag dict, recording each failure as a Problem."""

    def __init__(self, tags: dict[str, object]) -> None:
        self.tags = tags
        self.problems: list[Problem] = []

    def note(self, stage: str, code: ProblemCode, message: str) -> None:
        self.problems.append(Problem(stage, code, message))

    def values(self, key: str) -> object:
        """The tag's ``values`` as exifread decoded them (a list, a str, bytes), or None."""
        tag = self.tags.get(key)
        return getattr(tag, "values", None)

    def text(self, key: str) -> str | None:
        raw = self.values(key)
        if isinstance(raw, bytes):
            raw = raw.decode("latin-1")
        if not isinstance(raw, str):
            return None
        cleaned = raw.replace("\x00", " ").strip()
        return cleaned or None

    def ratios(self, key: str) -> list[float] | None:
        """Rational list as floats; None when absent, flags zero denominators and junk."""
        raw = self.values(key)
        if raw is None:
            return None
        try:
            if not isinstance(raw, Iterable):
                raise TypeError(f"not a list: {raw!r}")
            numbers = [_ratio(v) for v in raw]
        except (TypeError, ValueError):
            self.note(STAGE_PLACE, ProblemCode.EXIF_BAD_VALUE, f"{key} is not a list of numbers")
            return None
        if any(n is None for n in numbers):
            self.note(STAGE_PLACE, ProblemCode.EXIF_BAD_RATIONAL, f"{key} has a zero denominator")
            return None
        return [n for n in numbers if n is not None]


def _ratio(value: object) -> float | None:
    if isinstance(value, Fraction):
        # exifread keeps n/0 as a Fraction with denominator 0 instead of raising.
        if value.denominator == 0:
            return None
        return value.numerator / value.denominator
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"not a number: {value!r}")


_EXIF_DATETIME_RE: Final = re.compile(r"^(\d{4})[:-](\d{2})[:-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")


def _exif_datetime(text: str) -> datetime | None:
    match = _EXIF_DATETIME_RE.match(text.strip())
    if match is None:
        return None
    try:
        year, month, day, hour, minute, second = (int(g) for g in match.groups())
        value = datetime(year, month, day, hour, minute, second)  # noqa: DTZ001 - local time
    except ValueError:
        return None
    return value if plausible(value) else None


def _dms(parts: list[float]) -> float | None:
    if not 1 <= len(parts) <= 3 or any(p < 0 or not math.isfinite(p) for p in parts):
        return None
    return sum(p / 60.0**i for i, p in enumerate(parts))


def _gps_fix(reader: _Reader, when: datetime | None) -> Fix | None:
    lat_parts = reader.ratios("GPS GPSLatitude")
    lon_parts = reader.ratios("GPS GPSLongitude")
    if lat_parts is None or lon_parts is None:
        return None
    lat, lon = _dms(lat_parts), _dms(lon_parts)
    if lat is None or lon is None:
        reader.note(
            STAGE_PLACE, ProblemCode.GPS_INVALID, "GPS latitude/longitude are not D/M/S values"
        )
        return None
    if lat == 0 and lon == 0:
        # Cameras without a fix fill the block with zeros; Null Island is not a place.
        reader.note(STAGE_PLACE, ProblemCode.GPS_ZERO, "GPS block holds 0,0 (no fix)")
        return None
    if (reader.text("GPS GPSLatitudeRef") or "N").upper().startswith("S"):
        lat = -lat
    if (reader.text("GPS GPSLongitudeRef") or "E").upper().startswith("W"):
        lon = -lon
    alt = _gps_altitude(reader)
    fix = make_fix(lat, lon, alt, when)
    if fix is None:
        reader.note(
            STAGE_PLACE, ProblemCode.GPS_INVALID, f"GPS position out of range: {lat}, {lon}"
        )
    return fix


def _gps_altitude(reader: _Reader) -> float | None:
    parts = reader.ratios("GPS GPSAltitude")
    if not parts:
        return None
    below = reader.values("GPS GPSAltitudeRef")
    if isinstance(below, list) and below and below[0] == 1:
        return -parts[0]
    return parts[0]


def _gps_datetime(reader: _Reader) -> datetime | None:
    day_text = reader.text("GPS GPSDate")
    clock = reader.ratios("GPS GPSTimeStamp")
    if day_text is None or clock is None or len(clock) != 3:
        return None
    day = _exif_datetime(day_text + " 00:00:00")
    hours, minutes, seconds = clock
    if day is None or not (0 <= hours < 24 and 0 <= minutes < 60 and 0 <= seconds < 61):
        reader.note(
            STAGE_TIME, ProblemCode.GPS_TIME_INVALID, f"GPS date/time unusable: {day_text} {clock}"
        )
        return None
    offset = timedelta(hours=int(hours), minutes=int(minutes), seconds=seconds)
    return day.replace(tzinfo=UTC) + offset


def _orientation(reader: _Reader) -> int | None:
    raw = reader.values("Image Orientation")
    if isinstance(raw, list) and raw and isinstance(raw[0], int) and 1 <= raw[0] <= 8:
        return raw[0]
    return None


def _meta_from_tags(tags: dict[str, object], xmp_original: datetime | None) -> PhotoMeta:
    reader = _Reader(tags)
    original_text = reader.text("EXIF DateTimeOriginal")
    original = _exif_datetime(original_text) if original_text else None
    if original_text and original is None:
        reader.note(
            STAGE_TIME,
            ProblemCode.EXIF_BAD_DATETIME,
            f"DateTimeOriginal unusable: {original_text!r}",
        )
    offset_text = reader.text("EXIF OffsetTimeOriginal")
    offset = offset_from_text(offset_text) if offset_text else None
    if offset_text and offset is None:
        reader.note(
            STAGE_TIME, ProblemCode.EXIF_BAD_OFFSET, f"OffsetTimeOriginal unusable: {offset_text!r}"
        )
    if original is None and xmp_original is not None:
        # ExifTool falls back to XMP exif:DateTimeOriginal too (e.g. a broken ExifIFD pointer).
        original = xmp_original.replace(tzinfo=None)
        xmp_zone = xmp_original.utcoffset()
        offset = xmp_zone if offset is None else offset
    gps_time = _gps_datetime(reader)
    return PhotoMeta(
        make=reader.text("Image Make"),
        model=reader.text("Image Model"),
        orientation=_orientation(reader),
        datetime_original=original,
        offset_time_original=format_offset(offset) if offset is not None else None,
        subsec=reader.text("EXIF SubSecTimeOriginal"),
        gps=_gps_fix(reader, gps_time),
        gps_datetime=gps_time,
        problems=tuple(reader.problems),
    )


_XMP_ORIGINAL_RE: Final = re.compile(
    rb"exif:DateTimeOriginal(?:=[\"']|>)\s*"
    rb"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2})?(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?)"
)


def _xmp_original(head: bytes) -> datetime | None:
    """XMP exif:DateTimeOriginal (ISO 8601), aware when the packet gives a zone."""
    match = _XMP_ORIGINAL_RE.search(head)
    if match is None:
        return None
    try:
        value = datetime.fromisoformat(match[1].decode("ascii"))
    except ValueError:
        return None
    return value if plausible(value) else None


def _heif_exif_tags(path: Path) -> dict[str, object]:
    """Fallback for HEIF files exifread cannot walk: let libheif find the EXIF block."""
    import pillow_heif  # heavy native module: only when needed

    blob = pillow_heif.open_heif(str(path)).info.get("exif") or b""
    if blob.startswith(b"Exif\x00\x00"):
        blob = blob[6:]
    if not blob:
        return {}
    return dict(exifread.process_file(io.BytesIO(blob), details=False))


def read_photo_metadata(path: Path | str) -> PhotoMeta:
    """Read capture time, position and camera from a JPEG/HEIC/TIFF's EXIF (and XMP fallback).

    Never raises for damaged metadata: it becomes a Problem and whatever was readable is
    returned. Raises MetadataError only when the file itself cannot be opened.
    """
    path = Path(path)
    problems: list[Problem] = []
    try:
        with path.open("rb") as fh:
            head = fh.read(_XMP_SCAN_BYTES)
            size = os.fstat(fh.fileno()).st_size
            tags = _safe_exif_tags(fh, problems)
    except OSError as exc:
        raise MetadataError(f"cannot read {path.name}: {exc.strerror or exc}") from exc
    cut = _jpeg_exif_cut(head, size)
    if cut is not None:
        problems.append(
            Problem(
                STAGE_TIME, ProblemCode.EXIF_TRUNCATED, f"the EXIF block is cut short: {cut} bytes"
            )
        )
    if not tags and image_brand(head) == "image/heic":
        try:
            tags = _heif_exif_tags(path)
        except Exception as exc:
            problems.append(
                Problem(STAGE_TIME, ProblemCode.EXIF_UNREADABLE, f"HEIF EXIF unreadable: {exc}")
            )
    try:
        meta = _meta_from_tags(tags, _xmp_original(head))
    except Exception as exc:
        problems.append(
            Problem(STAGE_TIME, ProblemCode.EXIF_UNREADABLE, f"EXIF values unusable: {exc}")
        )
        return PhotoMeta(problems=tuple(problems))
    if not tags and meta.datetime_original is None and cut is None:
        problems.append(Problem(STAGE_TIME, ProblemCode.EXIF_MISSING, "no EXIF metadata found"))
    return replace(meta, problems=tuple(problems) + meta.problems)


def _jpeg_exif_cut(head: bytes, size: int) -> str | None:
    """``"<present> of <declared>"`` when a JPEG's EXIF (APP1) segment runs past the end of the
    file, which exifread reads silently as far as it goes; None otherwise."""
    if not head.startswith(b"\xff\xd8"):
        return None
    offset = 2
    while offset + 4 <= len(head) and head[offset] == 0xFF:
        marker = head[offset + 1]
        if marker == 0xDA:  # start of scan: the metadata segments are behind us
            return None
        (length,) = struct.unpack(">H", head[offset + 2 : offset + 4])
        if marker == 0xE1 and b"Exif\x00\x00".startswith(head[offset + 4 : offset + 10]):
            present, declared = size - offset - 4, length - 2
            return f"{present} of {declared}" if present < declared else None
        offset += 2 + length
    return None


def _safe_exif_tags(fh: BinaryIO, problems: list[Problem]) -> dict[str, object]:
    # exifread has crashed on these inputs before (TypeError, MemoryError, OSError, ...): a
    # damaged EXIF block must cost us the metadata, never the item.
    try:
        return dict(exifread.process_file(fh, details=False))
    except Exception as exc:
        problems.append(
            Problem(
                STAGE_TIME, ProblemCode.EXIF_UNREADABLE, f"EXIF unreadable ({type(exc).__name__})"
            )
        )
        return {}
