"""Positions: a WGS 84 ``Fix``, ISO 6709 location tags, bounding boxes."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from ingest.errors import MetadataError


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


def make_fix(
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
    return make_fix(lat, lon, alt)


def bbox(fixes: Iterable[Fix]) -> tuple[float, float, float, float]:
    """(min_lon, min_lat, max_lon, max_lat), GeoJSON order. Ignores the antimeridian."""
    items = list(fixes)
    if not items:
        raise ValueError("bbox of no fixes")
    lons = [f.lon for f in items]
    lats = [f.lat for f in items]
    return min(lons), min(lats), max(lons), max(lats)
