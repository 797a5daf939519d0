"""ingest.timeplace against real files from ../shared/testdata, checked against ExifTool's answers.

Expected values come from photos/exiftool.json or are counted from the track files here, with
code independent of the module under test.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from ingest import timeplace
from ingest.errors import MetadataError, TrackParseError
from ingest.timeplace import (
    PhotoMeta,
    bbox,
    exif,
    load_track,
    nearest_fix,
    read_photo_metadata,
    resolve_capture_time,
    track_to_geojson,
)

TESTDATA = Path(__file__).resolve().parents[3] / "shared" / "testdata"  # ../shared from the repo
PHOTOS = TESTDATA / "photos"
GPX = TESTDATA / "tracks" / "Geotag.gpx"
NMEA = TESTDATA / "tracks" / "Geotag2.nmea"


def _exiftool() -> dict[str, dict[str, Any]]:
    if not PHOTOS.is_dir():
        return {}
    entries = json.loads((PHOTOS / "exiftool.json").read_text())
    return {entry["SourceFile"]: entry for entry in entries}


EXIFTOOL = _exiftool()


def exif_datetime(text: str) -> datetime:
    return datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")  # noqa: DTZ007 - EXIF local time


def exiftool_gps_time(entry: dict[str, Any]) -> datetime:
    day = datetime.strptime(entry["GPSDateStamp"], "%Y:%m:%d").replace(tzinfo=UTC)
    hours, minutes, seconds = entry["GPSTimeStamp"].split(":")
    return day + timedelta(hours=int(hours), minutes=int(minutes), seconds=float(seconds))


def resolve_photo(photo: PhotoMeta, **kwargs: Any) -> timeplace.CaptureTime:
    inputs: dict[str, Any] = {
        "container_time": None,
        "filename": None,
        "manifest_start": None,
        "gps_time": None,
    }
    return resolve_capture_time(photo=photo, **{**inputs, **kwargs})


# --- photos vs ExifTool ---------------------------------------------------------------------------


def test_exiftool_json_covers_every_photo() -> None:
    on_disk = {
        str(p.relative_to(PHOTOS)) for p in PHOTOS.rglob("*") if p.is_file() and p.suffix != ".json"
    }
    assert on_disk == set(EXIFTOOL)


@pytest.mark.parametrize("source_file", sorted(EXIFTOOL))
def test_photo_matches_exiftool(source_file: str) -> None:
    entry = EXIFTOOL[source_file]
    meta = read_photo_metadata(PHOTOS / source_file)  # must not raise, even for broken/

    if "GPSLatitude" in entry:
        assert meta.gps is not None
        assert meta.gps.lat == pytest.approx(entry["GPSLatitude"], abs=1e-5)
        assert meta.gps.lon == pytest.approx(entry["GPSLongitude"], abs=1e-5)
        if "GPSAltitude" in entry:
            assert meta.gps.alt == pytest.approx(entry["GPSAltitude"], abs=1e-3)
    else:
        assert meta.gps is None

    if "DateTimeOriginal" in entry:
        assert meta.datetime_original == exif_datetime(entry["DateTimeOriginal"])
        suffix = entry["DateTimeOriginal"][19:]  # XMP-sourced values carry a zone, e.g. "Z"
        if suffix:
            assert meta.offset_time_original == ("+00:00" if suffix == "Z" else suffix)
    else:
        assert meta.datetime_original is None

    assert meta.offset_time_original == entry.get("OffsetTimeOriginal", meta.offset_time_original)
    if "GPSTimeStamp" in entry and "GPSDateStamp" in entry:
        assert meta.gps_datetime is not None
        assert abs(meta.gps_datetime - exiftool_gps_time(entry)) < timedelta(milliseconds=1)
    else:
        assert meta.gps_datetime is None
    for key, value in (("Make", meta.make), ("Model", meta.model)):
        assert value == (entry[key].strip() if key in entry else None)


@pytest.mark.parametrize("name", sorted(p.name for p in (PHOTOS / "broken").glob("*.jpg")))
def test_broken_photo_yields_problems_not_exceptions(name: str) -> None:
    meta = read_photo_metadata(PHOTOS / "broken" / name)
    assert isinstance(meta.problems, tuple)
    entry = EXIFTOOL[f"broken/{name}"]
    if len(entry) == 1:  # ExifTool found nothing either
        assert [p.code for p in meta.problems] == ["exif_missing"]


def test_missing_file_is_a_metadata_error(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="cannot read"):
        read_photo_metadata(tmp_path / "absent.jpg")


def test_truncated_exif_is_not_fatal(tmp_path: Path) -> None:
    original = (PHOTOS / "gps" / "DSCN0010.jpg").read_bytes()
    entry = EXIFTOOL["gps/DSCN0010.jpg"]
    assert original[2:4] == b"\xff\xe1", "the photo opens with its EXIF segment"
    exif_end = 4 + int.from_bytes(original[4:6], "big")
    truth = {
        "make": entry["Make"],
        "model": entry["Model"],
        "datetime_original": exif_datetime(entry["DateTimeOriginal"]),
    }
    for cut in (24, 200, 700, 1000, 3000, exif_end - 1):
        truncated = tmp_path / f"cut{cut}.jpg"
        truncated.write_bytes(original[:cut])
        meta = read_photo_metadata(truncated)
        read = {name: getattr(meta, name) for name in truth}
        # What a cut block still yields is right; what it lost is absent, never invented.
        assert all(read[k] in (None, truth[k]) for k in truth), (cut, read)
        assert meta.gps is None or meta.gps.time == exiftool_gps_time(entry)
        assert [p.code for p in meta.problems if p.stage == "capture_time"] == ["exif_truncated"], (
            cut
        )
        assert f"{cut - 4 - 2} of {exif_end - 6} bytes" in meta.problems[0].message
    # Far enough in, the capture time and position are all there.
    assert read == truth
    assert meta.gps is not None
    assert (round(meta.gps.lat, 6), round(meta.gps.lon, 6)) == (
        round(float(entry["GPSLatitude"]), 6),
        round(float(entry["GPSLongitude"]), 6),
    )
    whole = read_photo_metadata(PHOTOS / "gps" / "DSCN0010.jpg")
    assert "exif_truncated" not in [p.code for p in whole.problems]


def write_jpeg(path: Path, gps: dict[int, Any], exif_ifd: dict[int, Any] | None = None) -> Path:
    """A tiny JPEG whose EXIF we control, for cases the real photos do not cover."""
    image = Image.new("RGB", (8, 8))
    exif = image.getexif()
    exif.get_ifd(0x8825).update(gps)
    exif.get_ifd(0x8769).update(exif_ifd or {})
    image.save(path, exif=exif)
    return path


def dms(*pairs: tuple[int, int]) -> tuple[IFDRational, ...]:
    return tuple(IFDRational(n, d) for n, d in pairs)


def test_synthetic_exif_southwest_below_sea_level_with_offset(tmp_path: Path) -> None:
    gps = {
        1: "S",
        2: dms((33, 1), (52, 1), (1, 2)),
        3: "W",
        4: dms((70, 1), (30, 1), (0, 1)),
        5: b"\x01",
        6: IFDRational(25, 2),
    }
    exif_ifd = {0x9003: "2026:03:01 08:00:00", 0x9011: "-03:00", 0x9291: "25"}
    meta = read_photo_metadata(write_jpeg(tmp_path / "sw.jpg", gps, exif_ifd))
    assert meta.gps is not None
    assert meta.gps.lat == pytest.approx(-(33 + 52 / 60 + 0.5 / 3600))
    assert meta.gps.lon == pytest.approx(-70.5)
    assert meta.gps.alt == pytest.approx(-12.5)
    assert (meta.offset_time_original, meta.subsec) == ("-03:00", "25")
    result = resolve_photo(meta)
    assert result.captured_at == datetime(2026, 3, 1, 11, 0, 0, 250000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("latitude", "code"),
    [
        (dms((0, 1), (0, 1), (0, 1)), "gps_zero"),
        (dms((31, 1), (1, 0), (0, 1)), "exif_bad_rational"),
    ],
)
def test_synthetic_garbage_gps_is_no_position(
    tmp_path: Path, latitude: tuple[IFDRational, ...], code: str
) -> None:
    gps = {1: "N", 2: latitude, 3: "E", 4: dms((0, 1), (0, 1), (0, 1))}
    meta = read_photo_metadata(write_jpeg(tmp_path / "bad.jpg", gps))
    assert meta.gps is None
    assert [p.code for p in meta.problems] == [code]


def test_synthetic_zero_date_is_no_date(tmp_path: Path) -> None:
    exif_ifd = {0x9003: "0000:00:00 00:00:00", 0x9011: "+99:00"}
    meta = read_photo_metadata(write_jpeg(tmp_path / "zero.jpg", {}, exif_ifd))
    assert (meta.datetime_original, meta.offset_time_original) == (None, None)
    assert {p.code for p in meta.problems} == {"exif_bad_datetime", "exif_bad_offset"}


# --- capture time on real photos -----------------------------------------------------------------

NIKON = sorted(k for k in EXIFTOOL if k.startswith("gps/DSCN"))


@pytest.mark.parametrize("source_file", NIKON)
def test_nikon_clock_skew(source_file: str) -> None:
    entry = EXIFTOOL[source_file]
    gps_utc = exiftool_gps_time(entry)
    camera = exif_datetime(entry["DateTimeOriginal"]).replace(tzinfo=UTC)
    result = resolve_photo(read_photo_metadata(PHOTOS / source_file))
    assert result.source == "gps"
    assert result.captured_at == gps_utc
    assert [p.code for p in result.problems] == ["clock_skew"]
    assert result.device_clock_offset is not None
    assert abs(result.device_clock_offset - (gps_utc - camera)) < timedelta(seconds=1)
    assert result.utc_offset is None  # ~22 h is no zone


def test_iphone_heic_offset_is_derived_from_gps_time() -> None:
    entry = EXIFTOOL["mobile/IMG_2682.heic"]
    gps_utc = exiftool_gps_time(entry)
    local = exif_datetime(entry["DateTimeOriginal"])
    quarter_hours = round((local.replace(tzinfo=UTC) - gps_utc) / timedelta(minutes=15))
    expected_offset = timedelta(minutes=15) * quarter_hours

    meta = read_photo_metadata(PHOTOS / "mobile" / "IMG_2682.heic")
    assert meta.offset_time_original is None
    result = resolve_photo(meta)
    assert (result.source, result.captured_at) == ("gps", gps_utc)
    assert result.utc_offset == expected_offset
    assert result.problems == ()

    # The same photo with GPS only as a nearby reference: EXIF time in the derived zone.
    no_stamp = replace(meta, gps_datetime=None)
    derived = resolve_photo(no_stamp, gps_reference=gps_utc + timedelta(minutes=3))
    assert derived.source == "exif_gps_offset"
    assert derived.utc_offset == expected_offset
    assert derived.captured_at is not None
    assert abs(derived.captured_at - gps_utc) < timedelta(seconds=2)


def test_heic_read_through_pillow_heif_when_exifread_finds_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    direct = read_photo_metadata(PHOTOS / "mobile" / "IMG_2682.heic")
    monkeypatch.setattr(exif, "_safe_exif_tags", lambda *_: {})
    fallback = read_photo_metadata(PHOTOS / "mobile" / "IMG_2682.heic")
    assert fallback.gps == direct.gps
    assert fallback.datetime_original == direct.datetime_original


def test_nokia_offset_time_original() -> None:
    entry = EXIFTOOL["mobile/HMD_Nokia_8.3_5G.jpg"]
    sign = -1 if entry["OffsetTimeOriginal"][0] == "-" else 1
    hours, minutes = entry["OffsetTimeOriginal"][1:].split(":")
    offset = sign * timedelta(hours=int(hours), minutes=int(minutes))
    meta = read_photo_metadata(PHOTOS / "mobile" / "HMD_Nokia_8.3_5G.jpg")
    result = resolve_photo(meta)
    assert result.utc_offset == offset
    assert result.source == "gps"
    assert "clock_skew" not in [p.code for p in result.problems]
    without_gps = resolve_photo(replace(meta, gps_datetime=None))
    expected = exif_datetime(entry["DateTimeOriginal"]).replace(tzinfo=UTC) - offset
    assert (without_gps.source, without_gps.captured_at) == ("exif_offset", expected)


def test_date_priority_picks_datetime_original() -> None:
    entry = EXIFTOOL["mobile/date-priority-test.jpg"]
    meta = read_photo_metadata(PHOTOS / "mobile" / "date-priority-test.jpg")
    assert meta.datetime_original == exif_datetime(entry["DateTimeOriginal"])
    assert meta.gps_datetime is None  # a GPS date without a GPS time is no instant
    result = resolve_photo(meta, local_offset_hint=timedelta(0))
    assert result.source == "exif_local"
    assert result.captured_at == exif_datetime(entry["DateTimeOriginal"]).replace(tzinfo=UTC)


# --- tracks --------------------------------------------------------------------------------------


def gpx_points() -> list[tuple[float, float, float, str]]:
    text = GPX.read_text(encoding="latin-1")
    pattern = r'<trkpt lat="([^"]+)" lon="([^"]+)"><ele>([^<]+)</ele><time>([^<]+)</time></trkpt>'
    return [(float(a), float(b), float(c), t) for a, b, c, t in re.findall(pattern, text)]


def nmea_rmc_points() -> list[tuple[float, float]]:
    points = []
    for line in NMEA.read_text().splitlines():
        fields = line.split(",")
        if fields[0].endswith("RMC") and fields[2] == "A":
            lat = int(fields[3][:2]) + float(fields[3][2:]) / 60
            lon = int(fields[5][:3]) + float(fields[5][3:]) / 60
            points.append((-lat if fields[4] == "S" else lat, -lon if fields[6] == "W" else lon))
    return points


def test_gpx_track() -> None:
    expected = gpx_points()
    assert expected, "independent count found no points"
    assert len(expected) == GPX.read_text(encoding="latin-1").count("<trkpt")
    track = load_track(GPX)
    assert track.source_format == "gpx"
    assert [(f.lat, f.lon, f.alt) for f in track.fixes] == [(a, b, c) for a, b, c, _ in expected]
    assert [f.time for f in track.fixes] == [
        datetime.fromisoformat(t.replace("Z", "+00:00")) for *_, t in expected
    ]


def test_nmea_track() -> None:
    expected = nmea_rmc_points()
    assert expected, "independent count found no points"
    track = load_track(NMEA)
    assert track.source_format == "nmea"
    assert track.bad_checksums == 0
    assert len(track.fixes) == len(expected)
    for fix, (lat, lon) in zip(track.fixes, expected, strict=True):
        assert fix.lat == pytest.approx(lat, abs=1e-9)
        assert fix.lon == pytest.approx(lon, abs=1e-9)
        assert fix.time is not None


@pytest.mark.parametrize("path", [GPX, NMEA], ids=["gpx", "nmea"])
def test_nearest_fix_bbox_and_geojson(path: Path) -> None:
    track = load_track(path)
    timed = [f for f in track.fixes if f.time is not None]
    for fix in timed:
        assert fix.time is not None
        assert nearest_fix(track, fix.time + timedelta(seconds=1)) == fix
    latest = max(f.time for f in timed if f.time is not None)
    assert nearest_fix(track, latest + timedelta(minutes=11)) is None
    assert nearest_fix(track, latest + timedelta(minutes=9)) is not None

    lons = [f.lon for f in track.fixes]
    lats = [f.lat for f in track.fixes]
    assert bbox(track.fixes) == (min(lons), min(lats), max(lons), max(lats))

    feature = track_to_geojson(track)
    json.dumps(feature, allow_nan=False)
    assert feature["type"] == "Feature"
    assert feature["geometry"]["type"] == "LineString"
    coords = feature["geometry"]["coordinates"]
    assert len(coords) == len(track.fixes)
    assert [c[:2] for c in coords] == [[f.lon, f.lat] for f in track.fixes]
    times = feature["properties"]["coordTimes"]
    assert [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in times] == [
        f.time for f in track.fixes
    ]


def test_track_format_is_sniffed_from_content(tmp_path: Path) -> None:
    gpx_named_nmea = tmp_path / "track.nmea"
    shutil.copy(GPX, gpx_named_nmea)
    assert load_track(gpx_named_nmea).source_format == "gpx"
    nmea_named_gpx = tmp_path / "track.gpx"
    shutil.copy(NMEA, nmea_named_gpx)
    assert load_track(nmea_named_gpx).source_format == "nmea"
    junk = tmp_path / "junk.gpx"
    junk.write_bytes(b"\x89PNG\r\n")
    with pytest.raises(TrackParseError, match="neither GPX nor NMEA"):
        load_track(junk)
    with pytest.raises(TrackParseError, match="cannot read"):
        load_track(tmp_path / "absent.gpx")
