"""GPS sidecar tracks: NMEA 0183 and GPX, recognised by content; GeoJSON; the nearest fix.

Only a track with nothing usable in it raises ``TrackParseError``.
"""

from __future__ import annotations

import io
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import IO, Any, Final

from ingest.errors import TrackParseError
from ingest.timeplace.clock import microseconds, parse_container_time, require_aware
from ingest.timeplace.geo import Fix, make_fix

_MAX_TRACK_BYTES: Final = 64 * 1024 * 1024


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
            int(match[1]), int(match[2]), int(match[3]), microseconds(match[4] or ""), tzinfo=UTC
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
    return _NmeaPoint(lat, lon, _altitude(fields[9]), clock, None)


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
    alt = _altitude(element.findtext(f"{ns}ele"))
    return make_fix(lat, lon, alt, _gpx_time(element.findtext(f"{ns}time")))


def _altitude(text: str | None) -> float | None:
    """An altitude, or None: ``nan``, ``inf`` or ``1e999`` lose the altitude, not the fix (one
    such sentence used to discard the whole track)."""
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


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
    require_aware(when, "when")
    gaps = [(abs(f.time - when), i) for i, f in enumerate(track.fixes) if f.time is not None]
    if not gaps:
        return None
    gap, index = min(gaps)
    return track.fixes[index] if gap <= max_gap else None
