"""Pure logic of ingest.timeplace: small inline inputs, no files."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone
from functools import reduce

import pytest

from ingest import timeplace
from ingest.errors import MetadataError, TrackParseError
from ingest.timeplace import (
    FileNameInfo,
    Fix,
    PhotoMeta,
    Track,
    bbox,
    nearest_fix,
    parse_capture_filename,
    parse_container_time,
    parse_gpx,
    parse_iso6709,
    parse_nmea,
    resolve_capture_time,
    track_to_geojson,
    tracks,
)

# --- Fix -----------------------------------------------------------------------------------------


def test_fix_decimal_strings_have_seven_decimals() -> None:
    fix = Fix(40.8423, -111.749, None, None)
    assert (fix.lat_str, fix.lon_str) == ("40.8423000", "-111.7490000")
    assert Fix(-0.00000001, 0.0).lat_str == "0.0000000"
    assert Fix(12.345678951, 0.0).lat_str == "12.3456790"


@pytest.mark.parametrize(
    ("lat", "lon"), [(91.0, 0.0), (-90.5, 0.0), (0.0, 180.1), (float("nan"), 0.0)]
)
def test_fix_rejects_impossible_positions(lat: float, lon: float) -> None:
    with pytest.raises(MetadataError, match="out of range"):
        Fix(lat, lon)


def test_fix_rejects_naive_time() -> None:
    with pytest.raises(MetadataError, match="timezone-aware"):
        Fix(1.0, 1.0, None, datetime(2026, 3, 1, 8, 0))  # noqa: DTZ001


# --- ISO 6709 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "lat", "lon", "alt"),
    [
        ("+40.8423+111.7490/", 40.8423, 111.749, None),
        ("+40.8423+111.7490+012.345/", 40.8423, 111.749, 12.345),
        ("+35.6895+139.6917+040.000/", 35.6895, 139.6917, 40.0),
        ("-33.8688-070.6693/", -33.8688, -70.6693, None),
        ("+48.8577+002.2950-010.5CRSWGS_84/", 48.8577, 2.295, -10.5),
        ("+40.8423+111.7490", 40.8423, 111.749, None),
        ("+4050.538+11144.940/", 40 + 50.538 / 60, 111 + 44.940 / 60, None),
        (
            "+405032.28-1114456.4/",
            40 + 50 / 60 + 32.28 / 3600,
            -(111 + 44 / 60 + 56.4 / 3600),
            None,
        ),
    ],
)
def test_parse_iso6709(text: str, lat: float, lon: float, alt: float | None) -> None:
    fix = parse_iso6709(text)
    assert fix is not None
    assert fix.lat == pytest.approx(lat, abs=1e-9)
    assert fix.lon == pytest.approx(lon, abs=1e-9)
    assert fix.alt == (pytest.approx(alt) if alt is not None else None)
    assert fix.time is None


@pytest.mark.parametrize(
    "text",
    ["", "garbage", "+40.8423/", "+91.0000+000.0000/", "+4061.000+11144.940/", "40.8+111.7/"],
)
def test_parse_iso6709_rejects(text: str) -> None:
    assert parse_iso6709(text) is None


# --- container time ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T08:00:00.000000Z", datetime(2026, 3, 1, 8, 0, tzinfo=UTC)),
        ("2026-03-01T08:00:00Z", datetime(2026, 3, 1, 8, 0, tzinfo=UTC)),
        ("2026-03-01 08:00:00", datetime(2026, 3, 1, 8, 0, tzinfo=UTC)),
        ("2026-03-01T16:00:00+0800", datetime(2026, 3, 1, 8, 0, tzinfo=UTC)),
        ("2026-03-01T16:00:00+08:00", datetime(2026, 3, 1, 8, 0, tzinfo=UTC)),
        ("2026-03-01T08:00:00.123456789Z", datetime(2026, 3, 1, 8, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_parse_container_time(text: str, expected: datetime) -> None:
    assert parse_container_time(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "1904-01-01T00:00:00.000000Z",
        "1970-01-01T00:00:00.000000Z",
        "0000-00-00 00:00:00",
        "2026-02-30T08:00:00Z",
        "2026-03-01T08:00:00+25:00",
        "0001-01-01T00:00:00+05:00",  # before the calendar once in UTC (an OverflowError)
        "9999-12-31T23:59:59-05:00",
        "yesterday",
        "",
    ],
)
def test_parse_container_time_absent(text: str) -> None:
    assert parse_container_time(text) is None


# --- NMEA ----------------------------------------------------------------------------------------

# Worked examples from the NMEA 0183 literature, with their published checksums.
RMC_1994 = "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A"
GGA_1994 = "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"


def sentence(body: str) -> str:
    """Wrap a sentence body with its checksum (XOR of the bytes between $ and *)."""
    checksum = reduce(lambda acc, ch: acc ^ ord(ch), body, 0)
    return f"${body}*{checksum:02X}"


def test_nmea_rmc_and_gga_of_one_epoch_make_one_fix() -> None:
    track = parse_nmea([RMC_1994, GGA_1994])
    assert track.source_format == "nmea"
    assert len(track.fixes) == 1
    fix = track.fixes[0]
    assert fix.lat == pytest.approx(48 + 7.038 / 60)
    assert fix.lon == pytest.approx(11 + 31.0 / 60)
    assert fix.alt == pytest.approx(545.4)
    assert fix.time == datetime(1994, 3, 23, 12, 35, 19, tzinfo=UTC)
    assert (track.bad_checksums, track.rejected) == (0, 0)


@pytest.mark.parametrize("altitude", ["nan", "inf", "-inf", "1e999"])
def test_an_altitude_that_is_no_number_loses_the_altitude_not_the_track(altitude: str) -> None:
    gga = sentence(f"GPGGA,123520,4807.040,N,01131.000,E,1,08,0.9,{altitude},M,46.9,M,,")
    track = parse_nmea([RMC_1994, GGA_1994, gga])
    assert len(track.fixes) == 2
    assert track.fixes[-1].alt is None and track.fixes[0].alt == pytest.approx(545.4)


def test_nmea_bad_and_missing_checksums_are_skipped_and_counted() -> None:
    corrupted = RMC_1994.replace("4807.038", "4807.039")
    unsummed = RMC_1994.split("*")[0]
    good = sentence("GPRMC,123520,A,4807.040,N,01131.000,E,022.4,084.4,230394,003.1,W")
    track = parse_nmea([corrupted, unsummed, good])
    assert track.bad_checksums == 2
    assert [f.time for f in track.fixes] == [datetime(1994, 3, 23, 12, 35, 20, tzinfo=UTC)]


def test_nmea_skips_proprietary_void_and_other_sentences() -> None:
    lines = [
        "$PTNTHPR,254.7,N,-1.7,N,-12.1,N,A*6E",
        "$PTNTHPR,garbage-checksum*00",
        sentence("GPGSV,1,1,01,01,40,083,46"),
        sentence("GPRMC,123521,V,4807.040,N,01131.000,E,,,230394,,"),
        sentence("GPGGA,123522,4807.040,N,01131.000,E,0,00,,,M,,M,,"),
        sentence("GPGGA,123523,9107.040,N,01131.000,E,1,08,0.9,5.0,M,,M,,"),
        RMC_1994,
    ]
    track = parse_nmea(lines)
    assert len(track.fixes) == 1
    assert track.bad_checksums == 0
    assert track.rejected == 3


def test_nmea_gga_takes_date_of_last_rmc_and_rolls_over_midnight() -> None:
    lines = [
        sentence("GPGGA,235958,3114.000,N,12128.000,E,1,08,0.9,5.0,M,,M,,"),  # before any RMC
        sentence("GNRMC,235959,A,3114.000,N,12128.000,E,0.0,0.0,280226,,,A"),
        sentence("BDGGA,000001,3114.001,S,12128.001,W,1,08,0.9,6.0,M,,M,,"),
        sentence("GPRMC,000002,A,3114.002,N,12128.002,E,0.0,0.0,010326,,,A"),
        sentence("GPGGA,000003,3114.003,N,12128.003,E,1,08,0.9,7.0,M,,M,,"),
    ]
    track = parse_nmea(lines)
    times = [f.time for f in track.fixes]
    assert times == [
        datetime(2026, 2, 28, 23, 59, 58, tzinfo=UTC),
        datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC),
        datetime(2026, 3, 1, 0, 0, 1, tzinfo=UTC),
        datetime(2026, 3, 1, 0, 0, 2, tzinfo=UTC),
        datetime(2026, 3, 1, 0, 0, 3, tzinfo=UTC),
    ]
    southwest = track.fixes[2]
    assert southwest.lat < 0
    assert southwest.lon < 0


def test_nmea_tolerates_trailing_dollar_after_checksum() -> None:
    assert len(parse_nmea([RMC_1994 + "$"]).fixes) == 1


def test_nmea_with_nothing_usable_raises() -> None:
    with pytest.raises(TrackParseError, match="1 bad checksums"):
        parse_nmea([RMC_1994.replace("*6A", "*6B"), "hello"])


# --- GPX -----------------------------------------------------------------------------------------

GPX11 = b"""<?xml version="1.0" encoding="UTF-8"?>
<gpx version="1.1" creator="t" xmlns="http://www.topografix.com/GPX/1/1">
 <wpt lat="1.0" lon="1.0"/>
 <trk><trkseg>
  <trkpt lat="31.2304" lon="121.4737"><ele>4.5</ele><time>2026-03-01T08:00:00Z</time></trkpt>
  <trkpt lat="31.2305" lon="121.4738"><time>2026-03-01T08:00:05Z</time></trkpt>
  <trkpt lat="95.0" lon="121.4738"><time>2026-03-01T08:00:10Z</time></trkpt>
 </trkseg></trk>
</gpx>"""


def test_gpx_11_track_points() -> None:
    track = parse_gpx(io.BytesIO(GPX11))
    assert track.source_format == "gpx"
    assert [(f.lat, f.lon) for f in track.fixes] == [(31.2304, 121.4737), (31.2305, 121.4738)]
    assert track.fixes[0].alt == 4.5
    assert track.fixes[1].alt is None
    assert track.fixes[1].time == datetime(2026, 3, 1, 8, 0, 5, tzinfo=UTC)
    assert track.rejected == 1


def test_gpx_10_route_points_when_no_track() -> None:
    gpx = b"""<gpx version="1.0" xmlns="http://www.topografix.com/GPX/1/0"><wpt lat="9" lon="9"/>
    <rte><rtept lat="1.5" lon="2.5"/><rtept lat="1.6" lon="2.6"/></rte></gpx>"""
    assert [(f.lat, f.lon) for f in parse_gpx(io.BytesIO(gpx)).fixes] == [(1.5, 2.5), (1.6, 2.6)]


def test_gpx_waypoints_as_last_resort() -> None:
    gpx = b'<gpx xmlns="http://www.topografix.com/GPX/1/1"><wpt lat="-1" lon="-2"/></gpx>'
    assert parse_gpx(io.BytesIO(gpx)).fixes == [Fix(-1.0, -2.0)]


@pytest.mark.parametrize(
    "document",
    [
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
        b'<gpx xmlns="http://www.topografix.com/GPX/1/1"><wpt lat="1" lon="1"><name>&lol2;</name>'
        b"</wpt></gpx>",
        b'<!doctype gpx SYSTEM "file:///etc/passwd"><gpx/>',
        b'<gpx xmlns="http://www.topografix.com/GPX/1/1"><!ENTITY x "y"></gpx>',
    ],
)
def test_gpx_with_dtd_or_entities_is_refused(document: bytes) -> None:
    with pytest.raises(TrackParseError, match="DOCTYPE or ENTITY"):
        parse_gpx(io.BytesIO(document))


def test_gpx_in_utf16_is_refused() -> None:
    document = '<gpx xmlns="http://www.topografix.com/GPX/1/1"/>'.encode("utf-16")
    with pytest.raises(TrackParseError, match="ASCII-compatible"):
        parse_gpx(io.BytesIO(document))


def test_gpx_over_size_cap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracks, "_MAX_TRACK_BYTES", len(GPX11) - 1)
    with pytest.raises(TrackParseError, match="larger than"):
        parse_gpx(io.BytesIO(GPX11))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"<gpx", "not well-formed"),
        (b'<kml xmlns="http://www.opengis.net/kml/2.2"/>', "not a GPX"),
        (
            b'<gpx xmlns="http://www.topografix.com/GPX/1/1"><wpt lat="x" lon="1"/></gpx>',
            "no usable",
        ),
    ],
)
def test_gpx_unusable(document: bytes, message: str) -> None:
    with pytest.raises(TrackParseError, match=message):
        parse_gpx(io.BytesIO(document))


# --- track helpers -------------------------------------------------------------------------------

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def make_track(*fixes: Fix) -> Track:
    return Track(list(fixes), "gpx")


def test_geojson_linestring_lon_lat_alt_and_times() -> None:
    track = make_track(Fix(31.0, 121.0, 4.0, T0), Fix(31.5, 121.5, 5.0, T0 + timedelta(seconds=1)))
    feature = track_to_geojson(track)
    assert feature["type"] == "Feature"
    assert feature["geometry"] == {
        "type": "LineString",
        "coordinates": [[121.0, 31.0, 4.0], [121.5, 31.5, 5.0]],
    }
    assert feature["properties"]["coordTimes"] == ["2026-03-01T08:00:00Z", "2026-03-01T08:00:01Z"]


def test_geojson_drops_altitude_unless_all_have_it_and_single_fix_is_point() -> None:
    mixed = track_to_geojson(make_track(Fix(1.0, 2.0, 3.0), Fix(1.5, 2.5)))
    assert mixed["geometry"]["coordinates"] == [[2.0, 1.0], [2.5, 1.5]]
    assert mixed["properties"]["coordTimes"] == [None, None]
    single = track_to_geojson(make_track(Fix(1.0, 2.0)))
    assert single["geometry"] == {"type": "Point", "coordinates": [2.0, 1.0]}


def test_nearest_fix_within_and_beyond_gap() -> None:
    early = Fix(1.0, 1.0, None, T0)
    late = Fix(2.0, 2.0, None, T0 + timedelta(minutes=4))
    track = make_track(late, Fix(3.0, 3.0), early)
    assert nearest_fix(track, T0 + timedelta(minutes=1)) == early
    assert nearest_fix(track, T0 + timedelta(minutes=3)) == late
    assert nearest_fix(track, T0 + timedelta(minutes=15)) is None
    assert nearest_fix(track, T0 - timedelta(minutes=2), max_gap=timedelta(minutes=1)) is None
    assert nearest_fix(make_track(Fix(3.0, 3.0)), T0) is None


def test_nearest_fix_needs_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        nearest_fix(make_track(), datetime(2026, 3, 1))  # noqa: DTZ001


def test_bbox() -> None:
    fixes = [Fix(31.0, 121.5), Fix(30.5, 122.0), Fix(31.2, 121.0)]
    assert bbox(fixes) == (121.0, 30.5, 122.0, 31.2)
    with pytest.raises(ValueError, match="no fixes"):
        bbox([])


# --- file names ----------------------------------------------------------------------------------

LOCAL_0800 = datetime(2026, 3, 1, 8, 0)  # noqa: DTZ001 - names carry local time


@pytest.mark.parametrize(
    ("name", "pattern", "device", "officer", "started"),
    [
        ("A123456_123456_20260301080000_0001.MP4", "gat947", "A123456", "123456", LOCAL_0800),
        ("DSJ_A1234567_654321_20260301_080000.MP4", "gat947", "A1234567", "654321", LOCAL_0800),
        ("20260301080000_123456_0001.MP4", "stamp_officer", None, "123456", LOCAL_0800),
        ("DSJ_A1234567_20260301_080000.MP4", "dsj_device", "A1234567", None, LOCAL_0800),
        ("DSJ-X9Y8Z7W_20260301080000_0002.mp4", "dsj_device", "X9Y8Z7W", None, LOCAL_0800),
        ("VID_20260301_080000.mp4", "android", None, None, LOCAL_0800),
        ("IMG_20260301_080000_1.jpg", "android", None, None, LOCAL_0800),
        ("20260301_080000.mp4", "samsung", None, None, LOCAL_0800),
        ("2026-03-01 08.00.00.jpg", "dashed", None, None, LOCAL_0800),
        (
            "PXL_20260301_080000123.mp4",
            "pixel_utc",
            None,
            None,
            datetime(2026, 3, 1, 8, 0, 0, 123000, tzinfo=UTC),
        ),
        ("PXL_20260301_080000123.PORTRAIT.jpg", "pixel_utc", None, None, None),
    ],
)
def test_parse_capture_filename(
    name: str, pattern: str, device: str | None, officer: str | None, started: datetime | None
) -> None:
    info = parse_capture_filename(name)
    assert info is not None
    assert (info.pattern, info.device_id, info.officer_id, info.raw) == (
        pattern,
        device,
        officer,
        name,
    )
    if started is not None:
        assert info.started_at == started


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "../VID_20260301_080000.mp4",
        "dir/VID_20260301_080000.mp4",
        "..\\..\\VID_20260301_080000.mp4",
        "VID_20260301_080000.mp4\x00.exe",
        "VID_20261301_080000.mp4",
        "VID_20260230_080000.mp4",
        "VID_20260301_250000.mp4",
        "IMG_18990101_000000.jpg",
        "IMG_99990101_000000.jpg",
        "A123456_12345_20260301080000.MP4",
        "holiday.mp4",
        "",
        "VID_" + "1" * 300,
    ],
)
def test_parse_capture_filename_rejects(name: str) -> None:
    assert parse_capture_filename(name) is None


# --- capture time --------------------------------------------------------------------------------

GPS = datetime(2026, 3, 1, 0, 0, 10, tzinfo=UTC)
LOCAL = datetime(2026, 3, 1, 8, 0, 0)  # noqa: DTZ001 - EXIF local time, 10 s behind GPS
CONTAINER = datetime(2026, 3, 1, 0, 1, 0, tzinfo=UTC)
MANIFEST = datetime(2026, 3, 1, 0, 2, 0, tzinfo=UTC)
NAMED = FileNameInfo("A123456", "123456", datetime(2026, 3, 1, 8, 3, 0), "x.mp4")  # noqa: DTZ001


def resolve(
    *,
    photo: PhotoMeta | None = None,
    container: datetime | None = None,
    filename: FileNameInfo | None = None,
    manifest: datetime | None = None,
    gps: datetime | None = None,
    hint: timedelta | None = None,
    reference: datetime | None = None,
) -> timeplace.CaptureTime:
    return resolve_capture_time(
        photo=photo,
        container_time=container,
        filename=filename,
        manifest_start=manifest,
        gps_time=gps,
        local_offset_hint=hint,
        gps_reference=reference,
    )


def codes(result: timeplace.CaptureTime) -> list[str]:
    return [p.code for p in result.problems]


def test_order_of_trust() -> None:
    with_offset = PhotoMeta(datetime_original=LOCAL, offset_time_original="+08:00")
    naive = PhotoMeta(datetime_original=LOCAL)
    rest = {"container": CONTAINER, "filename": NAMED, "manifest": MANIFEST}

    def source(**inputs: object) -> str | None:
        return resolve(**{**rest, **inputs}).source  # type: ignore[arg-type]

    assert source(photo=with_offset, gps=GPS) == "gps"
    assert source(photo=with_offset) == "exif_offset"
    assert source(photo=naive) == "container"
    assert source(photo=naive, container=None, reference=GPS) == "exif_gps_offset"
    assert source(photo=naive, container=None) == "exif_local"
    assert source(container=None) == "filename"
    assert source(container=None, filename=None) == "manifest"
    nothing = resolve()
    assert (nothing.captured_at, nothing.source, codes(nothing)) == (
        None,
        None,
        ["capture_time_unknown"],
    )


def test_exif_offset_time_is_converted_to_utc() -> None:
    photo = PhotoMeta(datetime_original=LOCAL, offset_time_original="+08:00")
    result = resolve(photo=photo, container=CONTAINER)
    assert result.captured_at == datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    assert result.utc_offset == timedelta(hours=8)


def test_photo_gps_stamp_is_used_when_no_gps_time_given() -> None:
    photo = PhotoMeta(datetime_original=LOCAL, gps_datetime=GPS)
    result = resolve(photo=photo)
    assert (result.source, result.captured_at) == ("gps", GPS)
    assert result.utc_offset == timedelta(hours=8)
    assert codes(result) == []


@pytest.mark.parametrize(
    ("seconds_off", "skewed"), [(0, False), (119, False), (120, False), (121, True), (-300, True)]
)
def test_skew_threshold(seconds_off: int, skewed: bool) -> None:
    photo = PhotoMeta(datetime_original=LOCAL, offset_time_original="+08:00")
    device_utc = LOCAL.replace(tzinfo=UTC) - timedelta(hours=8)
    gps = device_utc + timedelta(seconds=seconds_off)
    result = resolve(photo=photo, gps=gps)
    assert result.captured_at == gps
    assert ("clock_skew" in codes(result)) is skewed
    assert result.device_clock_offset == (timedelta(seconds=seconds_off) if skewed else None)


def test_derived_offset_rounds_to_quarter_hours() -> None:
    india = PhotoMeta(datetime_original=datetime(2026, 3, 1, 13, 30, 40))  # noqa: DTZ001
    result = resolve(photo=india, gps=datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC))
    assert result.utc_offset == timedelta(hours=5, minutes=30)
    assert codes(result) == []


def test_derived_offset_with_residual_skew_is_flagged() -> None:
    photo = PhotoMeta(datetime_original=LOCAL + timedelta(minutes=6))
    result = resolve(photo=photo, gps=GPS)
    assert result.utc_offset == timedelta(hours=8)
    assert codes(result) == ["clock_skew"]
    assert result.device_clock_offset == timedelta(minutes=-6, seconds=10)


def test_difference_beyond_14_hours_is_skew_not_zone() -> None:
    # LOCAL is UTC+8, so a clock 30 h behind reads as UTC-22, which no zone is.
    photo = PhotoMeta(datetime_original=LOCAL - timedelta(hours=30))
    result = resolve(photo=photo, gps=GPS)
    assert result.utc_offset is None
    assert codes(result) == ["clock_skew"]
    assert result.device_clock_offset == GPS - (LOCAL - timedelta(hours=30)).replace(tzinfo=UTC)


def test_container_clock_is_checked_against_gps() -> None:
    result = resolve(container=CONTAINER, gps=GPS)
    assert result.source == "gps"
    assert codes(result) == []
    late = resolve(container=GPS + timedelta(hours=1), gps=GPS)
    assert late.device_clock_offset == timedelta(hours=-1)


def test_exif_gps_offset_from_reference_time() -> None:
    photo = PhotoMeta(datetime_original=LOCAL, subsec="5")
    result = resolve(photo=photo, reference=GPS + timedelta(minutes=5))
    assert result.source == "exif_gps_offset"
    assert result.utc_offset == timedelta(hours=8)
    assert result.captured_at == datetime(2026, 3, 1, 0, 0, 0, 500000, tzinfo=UTC)


def test_local_times_default_to_shanghai_unless_hinted() -> None:
    default = resolve(filename=NAMED)
    assert default.captured_at == datetime(2026, 3, 1, 0, 3, tzinfo=UTC)
    assert default.utc_offset == timedelta(hours=8)
    assert codes(default) == ["utc_offset_assumed"]
    hinted = resolve(filename=NAMED, hint=timedelta(hours=-5))
    assert hinted.captured_at == datetime(2026, 3, 1, 13, 3, tzinfo=UTC)
    assert codes(hinted) == []
    pixel = FileNameInfo(None, None, datetime(2026, 3, 1, 8, 3, tzinfo=UTC), "PXL_x")
    assert resolve(filename=pixel).captured_at == datetime(2026, 3, 1, 8, 3, tzinfo=UTC)


def test_non_utc_inputs_are_normalised() -> None:
    beijing = timezone(timedelta(hours=8))
    result = resolve(container=datetime(2026, 3, 1, 8, 1, tzinfo=beijing))
    assert result.captured_at == CONTAINER
    assert result.captured_at is not None
    assert result.captured_at.utcoffset() == timedelta(0)


def test_naive_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="container_time must be timezone-aware"):
        resolve(container=datetime(2026, 3, 1))  # noqa: DTZ001
