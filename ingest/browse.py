"""Finding items by case, officer, device, unit, time, place, status and kind, for the web's
search page, in capture-time order, keeping only what the caller may see.

(The search API of the people/review work will be the general one, with cursors; this keeps
the page useful until it lands and takes the same filters.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ingest.timeline import Recording, cases_of_items, recordings_of
from storage.tables import Device, Item, ItemCase, Person

__all__ = ["ItemFilters", "find_items", "parse_bbox"]

KINDS = ("video", "audio", "image")
BATCH = 500


@dataclass(frozen=True)
class ItemFilters:
    case: str | None = None
    officer: str | None = None
    device: str | None = None
    unit: str | None = None
    start: datetime | None = None
    """Captured at or after (aware)."""
    end: datetime | None = None
    """Captured before (aware)."""
    bbox: tuple[float, float, float, float] | None = None
    """West, south, east, north (degrees): the item's GPS position lies inside."""
    status: str | None = None
    media_type: str | None = None
    """video, audio, image, or a full MIME type."""

    @property
    def empty(self) -> bool:
        return all(v is None for v in vars(self).values())


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``W,S,E,N`` in degrees; ValueError naming what is wrong."""
    parts = text.split(",")
    if len(parts) != 4:
        raise ValueError("bbox needs four numbers: W,S,E,N")
    w, s, e, n = (float(p) for p in parts)
    if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s <= n <= 90):
        raise ValueError("bbox must be W,S,E,N with -180..180 and -90 <= S <= N <= 90")
    return w, s, e, n


def _in_bbox(item: Item, bbox: tuple[float, float, float, float]) -> bool:
    if not item.gps_lat or not item.gps_lon:
        return False
    try:
        lat, lon = float(item.gps_lat), float(item.gps_lon)
    except ValueError:
        return False
    w, s, e, n = bbox
    inside_lon = w <= lon <= e if w <= e else lon >= w or lon <= e  # across the antimeridian
    return s <= lat <= n and inside_lon


def find_items(
    session: Session,
    *,
    filters: ItemFilters,
    visible: Callable[[Item, list[str]], bool],
    limit: int = 200,
) -> tuple[list[tuple[Recording, list[str]]], bool]:
    """Up to ``limit`` items that match and that ``visible(item, case_ids)`` allows, by
    capture time (undated last), each with its case IDs; and whether there were more."""
    stmt = select(Item)
    f = filters
    if f.case:
        stmt = stmt.join(ItemCase, ItemCase.item_id == Item.id).where(ItemCase.case_id == f.case)
    if f.officer:
        stmt = stmt.where(Item.officer_id == f.officer)
    if f.device:
        stmt = stmt.where(Item.device_id == f.device)
    if f.unit:
        stmt = stmt.where(
            or_(
                Item.officer_id.in_(select(Person.id).where(Person.unit == f.unit)),
                Item.device_id.in_(select(Device.id).where(Device.unit == f.unit)),
            )
        )
    if f.start:
        stmt = stmt.where(Item.captured_at >= f.start)
    if f.end:
        stmt = stmt.where(Item.captured_at < f.end)
    if f.status:
        stmt = stmt.where(Item.status == f.status)
    if f.media_type:
        pattern = f"{f.media_type}/%" if "/" not in f.media_type else f.media_type
        stmt = stmt.where(Item.media_type.like(pattern))
    stmt = stmt.order_by(Item.captured_at.is_(None), Item.captured_at, Item.id)
    found: list[Item] = []
    cases: dict[str, list[str]] = {}
    offset = 0
    while len(found) <= limit:
        batch = list(session.scalars(stmt.offset(offset).limit(BATCH)))
        if not batch:
            break
        offset += len(batch)
        links = cases_of_items(session, [i.id for i in batch])
        for item in batch:
            if f.bbox and not _in_bbox(item, f.bbox):
                continue
            if visible(item, links[item.id]):
                found.append(item)
                cases[item.id] = links[item.id]
    more = len(found) > limit
    found = found[:limit]
    return [(r, cases[r.item_id]) for r in recordings_of(session, found)], more
