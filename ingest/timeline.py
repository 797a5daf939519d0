"""A case in time order: each officer's recordings, the gaps between them and the overlaps.

The full-process record (执法全过程记录) is complete only when the recordings cover the whole
action. Within one case, the recordings of one officer are laid end to end by capture time; a
pause longer than a threshold is a **gap**, a recording that starts before the previous one
ended is an **overlap** (two devices, or a clock that is off). Photos and GPS tracks are
shown on the timeline but cover no time, so they neither open nor close a gap.

``find_breaks`` is the pure rule (unit-tested); ``case_timeline`` loads a case for it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage import repository as repo
from storage.tables import Derivative, Item

__all__ = [
    "THUMB_ROLES",
    "CaseTimeline",
    "Gap",
    "Overlap",
    "Recording",
    "SkewWarning",
    "case_timeline",
    "cases_of_items",
    "find_breaks",
    "recordings_of",
    "skew_warnings",
]

THUMB_ROLES = ("thumb-000", "display", "waveform")
"""Derivatives that can stand for an item in a list, best first."""


@dataclass(frozen=True)
class Recording:
    """One item as placed on a timeline."""

    item_id: str
    officer_id: str | None
    device_id: str | None
    media_type: str
    status: str
    start: datetime | None
    """Capture time (UTC); None when nothing told it."""
    end: datetime | None
    """Capture end, else start + duration, else start (a photo)."""
    source: str | None
    """Where the capture time came from (gps, container, manifest, ...)."""
    problems: tuple[dict[str, str], ...] = ()
    device_clock_offset_ms: int | None = None
    original_name: str | None = None
    received_at: datetime | None = None
    thumb_role: str | None = None
    """The derivative to show for it in a list, when there is one."""

    @property
    def kind(self) -> str:
        """video, audio, image or other (a GPS track, an unknown file)."""
        head = self.media_type.split("/", 1)[0]
        return head if head in ("video", "audio", "image") else "other"

    @property
    def covers_time(self) -> bool:
        """A video or audio recording with a known start: it can open or close a gap."""
        return self.kind in ("video", "audio") and self.start is not None

    @property
    def seconds(self) -> float:
        if self.start is None or self.end is None:
            return 0.0
        return max(0.0, (self.end - self.start).total_seconds())


@dataclass(frozen=True)
class Gap:
    """No recording of ``officer_id`` between ``start`` and ``end``."""

    officer_id: str | None
    after_item: str
    before_item: str
    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True)
class Overlap:
    """Two recordings of ``officer_id`` both running between ``start`` and ``end``."""

    officer_id: str | None
    first_item: str
    second_item: str
    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True)
class SkewWarning:
    """A device clock that disagreed with the server or with GPS time."""

    item_id: str
    device_id: str | None
    offset_ms: int | None
    """Server (or GPS) time minus device time, when known."""
    code: str
    """``clock_skew`` (the pipeline found it) or ``device_clock_offset`` (upload time)."""


@dataclass(frozen=True)
class CaseTimeline:
    case_id: str
    title: str | None
    unit: str | None
    recordings: list[Recording]
    """Every item of the case, by capture time; undated ones last."""
    gaps: list[Gap]
    overlaps: list[Overlap]
    skews: list[SkewWarning]
    gap_threshold: timedelta
    sources: dict[str, int] = field(default_factory=dict)
    """How many items took their capture time from each source (``none``: no time)."""

    @property
    def start(self) -> datetime | None:
        return min((r.start for r in self.recordings if r.start), default=None)

    @property
    def end(self) -> datetime | None:
        return max((r.end for r in self.recordings if r.end), default=None)

    @property
    def officers(self) -> list[str | None]:
        """Officers in order of first appearance (None: not known)."""
        seen: dict[str | None, None] = {}
        for r in self.recordings:
            seen.setdefault(r.officer_id, None)
        return list(seen)


def find_breaks(
    recordings: Iterable[Recording], *, threshold: timedelta
) -> tuple[list[Gap], list[Overlap]]:
    """Gaps longer than ``threshold`` and overlaps, per officer, in time order.

    Each officer's time-covering recordings are sorted by start; the running end is the
    latest end so far, so a short clip inside a long one makes an overlap and no gap.
    """
    lanes: dict[str | None, list[tuple[datetime, datetime, str]]] = {}
    for r in recordings:
        if r.covers_time and r.start is not None:
            end = r.end if r.end is not None and r.end >= r.start else r.start
            lanes.setdefault(r.officer_id, []).append((r.start, end, r.item_id))
    gaps: list[Gap] = []
    overlaps: list[Overlap] = []
    for officer, lane in lanes.items():
        lane.sort()
        latest_end, latest_id = lane[0][1], lane[0][2]
        for start, end, item_id in lane[1:]:
            if start - latest_end > threshold:
                gaps.append(Gap(officer, latest_id, item_id, latest_end, start))
            elif start < latest_end and min(latest_end, end) > start:
                overlaps.append(Overlap(officer, latest_id, item_id, start, min(latest_end, end)))
            if end > latest_end:
                latest_end, latest_id = end, item_id
    gaps.sort(key=lambda g: (g.start, g.officer_id or ""))
    overlaps.sort(key=lambda o: (o.start, o.officer_id or ""))
    return gaps, overlaps


def skew_warnings(recordings: Iterable[Recording], *, threshold: timedelta) -> list[SkewWarning]:
    """Items whose device clock was found off: a ``clock_skew`` problem, or an offset at
    upload beyond ``threshold``."""
    out: list[SkewWarning] = []
    limit_ms = threshold.total_seconds() * 1000
    for r in recordings:
        if any(p.get("code") == "clock_skew" for p in r.problems):
            out.append(SkewWarning(r.item_id, r.device_id, r.device_clock_offset_ms, "clock_skew"))
        elif r.device_clock_offset_ms is not None and abs(r.device_clock_offset_ms) > limit_ms:
            out.append(
                SkewWarning(r.item_id, r.device_id, r.device_clock_offset_ms, "device_clock_offset")
            )
    return out


def _end_of(item: Item) -> datetime | None:
    if item.captured_at is None:
        return None
    if item.captured_end is not None and item.captured_end >= item.captured_at:
        return item.captured_end
    duration = (item.media or {}).get("duration")
    if isinstance(duration, int | float) and duration > 0:
        return item.captured_at + timedelta(seconds=float(duration))
    return item.captured_at


def _media_type(item: Item) -> str:
    probed = (item.media or {}).get("media_type")
    return probed if isinstance(probed, str) and probed else item.media_type


def recordings_of(session: Session, items: Sequence[Item]) -> list[Recording]:
    """Items as recordings, with the best list picture of each (one query for all)."""
    ids = [i.id for i in items]
    thumbs: dict[str, set[str]] = {}
    for start in range(0, len(ids), 500):
        rows = session.execute(
            select(Derivative.item_id, Derivative.role).where(
                Derivative.item_id.in_(ids[start : start + 500]),
                Derivative.role.in_(THUMB_ROLES),
            )
        )
        for item_id, role in rows:
            thumbs.setdefault(item_id, set()).add(role)
    out = []
    for item in items:
        have = thumbs.get(item.id, set())
        out.append(
            Recording(
                item_id=item.id,
                officer_id=item.officer_id,
                device_id=item.device_id,
                media_type=_media_type(item),
                status=item.status,
                start=item.captured_at,
                end=_end_of(item),
                source=item.captured_at_source,
                problems=tuple(item.problems or ()),
                device_clock_offset_ms=item.device_clock_offset_ms,
                original_name=item.original_name,
                received_at=item.received_at,
                thumb_role=next((r for r in THUMB_ROLES if r in have), None),
            )
        )
    return out


def case_timeline(
    session: Session, *, case_id: str, gap_threshold: timedelta, skew_threshold: timedelta
) -> CaseTimeline:
    """The case's items on a timeline. Raises storage NotFound for an unknown case."""
    case = repo.get_case(session, case_id=case_id)
    items = repo.items_of_case(session, case_id=case_id)
    recordings = recordings_of(session, items)
    gaps, overlaps = find_breaks(recordings, threshold=gap_threshold)
    sources = Counter(r.source or "none" for r in recordings)
    return CaseTimeline(
        case_id=case.id,
        title=case.title,
        unit=case.unit,
        recordings=recordings,
        gaps=gaps,
        overlaps=overlaps,
        skews=skew_warnings(recordings, threshold=skew_threshold),
        gap_threshold=gap_threshold,
        sources=dict(sources.most_common()),
    )


def cases_of_items(session: Session, item_ids: Sequence[str]) -> dict[str, list[str]]:
    """Case IDs of each item (one query per 500 items)."""
    return repo.case_ids_of_items(session, item_ids)
