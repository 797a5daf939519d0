"""The rows of newly sealed items (one, or a group commit's batch), in a few Core statements.

Sealing runs under the log sequencer (and on SQLite the one write lock), so its statements are
the part of the API's work that does not spread over threads: each ORM flush and savepoint it
does not make is time another seal does not wait (``bench/scale.py``). A new item has no links,
custody events or hold yet, so nothing here reads before it writes; rows that may exist already
(devices, officers, cases) are inserted with ``ON CONFLICT DO NOTHING``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage import people
from storage.errors import Conflict
from storage.tables import Base, Case, Item, ItemCase, ItemHold, ItemUnit


def _table(model: type[Base]) -> Table:
    """A model's Core table: an insert of it is one executemany, not the ORM's bulk path."""
    return Base.metadata.tables[model.__tablename__]


_ITEMS = _table(Item)
_CASES = _table(Case)


def insert_items(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert several new items' rows in one executemany (a group commit); :class:`Conflict`
    when any SHA-256 is indexed already (the caller's transaction is then rolled back)."""
    try:
        session.execute(insert(_ITEMS), rows)
    except IntegrityError as e:
        shas = ", ".join(str(r["sha256"]) for r in rows)
        raise Conflict(f"an item with SHA-256 {shas} exists (one of them, for a batch)") from e


def link_many(session: Session, links: Sequence[tuple[str, Sequence[str], str, datetime]]) -> None:
    """Link several new items to their cases: ``(item_id, case_ids, actor, now)`` each."""
    rows = [
        {"item_id": item_id, "case_id": c, "linked_at": now, "linked_by": actor}
        for item_id, case_ids, actor, now in links
        for c in case_ids
    ]
    if rows:
        session.execute(insert(_table(ItemCase)), rows)


def stamp_units(session: Session, units: Sequence[tuple[str, str]]) -> None:
    if units:
        session.execute(
            insert(_table(ItemUnit)), [{"item_id": item_id, "unit": u} for item_id, u in units]
        )


def settle_case_units(session: Session, *, item_id: str, case_ids: Sequence[str]) -> None:
    """Cases without a unit take the new item's (``people.item_unit_expr``: the unit stamped
    at intake, else its device's, else its officer's): one UPDATE."""
    if not case_ids:
        return
    unit = select(people.item_unit_expr()).where(Item.id == item_id).scalar_subquery()
    session.execute(
        update(_CASES)
        .where(_CASES.c.id.in_(list(case_ids)), _CASES.c.unit.is_(None))
        .values(unit=unit)
    )


def hold(session: Session, *, item_id: str, now: datetime) -> None:
    """Record that a new item is under legal hold (the version got it on its PUT)."""
    session.execute(
        insert(_table(ItemHold)), [{"item_id": item_id, "held": True, "changed_at": now}]
    )
