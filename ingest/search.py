"""Search: items by case, officer, device, unit, time window, place, status and media type,
in capture-time order, a page at a time.

* The time of an item is its ``captured_at``, or its ``received_at`` when the capture time
  is unknown; ``from`` / ``to`` filter on that time (``from`` inclusive, ``to`` exclusive).
* ``media_type`` is a MIME type (``video/mp4``) or just its kind (``video``, ``audio``,
  ``image``: every type of that kind).
* ``bbox`` (W,S,E,N in decimal degrees) matches items whose GPS point lies inside.
* Pages are keyset-paginated: the order is (time, item ID), and the cursor is an opaque
  token (base64url of that pair) meaning "after this one". New items never shift a page
  and none is seen twice.
* Only what the caller may see is searched (``access.visible``); there is no total count,
  so nothing tells a caller how many items it may not see. ``principal=None`` is the local
  operator (the CLI on the server), who sees everything.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Float, and_, cast, func, or_, select
from sqlalchemy.orm import Session

from ingest import access, catalog
from ingest.errors import InvalidInput
from ingest.people import Principal
from storage import people as store
from storage.tables import Item, ItemCase

MAX_LIMIT = 500
DEFAULT_LIMIT = 50


@dataclass(frozen=True)
class Filters:
    case: str | None = None
    officer: str | None = None
    device: str | None = None
    unit: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    bbox: tuple[Decimal, Decimal, Decimal, Decimal] | None = None
    status: str | None = None
    media_type: str | None = None


def parse_bbox(text: str | None) -> tuple[Decimal, Decimal, Decimal, Decimal] | None:
    if text is None:
        return None
    try:
        w, s, e, n = (Decimal(p.strip()) for p in text.split(","))
    except (ValueError, InvalidOperation):
        raise InvalidInput(f"bbox {text!r} is not W,S,E,N in decimal degrees") from None
    if not all(v.is_finite() for v in (w, s, e, n)):  # NaN does not even compare
        raise InvalidInput(f"bbox {text!r}: every value must be a number")
    if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s <= n <= 90 and w <= e):
        raise InvalidInput(f"bbox {text!r}: need -180 <= W <= E <= 180 and -90 <= S <= N <= 90")
    return w, s, e, n


def parse_time(text: str | None, what: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{what} {text!r} is not an ISO 8601 time") from None
    if value.tzinfo is None:
        raise InvalidInput(f"{what} {text!r} has no time zone (add Z or +08:00)")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+08:00 is before the calendar's first UTC day
        raise InvalidInput(f"{what} {text!r} is outside the calendar") from None


def encode_cursor(at: datetime, item_id: str) -> str:
    raw = json.dumps([at.astimezone(UTC).isoformat(), item_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, item_id = json.loads(raw)
        moment = datetime.fromisoformat(at)
        if moment.tzinfo is None or not isinstance(item_id, str):
            raise ValueError(cursor)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise InvalidInput("the cursor is not one this server handed out") from None
    return moment, item_id


def _time() -> Any:
    return func.coalesce(Item.captured_at, Item.received_at)


def search(
    session: Session,
    *,
    principal: Principal | None,
    filters: Filters,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
    now: datetime | None = None,
) -> dict[str, Any]:
    """``{"items": [summary, ...], "next": cursor | None}``."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be 1..{MAX_LIMIT}, got {limit}")
    now = now or datetime.now(UTC)
    at = _time().label("t")
    stmt = select(Item, at)
    conds: list[Any] = []
    if principal is not None:
        conds.append(access.visible(principal, now))
    f = filters
    if f.case is not None:
        # IN, not a correlated EXISTS: SQLite does not flatten that and scanned every item.
        conds.append(Item.id.in_(select(ItemCase.item_id).where(ItemCase.case_id == f.case)))
    if f.officer is not None:
        conds.append(Item.officer_id == f.officer)
    if f.device is not None:
        conds.append(Item.device_id == f.device)
    if f.unit is not None:
        conds.append(store.item_unit_expr() == f.unit)
    if f.status is not None:
        conds.append(Item.status == f.status)
    if f.media_type is not None:
        if "/" in f.media_type:
            conds.append(Item.media_type == f.media_type)
        else:  # a kind: video, audio, image (a prefix: right under every collation)
            conds.append(Item.media_type.startswith(f"{f.media_type}/", autoescape=True))
    if f.start is not None:
        conds.append(_time() >= f.start)
    if f.end is not None:
        conds.append(_time() < f.end)
    if f.bbox is not None:
        w, s, e, n = f.bbox
        lat, lon = cast(Item.gps_lat, Float), cast(Item.gps_lon, Float)
        conds += [
            Item.gps_lat.is_not(None),
            Item.gps_lon.is_not(None),
            lon >= float(w),
            lon <= float(e),
            lat >= float(s),
            lat <= float(n),
        ]
    if cursor is not None:
        after_t, after_id = decode_cursor(cursor)
        # The leading ``>=`` bounds the index range (with only the OR, PostgreSQL read every
        # row before the cursor and dropped them).
        conds.append(and_(_time() >= after_t, or_(_time() > after_t, Item.id > after_id)))
    if conds:
        stmt = stmt.where(and_(*conds))
    rows = session.execute(stmt.order_by(_time(), Item.id).limit(limit + 1)).all()
    page = rows[:limit]
    items = catalog.summaries(session, [item for item, _ in page])
    nxt = None
    if len(rows) > limit:
        last_item, last_t = page[-1]
        nxt = encode_cursor(_aware(last_t), last_item.id)
    return {"items": items, "next": nxt}


def _aware(value: Any) -> datetime:
    """The time column as an aware UTC datetime (SQLite hands back text or naive values)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"unexpected time value {value!r}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
