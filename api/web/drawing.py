"""Geometry for the SVG the pages draw on the server (no JavaScript, no tile server):
the case timeline, the map of a point or track, the supervision bar charts.

Everything here is pure: values in, shapes (numbers and labels) out; templates print them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from ingest.timeline import CaseTimeline

EARTH_RADIUS_M = 6_378_137.0  # WGS 84 semi-major axis, as Web Mercator uses
MAX_MERCATOR_LAT = 85.05112878


# --- the case timeline -----------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    item_id: str
    x: float
    w: float
    y: float
    kind: str
    status: str
    title: str


@dataclass(frozen=True)
class Span:
    """A gap or an overlap on a lane."""

    x: float
    w: float
    y: float
    label: str


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class Lane:
    y: float
    label: str


@dataclass(frozen=True)
class TimelineDrawing:
    width: float
    height: float
    left: float
    lanes: list[Lane]
    bars: list[Bar]
    gaps: list[Span]
    overlaps: list[Span]
    ticks: list[Tick]
    lane_height: float


_TICK_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
                 43200, 86400, 172800, 604800)  # fmt: skip


def nice_step_s(span_s: float, *, target_ticks: int = 6) -> int:
    """A round tick interval giving about ``target_ticks`` ticks over ``span_s`` seconds."""
    want = span_s / max(target_ticks, 1)
    week = _TICK_STEPS_S[-1]
    return next((s for s in _TICK_STEPS_S if s >= want), week * math.ceil(want / week))


def draw_timeline(
    timeline: CaseTimeline,
    *,
    officer_label: Callable[[str | None], str],
    time_label: Callable[[datetime, int], str],
    duration_label: Callable[[float], str],
    width: float = 1000,
    left: float = 130,
    lane_height: float = 34,
) -> TimelineDrawing | None:
    """One lane per officer; recordings as bars (at least 3 px wide), photos as thin marks,
    gaps and overlaps as spans. ``time_label(t, step_s)`` names a tick; None when no item
    has a capture time."""
    start, end = timeline.start, timeline.end
    if start is None or end is None:
        return None
    span_s = max((end - start).total_seconds(), 1.0)
    pad = timedelta(seconds=span_s * 0.02)
    try:
        t0, t1 = start - pad, end + pad
    except OverflowError:  # a time at the calendar's edge: nothing sensible to draw
        return None
    total = (t1 - t0).total_seconds()
    inner = width - left - 10

    def x_of(t: datetime) -> float:
        return left + inner * (t - t0).total_seconds() / total

    lanes: dict[str | None, float] = {}
    top = 24.0
    for i, officer in enumerate(timeline.officers):
        lanes[officer] = top + i * lane_height
    bars = []
    for r in timeline.recordings:
        if r.start is None:
            continue
        x = x_of(r.start)
        w = max(x_of(r.end or r.start) - x, 3.0)
        bars.append(
            Bar(
                r.item_id, x, w, lanes[r.officer_id], r.kind, r.status, r.original_name or r.item_id
            )
        )
    gaps = [
        Span(x_of(g.start), max(x_of(g.end) - x_of(g.start), 2.0), lanes[g.officer_id],
             duration_label(g.seconds))
        for g in timeline.gaps
    ]  # fmt: skip
    overlaps = [
        Span(x_of(o.start), max(x_of(o.end) - x_of(o.start), 2.0), lanes[o.officer_id],
             duration_label(o.seconds))
        for o in timeline.overlaps
    ]  # fmt: skip
    step = nice_step_s(total)
    first = math.ceil(t0.timestamp() / step) * step
    ticks = []
    tick = first
    while tick <= t1.timestamp():
        when = datetime.fromtimestamp(tick, tz=start.tzinfo)
        ticks.append(Tick(x_of(when), time_label(when, step)))
        tick += step
    height = top + max(len(lanes), 1) * lane_height + 4
    return TimelineDrawing(
        width,
        height,
        left,
        [Lane(y, officer_label(o)) for o, y in lanes.items()],
        bars,
        gaps,
        overlaps,
        ticks,
        lane_height,
    )


# --- the map ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MapPoint:
    x: float
    y: float
    label: str | None


@dataclass(frozen=True)
class MapDrawing:
    width: float
    height: float
    path: str
    """SVG path data of the track ('' for a single point)."""
    points: list[MapPoint]
    """Labelled fixes: start, end and a few between (capture-time labels)."""
    marker: MapPoint | None
    """The item's own position."""
    scale_px: float
    scale_label: str
    start: MapPoint | None
    end: MapPoint | None
    grid: list[GridLine]
    """Meridians and parallels at round degrees, for orientation (there is no base map)."""


@dataclass(frozen=True)
class GridLine:
    vertical: bool
    at: float
    """x of a meridian or y of a parallel, in pixels."""
    label: str


_GRID_STEPS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
               2.0, 5.0, 10.0, 20.0, 45.0)  # fmt: skip


def _inverse_mercator_lat(y: float) -> float:
    return math.degrees(2 * math.atan(math.exp(y / EARTH_RADIUS_M)) - math.pi / 2)


def _grid_step(span_deg: float, *, lines: int = 4) -> float:
    return next((s for s in _GRID_STEPS if span_deg / s <= lines), _GRID_STEPS[-1])


def _degrees(value: float, step: float, positive: str, negative: str) -> str:
    decimals = max(0, -math.floor(math.log10(step)))
    return f"{abs(value):.{decimals}f}°{positive if value >= 0 else negative}"


def mercator(lon: float, lat: float) -> tuple[float, float]:
    """Spherical (Web) Mercator, metres: x east, y north."""
    lat = max(-MAX_MERCATOR_LAT, min(MAX_MERCATOR_LAT, lat))
    x = math.radians(lon) * EARTH_RADIUS_M
    y = math.log(math.tan(math.pi / 4 + math.radians(lat) / 2)) * EARTH_RADIUS_M
    return x, y


def nice_length_m(limit_m: float) -> float:
    """The largest 1, 2 or 5 x 10^n metres not above ``limit_m``."""
    if limit_m <= 0:
        return 1.0
    exp = math.floor(math.log10(limit_m))
    for m in (5, 2, 1):
        if m * 10**exp <= limit_m:
            return float(m * 10**exp)
    return float(10 ** (exp - 1) * 5)


def _length_label(metres: float) -> str:
    return f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"


def draw_map(
    coords: Sequence[tuple[float, float]],
    *,
    times: Sequence[str | None] = (),
    marker: tuple[float, float] | None = None,
    width: float = 480,
    height: float = 300,
    margin: float = 30,
    min_extent_m: float | None = None,
    max_labels: int = 5,
) -> MapDrawing | None:
    """Project (lon, lat) fixes locally and fit them in the frame, north up, same scale on
    both axes. The scale bar is true at the centre latitude (Mercator stretches distances
    by 1/cos(lat)). ``times`` label fixes by index; None when there is nothing to draw.
    The frame spans at least ``min_extent_m`` (default 100 m for a track, 400 m around a
    lone point)."""
    if min_extent_m is None:
        min_extent_m = 100 if len(coords) >= 2 else 400
    everything = [*coords, *([marker] if marker else [])]
    if not everything:
        return None
    projected = [mercator(lon, lat) for lon, lat in everything]
    xs, ys = [p[0] for p in projected], [p[1] for p in projected]
    centre_lat = (min(lat for _, lat in everything) + max(lat for _, lat in everything)) / 2
    stretch = 1 / math.cos(math.radians(centre_lat))  # projected metres per ground metre
    min_extent = min_extent_m * stretch
    span_x = max(max(xs) - min(xs), min_extent)
    span_y = max(max(ys) - min(ys), min_extent)
    cx, cy = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    scale = min((width - 2 * margin) / span_x, (height - 2 * margin) / span_y)  # px / proj m

    def px(p: tuple[float, float]) -> tuple[float, float]:
        return (width / 2 + (p[0] - cx) * scale, height / 2 - (p[1] - cy) * scale)

    track = [px(p) for p in projected[: len(coords)]]
    path = ""
    if len(track) >= 2:
        path = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in track)
    points: list[MapPoint] = []
    labelled = [i for i, t in enumerate(times[: len(track)]) if t]
    if labelled:
        stride = max(1, math.ceil(len(labelled) / max_labels))
        chosen = labelled[::stride]
        if labelled[-1] not in chosen:
            chosen.append(labelled[-1])
        points = [MapPoint(*track[i], times[i]) for i in chosen]
    ground_per_px = 1 / (scale * stretch)  # ground metres per pixel at the centre latitude
    bar_m = nice_length_m(ground_per_px * width / 4)
    grid = _graticule(cx, cy, scale, width, height)
    return MapDrawing(
        width,
        height,
        path,
        points,
        MapPoint(*px(projected[-1]), None) if marker else None,
        bar_m / ground_per_px,
        _length_label(bar_m),
        MapPoint(*track[0], None) if track else None,
        MapPoint(*track[-1], None) if len(track) >= 2 else None,
        grid,
    )


def _graticule(cx: float, cy: float, scale: float, width: float, height: float) -> list[GridLine]:
    """Round meridians and parallels crossing the frame centred on projected (cx, cy)."""
    west = math.degrees((cx - width / 2 / scale) / EARTH_RADIUS_M)
    east = math.degrees((cx + width / 2 / scale) / EARTH_RADIUS_M)
    south = _inverse_mercator_lat(cy - height / 2 / scale)
    north = _inverse_mercator_lat(cy + height / 2 / scale)
    step = _grid_step(max(east - west, north - south))
    lines = []
    lon = math.ceil(west / step) * step
    while lon <= east:
        x = width / 2 + (mercator(lon, 0)[0] - cx) * scale
        lines.append(GridLine(True, x, _degrees(lon, step, "E", "W")))
        lon += step
    lat = math.ceil(south / step) * step
    while lat <= north:
        y = height / 2 - (mercator(0, lat)[1] - cy) * scale
        lines.append(GridLine(False, y, _degrees(lat, step, "N", "S")))
        lat += step
    return lines


def geojson_coords(doc: object) -> tuple[list[tuple[float, float]], list[str | None]]:
    """(lon, lat) pairs and their times from the ``track`` derivative (a GeoJSON Feature
    with a LineString or Point and ``coordTimes``); empty lists for anything else."""
    if not isinstance(doc, dict):
        return [], []
    geometry = doc.get("geometry")
    if not isinstance(geometry, dict):
        return [], []
    raw = geometry.get("coordinates")
    if geometry.get("type") == "Point":
        raw = [raw]
    if geometry.get("type") not in ("Point", "LineString") or not isinstance(raw, list):
        return [], []
    coords: list[tuple[float, float]] = []
    for pos in raw:
        if (
            isinstance(pos, list)
            and len(pos) >= 2
            and all(isinstance(v, int | float) for v in pos[:2])
        ):
            coords.append((float(pos[0]), float(pos[1])))
        else:
            return [], []
    props = doc.get("properties")
    times = props.get("coordTimes") if isinstance(props, dict) else None
    if not isinstance(times, list) or len(times) != len(coords):
        return coords, []
    return coords, [t if isinstance(t, str) else None for t in times]


# --- supervision bar charts ------------------------------------------------------------------


@dataclass(frozen=True)
class ChartBar:
    label: str
    y: float
    w: float
    value_label: str
    flagged: bool
    """Drawn as a warning (the officer has cases with recording gaps)."""


@dataclass(frozen=True)
class BarChart:
    width: float
    height: float
    left: float
    bars: list[ChartBar]
    bar_height: float


def draw_bars(
    rows: Sequence[tuple[str, float, str, bool]],
    *,
    width: float = 640,
    left: float = 120,
    right: float = 200,
    bar_height: float = 20,
) -> BarChart:
    """Horizontal bars, one per (label, value, value label, flagged), scaled to the largest
    value; a value above zero is at least 2 px long."""
    top = max((v for _, v, _, _ in rows), default=0.0)
    inner = width - left - right
    bars = []
    for i, (label, value, value_label, flagged) in enumerate(rows):
        w = max(inner * value / top, 2.0) if top > 0 and value > 0 else 0.0
        bars.append(ChartBar(label, 6 + i * (bar_height + 8), w, value_label, flagged))
    return BarChart(width, 12 + len(rows) * (bar_height + 8), left, bars, bar_height)
