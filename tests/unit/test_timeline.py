"""Gaps and overlaps between one officer's recordings (pure; no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ingest.timeline import Recording, find_breaks, skew_warnings

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def rec(
    item_id: str,
    start_s: float | None,
    length_s: float = 60,
    *,
    officer: str | None = "p1",
    media_type: str = "video/mp4",
    **kw: object,
) -> Recording:
    start = None if start_s is None else T0 + timedelta(seconds=start_s)
    end = None if start is None else start + timedelta(seconds=length_s)
    return Recording(
        item_id=item_id,
        officer_id=officer,
        device_id="cam",
        media_type=media_type,
        status="ready",
        start=start,
        end=end,
        source="container",
        **kw,  # type: ignore[arg-type]
    )


def test_a_pause_over_the_threshold_is_a_gap_and_one_under_it_is_not() -> None:
    gaps, overlaps = find_breaks(
        [rec("a", 0), rec("b", 90), rec("c", 400)], threshold=MINUTE
    )  # pauses: 30 s (no), 250 s (yes)
    assert [(g.after_item, g.before_item, g.seconds) for g in gaps] == [("b", "c", 250.0)]
    assert gaps[0].start == T0 + timedelta(seconds=150)
    assert overlaps == []


def test_exactly_the_threshold_is_not_a_gap() -> None:
    gaps, _ = find_breaks([rec("a", 0), rec("b", 120)], threshold=MINUTE)
    assert gaps == []


def test_order_of_input_does_not_matter_and_officers_are_separate() -> None:
    recs = [rec("c", 400), rec("x", 100, officer="p2"), rec("a", 0), rec("y", 900, officer="p2")]
    gaps, _ = find_breaks(recs, threshold=MINUTE)
    assert [(g.officer_id, g.after_item, g.before_item) for g in gaps] == [
        ("p1", "a", "c"),
        ("p2", "x", "y"),
    ]


def test_a_clip_inside_a_long_one_is_an_overlap_and_opens_no_gap() -> None:
    # a runs 0-600 s; b (100-160 s) lies inside it; c starts at 620 s: 20 s after a ended.
    gaps, overlaps = find_breaks(
        [rec("a", 0, 600), rec("b", 100, 60), rec("c", 620)], threshold=MINUTE
    )
    assert gaps == []
    assert [(o.first_item, o.second_item, o.seconds) for o in overlaps] == [("a", "b", 60.0)]


def test_overlap_of_two_devices_is_the_shared_time() -> None:
    _, overlaps = find_breaks([rec("a", 0, 60), rec("b", 50, 60)], threshold=MINUTE)
    assert [(o.start, o.end) for o in overlaps] == [
        (T0 + timedelta(seconds=50), T0 + timedelta(seconds=60))
    ]


def test_photos_tracks_and_undated_items_neither_open_nor_close_gaps() -> None:
    recs = [
        rec("a", 0),
        rec("photo", 300, 0, media_type="image/jpeg"),
        rec("track", 300, 600, media_type="application/gpx+xml"),
        rec("undated", None),
        rec("b", 700),
    ]
    gaps, _ = find_breaks(recs, threshold=MINUTE)
    assert [(g.after_item, g.before_item) for g in gaps] == [("a", "b")]


def test_audio_counts_as_recording() -> None:
    gaps, _ = find_breaks([rec("a", 0, media_type="audio/amr"), rec("b", 500)], threshold=MINUTE)
    assert len(gaps) == 1


def test_unknown_officer_has_a_lane_of_its_own() -> None:
    gaps, _ = find_breaks(
        [rec("a", 0, officer=None), rec("b", 500, officer=None)], threshold=MINUTE
    )
    assert gaps[0].officer_id is None


def test_skew_warnings_from_the_pipeline_and_from_the_upload_offset() -> None:
    recs = [
        rec("a", 0, problems=({"stage": "time", "code": "clock_skew", "message": "m"},)),
        rec("b", 0, device_clock_offset_ms=300_000),
        rec("c", 0, device_clock_offset_ms=-1_000),
    ]
    found = skew_warnings(recs, threshold=timedelta(seconds=120))
    assert [(w.item_id, w.code) for w in found] == [
        ("a", "clock_skew"),
        ("b", "device_clock_offset"),
    ]
