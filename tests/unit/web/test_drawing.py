"""The SVG geometry: projection, scale bar, timeline and bars (pure)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from api.web.drawing import (
    draw_bars,
    draw_map,
    draw_timeline,
    geojson_coords,
    mercator,
    nice_length_m,
    nice_step_s,
)
from ingest.timeline import CaseTimeline, Recording, find_breaks

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def test_mercator_is_the_spherical_web_mercator() -> None:
    assert mercator(0, 0) == pytest.approx((0.0, 0.0), abs=1e-6)
    x, _ = mercator(180, 0)
    assert x == pytest.approx(math.pi * 6_378_137.0)
    _, y = mercator(0, 85.05112878)
    assert y == pytest.approx(math.pi * 6_378_137.0, rel=1e-6)


def test_nice_lengths_and_steps() -> None:
    assert nice_length_m(130) == 100
    assert nice_length_m(260) == 200
    assert nice_length_m(7000) == 5000
    assert nice_step_s(600) == 120
    assert nice_step_s(6) == 1
    century = 110 * 365 * 86400  # a case's items 1990 to 2100: still about six ticks, not 5,700
    assert 5 <= century / nice_step_s(century) <= 7 and nice_step_s(century) % 604800 == 0


def test_the_scale_bar_is_true_on_the_ground() -> None:
    # Two fixes 1 km apart east-west at 40.8° N (Hohhot): the bar's pixels per metre must
    # match the track's pixels per metre.
    lat = 40.8423
    dlon = 1000 / (111_320 * math.cos(math.radians(lat)))
    drawn = draw_map([(111.749, lat), (111.749 + dlon, lat)], times=["a", "b"])
    assert drawn is not None
    xs = [float(p.split(",")[0]) for p in drawn.path[1:].split(" L")]
    track_px_per_m = (xs[1] - xs[0]) / 1000
    metres = float(drawn.scale_label.split()[0]) * (1000 if "km" in drawn.scale_label else 1)
    assert drawn.scale_px / metres == pytest.approx(track_px_per_m, rel=0.01)
    assert [p.label for p in drawn.points] == ["a", "b"]


def test_north_is_up_and_the_track_fits_the_frame() -> None:
    drawn = draw_map([(10.0, 50.0), (10.0, 50.01), (10.02, 50.005)])
    assert drawn is not None
    pts = [tuple(map(float, p.split(","))) for p in drawn.path[1:].split(" L")]
    assert pts[1][1] < pts[0][1]  # further north is higher up the picture
    assert all(0 <= x <= drawn.width and 0 <= y <= drawn.height for x, y in pts)
    assert drawn.grid  # meridians and parallels for orientation


def test_a_lone_point_gets_a_frame_and_a_marker() -> None:
    drawn = draw_map([], marker=(111.749, 40.8423))
    assert drawn is not None and drawn.path == "" and drawn.marker is not None
    assert drawn.marker.x == pytest.approx(drawn.width / 2)
    assert draw_map([]) is None


def test_geojson_of_the_track_derivative() -> None:
    doc = {
        "type": "Feature",
        "geometry": {"type": "LineString", "coordinates": [[1, 2], [3, 4, 5]]},
        "properties": {"coordTimes": ["2026-03-01T08:00:00Z", None]},
    }
    assert geojson_coords(doc) == ([(1.0, 2.0), (3.0, 4.0)], ["2026-03-01T08:00:00Z", None])
    point = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}}
    assert geojson_coords(point) == ([(1.0, 2.0)], [])
    assert geojson_coords({"geometry": {"type": "LineString", "coordinates": [["x", 1]]}}) == (
        [],
        [],
    )
    assert geojson_coords("nonsense") == ([], [])


def _rec(item_id: str, start_s: float, length_s: float, officer: str) -> Recording:
    start = T0 + timedelta(seconds=start_s)
    return Recording(item_id, officer, "cam", "video/mp4", "ready", start,
                     start + timedelta(seconds=length_s), "container")  # fmt: skip


def test_timeline_lanes_bars_and_gaps_line_up() -> None:
    recs = [_rec("a", 0, 60, "p1"), _rec("b", 400, 60, "p1"), _rec("c", 0, 30, "p2")]
    gaps, overlaps = find_breaks(recs, threshold=timedelta(minutes=1))
    tl = CaseTimeline("C", None, None, recs, gaps, overlaps, [], timedelta(minutes=1))
    drawn = draw_timeline(
        tl, officer_label=str, time_label=lambda t, _s: t.strftime("%H:%M"),
        duration_label=lambda s: f"{s:.0f}",
    )  # fmt: skip
    assert drawn is not None
    assert [lane.label for lane in drawn.lanes] == ["p1", "p2"]
    a, b, c = drawn.bars
    assert a.y == b.y != c.y
    (gap,) = drawn.gaps
    assert gap.x == pytest.approx(a.x + a.w) and gap.x + gap.w == pytest.approx(b.x)
    assert gap.label == "340"
    assert all(drawn.left <= t.x <= drawn.width for t in drawn.ticks)


def test_bars_scale_to_the_largest() -> None:
    chart = draw_bars([("p1", 2.0, "2 h", True), ("p2", 1.0, "1 h", False), ("p3", 0, "0", False)])
    p1, p2, p3 = chart.bars
    assert p1.w == pytest.approx(2 * p2.w) and p3.w == 0 and p1.flagged


def test_a_time_at_the_calendars_edge_draws_no_timeline_rather_than_failing() -> None:
    edge = datetime(9999, 12, 31, 23, 0, tzinfo=UTC)
    recs = [Recording("x", "p1", "cam", "video/mp4", "ready", datetime(2026, 1, 1, tzinfo=UTC),
                      edge, "manifest")]  # fmt: skip
    tl = CaseTimeline("C", None, None, recs, [], [], [], timedelta(minutes=1))
    drawn = draw_timeline(
        tl, officer_label=str, time_label=lambda t, _s: t.isoformat(), duration_label=repr
    )
    assert drawn is None
