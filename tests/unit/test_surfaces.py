"""The public surface of the split packages: exactly these names, each defined inside."""

from __future__ import annotations

from datetime import timedelta
from types import ModuleType

import pytest

from ingest import media, timeplace

SURFACES: dict[str, tuple[ModuleType, set[str]]] = {
    "media": (
        media,
        {
            "DISPLAY_MAX_PX",
            "PROXY_MAX_SHORT_SIDE",
            "THUMB_MAX_PX",
            "WAVEFORM_SIZE",
            "Derived",
            "Limits",
            "ProbeResult",
            "Recipe",
            "derive",
            "make_contact_sheet",
            "make_photo_derivatives",
            "make_proxy",
            "make_thumbnails",
            "make_waveform",
            "probe",
            "proxy_command",
            "tool_versions",
        },
    ),
    "timeplace": (
        timeplace,
        {
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
        },
    ),
}


@pytest.mark.parametrize("name", SURFACES)
def test_all_is_the_public_surface(name: str) -> None:
    package, expected = SURFACES[name]
    assert set(package.__all__) == expected
    assert len(package.__all__) == len(expected), "a name listed twice"


@pytest.mark.parametrize("name", SURFACES)
def test_every_public_name_is_defined_in_the_package(name: str) -> None:
    package, _ = SURFACES[name]
    for public in package.__all__:
        value = getattr(package, public)
        home = getattr(value, "__module__", None)
        # Classes and functions say where they live; constants cannot.
        if home is not None and not isinstance(value, int | tuple | timedelta):
            assert home.startswith(package.__name__ + "."), f"{public} comes from {home}"
