"""When and where an item was captured: EXIF, container tags, GPS tracks, file names.

Every reader here turns damaged input into `Problem`s and returns what it could read: evidence is
never refused for being broken (DESIGN.md, principle 2). Only track files with nothing usable in
them raise `TrackParseError`. All datetimes are timezone-aware except the two places where the
source itself is local time without a zone (`PhotoMeta.datetime_original`,
`FileNameInfo.started_at`); `resolve_capture_time` is where a zone is decided for them.
"""

from __future__ import annotations

import io
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta, timezone
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, BinaryIO, Final

import exifread

from ingest.errors import MetadataError, TrackParseError
from ingest.problems import Problem

__all__ = [
    "DEFAULT_LOCAL_OFFSET",
    "CaptureTime",
    "FileNameInfo",
    "Fix",
    "PhotoMeta",
    "Track",
    "bbox",
    "load_track",
    "nearest_fix",
    "parse_capture_filename",
    "parse_container_time",
    "parse_gpx",
    "parse_iso6709",
    "parse_nmea",
    "read_photo_metadata",
    "resolve_capture_time",
    "track_to_geojson",
]

STAGE_TIME: Final = "capture_time"
STAGE_PLACE: Final = "place"

DEFAULT_LOCAL_OFFSET: Final = timedelta(hours=8)
"""Zone assumed for local times with no zone and no hint: Asia/Shanghai (no DST since 1991)."""

MAX_UTC_OFFSET: Final = timedelta(hours=14)
"""Widest real zone offsets are -12:00 and +14:00; anything beyond is a wrong clock."""

_ZONE_STEP: Final = timedelta(minutes=15)
_EARLIEST: Final = datetime(1990, 1, 1, tzinfo=UTC)
_LATEST: Final = datetime(2100, 1, 1, tzinfo=UTC)
_MAX_TRACK_BYTES: Final = 64 * 1024 * 1024
_XMP_SCAN_BYTES: Final = 1024 * 1024


# --- place ------------------------------------------------------------------------------------


def _decimal_str(value: float) -> str:
    text = f"{value:.7f}"
    return "0.0000000" if text == "-0.0000000" else text


@dataclass(frozen=True)
class Fix:
    """One position, WGS 84."""

    lat: float
    """Degrees north, -90..90."""
    lon: float
    """Degrees east, -180..180."""
    alt: float | None = None
    """Metres above sea level, when known."""
    time: datetime | None = None
    """UTC time of the fix, when known (always timezone-aware)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lat) and -90.0 <= self.lat <= 90.0):
            raise MetadataError(f"latitude out of range: {self.lat!r}")
        if not (math.isfinite(self.lon) and -180.0 <= self.lon <= 180.0):
            raise MetadataError(f"longitude out of range: {self.lon!r}")
        if self.alt is not None and not math.isfinite(self.alt):
            raise MetadataError(f"altitude is not a number: {self.alt!r}")
        if self.time is not None and self.time.utcoffset() is None:
            raise MetadataError("fix time must be timezone-aware")

    @property
    def lat_str(self) -> str:
        """Latitude as a decimal string with 7 decimals (~1 cm): leaf JSON carries no floats."""
        return _decimal_str(self.lat)

    @property
    def lon_str(self) -> str:
        """Longitude as a decimal string with 7 decimals."""
        return _decimal_str(self.lon)


def _make_fix(
    lat: float, lon: float, alt: float | None = None, when: datetime | None = None
) -> Fix | None:
    try:
        return Fix(lat, lon, alt, when)
    except MetadataError:
        return None


_ISO6709_RE: Final = re.compile(
    r"^(?P<lat>[+-]\d+(?:\.\d+)?)(?P<lon>[+-]\d+(?:\.\d+)?)(?P<alt>[+-]\d+(?:\.\d+)?)?"
    r"(?:CRS[A-Za-z0-9_:.-]*)?/?$"
)


def _iso6709_angle(text: str, degree_digits: int) -> float | None:
    """Decode ±D[D]D[.d], ±DDMM[.m] or ±DDMMSS[.s] (ISO 6709 Annex H) by the integer width."""
    sign = -1.0 if text[0] == "-" else 1.0
    whole, _, frac = text[1:].partition(".")
    fraction = float("0." + frac) if frac else 0.0
    width = len(whole)
    if width <= degree_digits:
        return sign * (int(whole) + fraction)
    if width == degree_digits + 2:
        degrees, minutes = int(whole[:degree_digits]), int(whole[degree_digits:]) + fraction
        seconds = 0.0
    elif width == degree_digits + 4:
        degrees, minutes = int(whole[:degree_digits]), int(whole[degree_digits : degree_digits + 2])
        seconds = int(whole[degree_digits + 2 :]) + fraction
    else:
        return None
    if minutes >= 60 or seconds >= 60:
        return None
    return sign * (degrees + minutes / 60 + seconds / 3600)


def parse_iso6709(s: str) -> Fix | None:
    """Parse an MP4/MOV location tag (``©xyz``, ``location``) such as ``+40.8423+111.7490/``.

    Latitude has 2 degree digits and longitude 3; longer integer parts are degrees-minutes
    (``+4050.538+11144.940/``) or degrees-minutes-seconds. Returns None for anything else.
    """
    match = _ISO6709_RE.match(s.strip())
    if match is None:
        return None
    lat = _iso6709_angle(match["lat"], 2)
    lon = _iso6709_angle(match["lon"], 3)
    if lat is None or lon is None:
        return None
    alt = float(match["alt"]) if match["alt"] else None
    return _make_fix(lat, lon, alt)


def bbox(fixes: Iterable[Fix]) -> tuple[float, float, float, float]:
    """(min_lon, min_lat, max_lon, max_lat), GeoJSON order. Ignores the antimeridian."""
    items = list(fixes)
    if not items:
        raise ValueError("bbox of no fixes")
    lons = [f.lon for f in items]
    lats = [f.lat for f in items]
    return min(lons), min(lats), max(lons), max(lats)


# --- time helpers -------------------------------------------------------------------------------


def _require_aware(value: datetime | None, name: str) -> None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


def _plausible(value: datetime) -> bool:
    """Zero dates (1904/1970 epochs, 0000:00:00) and far-future dates are absent, not facts."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return _EARLIEST <= aware < _LATEST


def _microseconds(fraction: str) -> int:
    return int((fraction + "000000")[:6]) if fraction else 0


def _offset_from_text(text: str) -> timedelta | None:
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


def _format_offset(offset: timedelta) -> str:
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
    zone = _offset_from_text(match[8]) if match[8] else timedelta(0)
    if zone is None:
        return None
    year, month, day, hour, minute, second = (int(match[i]) for i in range(1, 7))
    try:
        value = datetime(
            year, month, day, hour, minute, second, _microseconds(match[7] or ""), timezone(zone)
        ).astimezone(UTC)
    except ValueError:
        return None
    return value if _plausible(value) else None


# --- photos -------------------------------------------------------------------------------------


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
        return _offset_from_text(self.offset_time_original) if self.offset_time_original else None

    @property
    def local_time(self) -> datetime | None:
        """DateTimeOriginal with its sub-seconds, still naive."""
        if self.datetime_original is None:
            return None
        digits = (self.subsec or "").strip()
        if not digits.isdigit():
            return self.datetime_original
        return self.datetime_original + timedelta(microseconds=_microseconds(digits))


class _Reader:
    """Reads typed values out of an exifread tag dict, recording each failure as a Problem."""

    def __init__(self, tags: dict[str, Any]) -> None:
        self.tags = tags
        self.problems: list[Problem] = []

    def note(self, stage: str, code: str, message: str) -> None:
        self.problems.append(Problem(stage, code, message))

    def values(self, key: str) -> Any:
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
            numbers = [_ratio(v) for v in raw]
        except (TypeError, ValueError):
            self.note(STAGE_PLACE, "exif_bad_value", f"{key} is not a list of numbers")
            return None
        if any(n is None for n in numbers):
            self.note(STAGE_PLACE, "exif_bad_rational", f"{key} has a zero denominator")
            return None
        return [n for n in numbers if n is not None]


def _ratio(value: Any) -> float | None:
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
    return value if _plausible(value) else None


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
        reader.note(STAGE_PLACE, "gps_invalid", "GPS latitude/longitude are not D/M/S values")
        return None
    if lat == 0 and lon == 0:
        # Cameras without a fix fill the block with zeros; Null Island is not a place.
        reader.note(STAGE_PLACE, "gps_zero", "GPS block holds 0,0 (no fix)")
        return None
    if (reader.text("GPS GPSLatitudeRef") or "N").upper().startswith("S"):
        lat = -lat
    if (reader.text("GPS GPSLongitudeRef") or "E").upper().startswith("W"):
        lon = -lon
    alt = _gps_altitude(reader)
    fix = _make_fix(lat, lon, alt, when)
    if fix is None:
        reader.note(STAGE_PLACE, "gps_invalid", f"GPS position out of range: {lat}, {lon}")
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
        reader.note(STAGE_TIME, "gps_time_invalid", f"GPS date/time unusable: {day_text} {clock}")
        return None
    offset = timedelta(hours=int(hours), minutes=int(minutes), seconds=seconds)
    return day.replace(tzinfo=UTC) + offset


def _orientation(reader: _Reader) -> int | None:
    raw = reader.values("Image Orientation")
    if isinstance(raw, list) and raw and isinstance(raw[0], int) and 1 <= raw[0] <= 8:
        return raw[0]
    return None


def _meta_from_tags(tags: dict[str, Any], xmp_original: datetime | None) -> PhotoMeta:
    reader = _Reader(tags)
    original_text = reader.text("EXIF DateTimeOriginal")
    original = _exif_datetime(original_text) if original_text else None
    if original_text and original is None:
        reader.note(
            STAGE_TIME, "exif_bad_datetime", f"DateTimeOriginal unusable: {original_text!r}"
        )
    offset_text = reader.text("EXIF OffsetTimeOriginal")
    offset = _offset_from_text(offset_text) if offset_text else None
    if offset_text and offset is None:
        reader.note(STAGE_TIME, "exif_bad_offset", f"OffsetTimeOriginal unusable: {offset_text!r}")
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
        offset_time_original=_format_offset(offset) if offset is not None else None,
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
    return value if _plausible(value) else None


def _is_heif(head: bytes) -> bool:
    return head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"heim")


def _heif_exif_tags(path: Path) -> dict[str, Any]:
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
            tags = _safe_exif_tags(fh, problems)
    except OSError as exc:
        raise MetadataError(f"cannot read {path.name}: {exc.strerror or exc}") from exc
    if not tags and _is_heif(head):
        try:
            tags = _heif_exif_tags(path)
        except Exception as exc:
            problems.append(Problem(STAGE_TIME, "exif_unreadable", f"HEIF EXIF unreadable: {exc}"))
    try:
        meta = _meta_from_tags(tags, _xmp_original(head))
    except Exception as exc:
        problems.append(Problem(STAGE_TIME, "exif_unreadable", f"EXIF values unusable: {exc}"))
        return PhotoMeta(problems=tuple(problems))
    if not tags and meta.datetime_original is None:
        problems.append(Problem(STAGE_TIME, "exif_missing", "no EXIF metadata found"))
    return replace(meta, problems=tuple(problems) + meta.problems)


def _safe_exif_tags(fh: BinaryIO, problems: list[Problem]) -> dict[str, Any]:
    # exifread has crashed on these inputs before (TypeError, MemoryError, OSError, ...): a
    # damaged EXIF block must cost us the metadata, never the item.
    try:
        return dict(exifread.process_file(fh, details=False))
    except Exception as exc:
        problems.append(
            Problem(STAGE_TIME, "exif_unreadable", f"EXIF unreadable ({type(exc).__name__})")
        )
        return {}


# --- tracks -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Track:
    """A GPS track as read from a sidecar file, fixes in file order."""

    fixes: list[Fix]
    source_format: str
    """``nmea`` or ``gpx``."""
    bad_checksums: int = 0
    """NMEA sentences dropped because their checksum was wrong or missing."""
    rejected: int = 0
    """Points dropped as invalid: RMC status V, GGA quality 0, malformed or out-of-range fields."""


_NMEA_RE: Final = re.compile(r"\$(?P<body>[^*$\r\n]*)(?:\*(?P<sum>[0-9A-Fa-f]{2}))?")


def _nmea_checksum(body: str) -> int:
    value = 0
    for char in body.encode("ascii", "replace"):
        value ^= char
    return value


def _nmea_angle(value: str, hemisphere: str, degree_digits: int) -> float | None:
    """NMEA ddmm.mmmm / dddmm.mmmm with N/S/E/W."""
    if not re.fullmatch(r"\d+(?:\.\d+)?", value) or hemisphere not in ("N", "S", "E", "W"):
        return None
    whole = value.split(".")[0]
    if len(whole) < degree_digits + 2:
        return None
    split = len(whole) - 2
    minutes = float(value[split:])
    if minutes >= 60:
        return None
    angle = int(value[:split]) + minutes / 60
    if angle > (90 if degree_digits == 2 else 180):
        return None
    return -angle if hemisphere in ("S", "W") else angle


def _nmea_time(value: str) -> time | None:
    match = re.fullmatch(r"(\d{2})(\d{2})(\d{2})(?:\.(\d+))?", value)
    if match is None:
        return None
    try:
        return time(
            int(match[1]), int(match[2]), int(match[3]), _microseconds(match[4] or ""), tzinfo=UTC
        )
    except ValueError:
        return None


def _nmea_date(value: str) -> date | None:
    match = re.fullmatch(r"(\d{2})(\d{2})(\d{2})", value)
    if match is None:
        return None
    year = int(match[3])
    try:
        # Two-digit years: NMEA predates 2000; 80-99 are the 1900s.
        return date(year + (1900 if year >= 80 else 2000), int(match[2]), int(match[1]))
    except ValueError:
        return None


@dataclass(frozen=True)
class _NmeaPoint:
    lat: float
    lon: float
    alt: float | None
    clock: time
    day: date | None
    """Only RMC carries a date."""


def _parse_rmc(fields: list[str]) -> _NmeaPoint | None:
    if len(fields) < 10 or fields[2] != "A":
        return None
    if len(fields) > 12 and fields[12][:1] == "N":  # NMEA 2.3 mode: data not valid
        return None
    clock, day = _nmea_time(fields[1]), _nmea_date(fields[9])
    lat, lon = _nmea_angle(fields[3], fields[4], 2), _nmea_angle(fields[5], fields[6], 3)
    if clock is None or day is None or lat is None or lon is None:
        return None
    return _NmeaPoint(lat, lon, None, clock, day)


def _parse_gga(fields: list[str]) -> _NmeaPoint | None:
    if len(fields) < 10 or fields[6] in ("", "0"):
        return None
    clock = _nmea_time(fields[1])
    lat, lon = _nmea_angle(fields[2], fields[3], 2), _nmea_angle(fields[4], fields[5], 3)
    if clock is None or lat is None or lon is None:
        return None
    try:
        alt = float(fields[9]) if fields[9] else None
    except ValueError:
        alt = None
    return _NmeaPoint(lat, lon, alt, clock, None)


def _date_points(points: list[_NmeaPoint]) -> list[Fix]:
    """Give GGA points the date of the last RMC (the first RMC for leading GGAs), merge epochs."""
    day = next((p.day for p in points if p.day is not None), None)
    last_clock: time | None = None
    merged: dict[datetime | int, Fix] = {}
    for index, point in enumerate(points):
        if point.day is not None:
            day = point.day
        elif day is not None and last_clock is not None and _crossed_midnight(last_clock, point):
            day += timedelta(days=1)
        last_clock = point.clock
        when = datetime.combine(day, point.clock) if day is not None else None
        fix = Fix(point.lat, point.lon, point.alt, when)  # ranges checked by _nmea_angle
        key: datetime | int = when if when is not None else index
        earlier = merged.get(key)
        # GGA and RMC of one epoch describe one fix: keep one, preferring GGA's altitude.
        if earlier is None or (earlier.alt is None and fix.alt is not None):
            merged[key] = fix
    return list(merged.values())


def _crossed_midnight(last: time, point: _NmeaPoint) -> bool:
    seconds = (point.clock.hour - last.hour) * 3600 + (point.clock.minute - last.minute) * 60
    return seconds < -12 * 3600


def parse_nmea(lines: Iterable[str]) -> Track:
    """Read RMC and GGA sentences (any talker: GP, GN, BD, GL, GA) from an NMEA 0183 log.

    Sentences with a wrong or missing checksum are dropped and counted; proprietary ``$P...``
    sentences and other types are ignored. GGA carries only a time of day, so it takes the date
    of the last RMC. Raises TrackParseError when no usable fix remains.
    """
    points: list[_NmeaPoint] = []
    bad_checksums = rejected = 0
    for line in lines:
        for match in _NMEA_RE.finditer(line):
            body = match["body"]
            address = body.split(",", 1)[0]
            if address.startswith("P") or len(address) != 5:
                continue
            if match["sum"] is None or int(match["sum"], 16) != _nmea_checksum(body):
                bad_checksums += 1
                continue
            kind = address[2:]
            if kind not in ("RMC", "GGA"):
                continue
            fields = body.split(",")
            point = _parse_rmc(fields) if kind == "RMC" else _parse_gga(fields)
            if point is None:
                rejected += 1
            else:
                points.append(point)
    fixes = _date_points(points)
    if not fixes:
        raise TrackParseError(
            f"no usable NMEA fix ({bad_checksums} bad checksums, {rejected} rejected)"
        )
    return Track(fixes, "nmea", bad_checksums=bad_checksums, rejected=rejected)


_GPX_NAMESPACES: Final = (
    "http://www.topografix.com/GPX/1/0",
    "http://www.topografix.com/GPX/1/1",
    "",
)
_XML_DECLARATIONS_RE: Final = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def _read_capped(stream: IO[bytes]) -> bytes:
    data = stream.read(_MAX_TRACK_BYTES + 1)
    if len(data) > _MAX_TRACK_BYTES:
        raise TrackParseError(f"track file larger than {_MAX_TRACK_BYTES} bytes")
    return data


def _safe_xml(data: bytes) -> ET.Element:
    # No DTD means no entity expansion (billion laughs) and no external entities; NUL bytes would
    # mean UTF-16/32, where the byte search below could be evaded, and GPX is UTF-8 in practice.
    if b"\x00" in data:
        raise TrackParseError("GPX must use an ASCII-compatible encoding")
    if _XML_DECLARATIONS_RE.search(data):
        raise TrackParseError("GPX with a DOCTYPE or ENTITY declaration is refused")
    try:
        return ET.fromstring(data)  # noqa: S314 - DTDs refused above, size capped by caller
    except ET.ParseError as exc:
        raise TrackParseError(f"GPX is not well-formed XML: {exc}") from exc


def _gpx_time(text: str | None) -> datetime | None:
    # Same ISO 8601 shape as container tags, and GPX times are UTC too.
    return parse_container_time(text) if text else None


def _gpx_point(element: ET.Element, ns: str) -> Fix | None:
    try:
        lat = float(element.attrib["lat"])
        lon = float(element.attrib["lon"])
    except (KeyError, ValueError):
        return None
    ele_text = element.findtext(f"{ns}ele")
    try:
        alt = float(ele_text) if ele_text else None
    except ValueError:
        alt = None
    return _make_fix(lat, lon, alt, _gpx_time(element.findtext(f"{ns}time")))


def parse_gpx(stream: IO[bytes]) -> Track:
    """Read a GPX 1.0 or 1.1 file: track points, else route points, else waypoints.

    Refuses DTDs and entity declarations before parsing and caps the size. Raises
    TrackParseError when nothing usable is found.
    """
    root = _safe_xml(_read_capped(stream))
    ns_uri = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
    if ns_uri not in _GPX_NAMESPACES or root.tag.rsplit("}", 1)[-1] != "gpx":
        raise TrackParseError(f"not a GPX document: root element {root.tag!r}")
    ns = f"{{{ns_uri}}}" if ns_uri else ""
    for kind in ("trkpt", "rtept", "wpt"):
        elements = list(root.iter(f"{ns}{kind}"))
        if elements:
            break
    points = [_gpx_point(e, ns) for e in elements]
    fixes = [p for p in points if p is not None]
    if not fixes:
        raise TrackParseError("GPX has no usable point")
    return Track(fixes, "gpx", rejected=len(points) - len(fixes))


def load_track(path: Path | str) -> Track:
    """Read an NMEA or GPX sidecar track, recognised by its content, not its name."""
    try:
        with Path(path).open("rb") as fh:
            data = _read_capped(fh)
    except OSError as exc:
        raise TrackParseError(f"cannot read track: {exc.strerror or exc}") from exc
    start = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    if start.startswith(b"<"):
        return parse_gpx(io.BytesIO(data))
    if b"$" in start[:4096]:
        return parse_nmea(data.decode("ascii", "replace").splitlines())
    raise TrackParseError("track is neither GPX nor NMEA 0183")


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def track_to_geojson(track: Track) -> dict[str, Any]:
    """A GeoJSON (RFC 7946) Feature: LineString of [lon, lat(, alt)], times in ``coordTimes``.

    Altitude is included only when every fix has one (mixed position lengths confuse readers).
    A single fix becomes a Point, since a LineString needs two positions.
    """
    with_alt = all(f.alt is not None for f in track.fixes)
    coords = [[f.lon, f.lat, f.alt] if with_alt else [f.lon, f.lat] for f in track.fixes]
    geometry: dict[str, Any] = (
        {"type": "LineString", "coordinates": coords}
        if len(coords) >= 2
        else {"type": "Point", "coordinates": coords[0] if coords else []}
    )
    return {
        "type": "Feature",
        "geometry": geometry,
        "properties": {
            "source_format": track.source_format,
            "coordTimes": [_rfc3339(f.time) if f.time else None for f in track.fixes],
        },
    }


def nearest_fix(
    track: Track, when: datetime, max_gap: timedelta = timedelta(minutes=10)
) -> Fix | None:
    """The fix closest in time to ``when`` (aware), or None if the closest is beyond max_gap."""
    _require_aware(when, "when")
    gaps = [(abs(f.time - when), i) for i, f in enumerate(track.fixes) if f.time is not None]
    if not gaps:
        return None
    gap, index = min(gaps)
    return track.fixes[index] if gap <= max_gap else None


# --- file names ---------------------------------------------------------------------------------


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
    return value if _plausible(value) else None


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


# --- capture time -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptureTime:
    """The decided capture time and how it was decided."""

    captured_at: datetime | None
    """UTC, or None when no source gave a usable time."""
    source: str | None
    """gps | exif_offset | container | exif_gps_offset | exif_local | filename | manifest."""
    device_clock_offset: timedelta | None
    """GPS time − device time, set when they disagree beyond the skew threshold."""
    utc_offset: timedelta | None
    """Zone offset of the capture's local time, when known or assumed."""
    problems: tuple[Problem, ...] = field(default=())


def _round_to_zone(delta: timedelta) -> timedelta:
    steps = round(delta / _ZONE_STEP)
    return _ZONE_STEP * steps


def _derive_offset(local: datetime, gps: datetime) -> timedelta | None:
    """Zone offset local − UTC rounded to 15 min; None when beyond ±14 h (a wrong clock)."""
    offset = _round_to_zone(local.replace(tzinfo=UTC) - gps)
    return offset if abs(offset) <= MAX_UTC_OFFSET else None


def _as_local(naive: datetime, offset: timedelta) -> datetime:
    return naive.replace(tzinfo=timezone(offset)).astimezone(UTC)


@dataclass
class _Decision:
    problems: list[Problem] = field(default_factory=list)
    device_clock_offset: timedelta | None = None

    def check_skew(self, gps: datetime, device: datetime, what: str, threshold: timedelta) -> None:
        delta = gps - device
        if abs(delta) > threshold:
            self.device_clock_offset = delta
            self.problems.append(
                Problem(
                    STAGE_TIME,
                    "clock_skew",
                    f"{what} differs from GPS time by {_describe(delta)} "
                    f"(threshold {_describe(threshold)})",
                )
            )

    def assumed_zone(self, offset: timedelta, what: str) -> None:
        self.problems.append(
            Problem(
                STAGE_TIME,
                "utc_offset_assumed",
                f"{what} has no zone; assumed UTC{_format_offset(offset)}",
            )
        )


def _describe(delta: timedelta) -> str:
    seconds = int(abs(delta.total_seconds()))
    sign = "-" if delta < timedelta(0) else "+"
    return f"{sign}{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


def _exif_device_time(
    photo: PhotoMeta | None, gps: datetime | None, hint: timedelta | None
) -> tuple[datetime | None, timedelta | None, str]:
    """(device time as UTC, zone offset, how the zone was found) for a photo's EXIF time."""
    if photo is None or photo.local_time is None:
        return None, None, ""
    local = photo.local_time
    if photo.utc_offset is not None:
        return _as_local(local, photo.utc_offset), photo.utc_offset, "exif_offset"
    if gps is not None:
        derived = _derive_offset(local, gps)
        if derived is not None:
            return _as_local(local, derived), derived, "exif_gps_offset"
        # No real zone explains the difference: compare the raw clock (in the hinted zone, or
        # as if it were UTC) so the skew shows the camera's actual error.
        return _as_local(local, hint or timedelta(0)), None, "exif_unzoned"
    return None, None, "exif_local"


def resolve_capture_time(
    *,
    photo: PhotoMeta | None,
    container_time: datetime | None,
    filename: FileNameInfo | None,
    manifest_start: datetime | None,
    gps_time: datetime | None,
    local_offset_hint: timedelta | None = None,
    skew_threshold: timedelta = timedelta(seconds=120),
    gps_reference: datetime | None = None,
) -> CaptureTime:
    """Decide the capture time by DESIGN.md's order of trust, and check the device clock.

    1. ``gps``: ``gps_time``, or the photo's own GPS date+time stamp: the capture instant.
    2. ``exif_offset``: DateTimeOriginal with OffsetTimeOriginal.
    3. ``container``: MP4/MOV ``creation_time`` (UTC).
    4. ``exif_gps_offset``: DateTimeOriginal with a zone derived from ``gps_reference``, a GPS
       time near but not at the capture (e.g. the nearest track fix): the difference rounded to
       15 minutes, accepted only within ±14 h.
    5. ``exif_local``: DateTimeOriginal in ``local_offset_hint`` (else +08:00).
    6. ``filename``: the name's local time in ``local_offset_hint``, default +08:00
       (Asia/Shanghai) with a ``utc_offset_assumed`` problem; UTC names (PXL_) as they are.
    7. ``manifest``: the device's declared capture start.

    With a GPS time, a device time (EXIF, else container) more than ``skew_threshold`` away
    adds a ``clock_skew`` problem and sets ``device_clock_offset`` = GPS − device.
    """
    for name, value in (
        ("container_time", container_time),
        ("manifest_start", manifest_start),
        ("gps_time", gps_time),
        ("gps_reference", gps_reference),
    ):
        _require_aware(value, name)
    decision = _Decision()
    gps = gps_time or (photo.gps_datetime if photo else None)
    exif_time, exif_zone, zone_how = _exif_device_time(
        photo, gps or gps_reference, local_offset_hint
    )

    if gps is not None:
        device = exif_time if exif_time is not None else container_time
        if device is not None:
            what = "camera clock (EXIF)" if exif_time is not None else "container creation_time"
            decision.check_skew(gps, device, what, skew_threshold)
        return _result(gps.astimezone(UTC), "gps", exif_zone, decision)
    if exif_time is not None and zone_how == "exif_offset":
        return _result(exif_time, "exif_offset", exif_zone, decision)
    if container_time is not None:
        return _result(container_time.astimezone(UTC), "container", exif_zone, decision)
    if exif_time is not None and zone_how == "exif_gps_offset":
        return _result(exif_time, "exif_gps_offset", exif_zone, decision)
    zone = local_offset_hint if local_offset_hint is not None else DEFAULT_LOCAL_OFFSET
    if photo is not None and photo.local_time is not None:
        if local_offset_hint is None:
            decision.assumed_zone(zone, "EXIF DateTimeOriginal")
        return _result(_as_local(photo.local_time, zone), "exif_local", zone, decision)
    if filename is not None and filename.started_at is not None:
        started = filename.started_at
        if started.tzinfo is not None:
            return _result(started.astimezone(UTC), "filename", started.utcoffset(), decision)
        if local_offset_hint is None:
            decision.assumed_zone(zone, "file name time")
        return _result(_as_local(started, zone), "filename", zone, decision)
    if manifest_start is not None:
        return _result(manifest_start.astimezone(UTC), "manifest", None, decision)
    decision.problems.append(Problem(STAGE_TIME, "capture_time_unknown", "no source gave a time"))
    return _result(None, None, None, decision)


def _result(
    when: datetime | None, source: str | None, zone: timedelta | None, decision: _Decision
) -> CaptureTime:
    return CaptureTime(
        captured_at=when,
        source=source,
        device_clock_offset=decision.device_clock_offset,
        utc_offset=zone,
        problems=tuple(decision.problems),
    )
