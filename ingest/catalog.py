"""The read side: the documents ``liuhen item``/``case`` and the API return."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ingest.retention import retention_document
from storage import people
from storage import repository as repo
from storage.tables import Checkpoint, Item

if TYPE_CHECKING:
    from ingest.runtime import Runtime


def _ts(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def logged_at(session: Session, log_index: int) -> datetime | None:
    """When the first checkpoint covering this leaf was signed."""
    return session.scalars(
        select(Checkpoint.created_at)
        .where(Checkpoint.size > log_index)
        .order_by(Checkpoint.size)
        .limit(1)
    ).first()


def item_summary(
    session: Session, item: Item, *, case_ids: list[str] | None = None
) -> dict[str, Any]:
    """The item in a list; ``case_ids`` when the caller read them for a whole page at once."""
    return {
        "id": item.id,
        "sha256": item.sha256,
        "size": item.size,
        "media_type": item.media_type,
        "status": item.status,
        "original_name": item.original_name,
        "device_id": item.device_id,
        "officer_id": item.officer_id,
        "captured_at": _ts(item.captured_at),
        "captured_at_source": item.captured_at_source,
        "received_at": _ts(item.received_at),
        "case_ids": repo.case_ids_of(session, item_id=item.id) if case_ids is None else case_ids,
        "log_index": item.log_index,
    }


def item_document(session: Session, item: Item) -> dict[str, Any]:
    gps = {"lat": item.gps_lat, "lon": item.gps_lon} if item.gps_lat and item.gps_lon else None
    derivatives = [
        {
            "role": d.role,
            "sha256": d.sha256,
            "size": d.size,
            "media_type": d.media_type,
            "recipe": d.recipe,
            "log_index": d.log_index,
            "created_at": _ts(d.created_at),
        }
        for d in repo.derivatives_of(session, item_id=item.id)
    ]
    custody = [
        {
            "action": e.action,
            "actor": e.actor,
            "at": _ts(e.at),
            "reason": e.reason,
            "details": e.details,
            "log_index": e.log_index,
            "leaf_hash": e.leaf_hash,
        }
        for e in repo.custody_of(session, item_id=item.id)
    ]
    leaf = repo.get_leaf(session, index=item.log_index)
    return {
        **item_summary(session, item),
        "problems": list(item.problems or []),
        "captured_end": _ts(item.captured_end),
        "device_clock_offset_ms": item.device_clock_offset_ms,
        "utc_offset_minutes": item.utc_offset_minutes,
        "gps": gps,
        "bbox": item.bbox,
        "media": item.media,
        "object_key": item.object_key,
        "version_id": item.version_id,
        "retain_until": _ts(item.retain_until),
        "leaf": leaf.data,
        "logged_at": _ts(logged_at(session, item.log_index)),
        "derivatives": derivatives,
        "custody": custody,
        "case_history": case_history(session, item_id=item.id),
        "unit": people.item_unit(session, item_id=item.id),
        "retention": retention_document(session, item),
    }


def case_history(session: Session, *, item_id: str) -> list[dict[str, Any]]:
    """Every case the item was ever put in or taken out of, oldest first, from its custody."""
    out: list[dict[str, Any]] = []
    for e in repo.custody_of(session, item_id=item_id):
        pairs: list[tuple[str, Any, str | None]]
        if e.action == "sealed":
            cases = (e.details or {}).get("case_ids") or []
            pairs = [("link", c, "linked at intake") for c in cases]
        elif e.action in ("link", "unlink"):
            pairs = [(e.action, (e.details or {}).get("case_id"), e.reason)]
        else:
            continue
        for action, case_id, reason in pairs:
            out.append(
                {
                    "case_id": case_id,
                    "action": action,
                    "actor": e.actor,
                    "at": _ts(e.at),
                    "reason": reason,
                    "log_index": e.log_index,
                }
            )
    return out


def case_document(session: Session, case_id: str) -> dict[str, Any]:
    case = repo.get_case(session, case_id=case_id)
    items = repo.items_of_case(session, case_id=case_id)
    return {
        "case_id": case.id,
        "title": case.title,
        "created_at": _ts(case.created_at),
        "unit": case.unit,
        "held": people.case_is_held(session, case_id=case.id),
        "items": summaries(session, items),
    }


def summaries(session: Session, items: Sequence[Item]) -> list[dict[str, Any]]:
    """``item_summary`` of each, their case IDs read in one query, not one per item."""
    cases = repo.case_ids_of_items(session, [i.id for i in items])
    return [item_summary(session, item, case_ids=cases[item.id]) for item in items]


def view_item(rt: Runtime, item_id: str, *, actor: str) -> dict[str, Any]:
    """The item document, after logging the view as custody (``liuhen item``, ``GET
    /v1/items/{id}``)."""
    from ingest.retrieve import log_read, resolve

    log_read(rt, resolve(rt, item_id), action="view", actor=actor)
    with rt.sessions() as session:
        return item_document(session, repo.get_item(session, item_id=item_id))


def item_receipt(rt: Runtime, item_id: str) -> dict[str, Any]:
    """A fresh C2SP tlog-proof for the item's leaf, with the exact leaf data it proves."""
    with rt.sessions() as session:
        item = repo.get_item(session, item_id=item_id)
        leaf = repo.get_leaf(session, index=item.log_index).data
    return {
        "id": item_id,
        "log_index": item.log_index,
        "leaf": leaf,
        "receipt": rt.ledger.receipt(item.log_index),
    }
