"""When and where an item was captured: EXIF, container tags, GPS tracks, file names.

Every reader here turns damaged input into `Problem`s and returns what it could read: evidence is
never refused for being broken (DESIGN.md, principle 2). Only track files with nothing usable in
them raise `TrackParseError`. All datetimes are timezone-aware except the two places where the
source itself is local time without a zone (`PhotoMeta.datetime_original`,
`FileNameInfo.started_at`); `resolve_capture_time` is where a zone is decided for them.

    clock.py      zone offsets, plausible dates, ``parse_container_time``
    geo.py        ``Fix``, ``parse_iso6709``, ``bbox``
    exif.py       ``read_photo_metadata`` → ``PhotoMeta``
    tracks.py     ``load_track``, ``parse_nmea``, ``parse_gpx``, ``track_to_geojson``,
                  ``nearest_fix``
    filenames.py  ``parse_capture_filename`` → ``FileNameInfo``
    capture.py    ``resolve_capture_time`` → ``CaptureTime``

Callers import the names from this package, never from a topic module.
"""

from ingest.timeplace.capture import CaptureTime, resolve_capture_time
from ingest.timeplace.clock import DEFAULT_LOCAL_OFFSET, parse_container_time
from ingest.timeplace.exif import PhotoMeta, read_photo_metadata
from ingest.timeplace.filenames import FileNameInfo, parse_capture_filename
from ingest.timeplace.geo import Fix, bbox, parse_iso6709
from ingest.timeplace.tracks import (
    Track,
    load_track,
    nearest_fix,
    parse_gpx,
    parse_nmea,
    track_to_geojson,
)

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
