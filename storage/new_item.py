"""The rows of newly sealed items (one, or a group commit's batch), in a few Core statements.

Sealing holds the log sequencer from its reservation to its commit (and on SQLite the one
write lock throughout), so its statements are the part of the API's work that does not spread
over threads: each ORM flush, savepoint and round trip it does not make is time another seal
does not wait (``bench/scale.py``); what needs no log index runs before the reservation
(``ingest.group_commit.write_many``). A new item has no links,
custody events or hold yet, so nothing here reads before it writes; rows that may exist already
(devices, officers, cases) are inserted with ``ON CONFLICT DO NOTHING``.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, insert, select, update
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


def provisional_log_index() -> int:
    """A placeholder for ``items.log_index`` until the sequencer hands out the real one in
    the same transaction (``set_log_indexes``): negative, so no committed row has it, and
    random, so two uncommitted batches never wait on each other's unique entry."""
    return -1 - secrets.randbits(62)


def set_log_indexes(session: Session, indexes: Sequence[tuple[str, int]]) -> None:
    """The new items' log indexes ``(item_id, index)``, in one executemany."""
    session.execute(
        update(_ITEMS).where(_ITEMS.c.id == bindparam("item")).values(log_index=bindparam("idx")),
        [{"item": item_id, "idx": index} for item_id, index in indexes],
    )


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


def settle_many_case_units(session: Session, links: Sequence[tuple[str, Sequence[str]]]) -> None:
    """Cases without a unit take the new items' (``people.item_unit_expr``: the unit stamped
    at intake, else its device's, else its officer's), ``(item_id, case_ids)`` in order, in
    one executemany: a case linked by several takes the first's."""
    rows = [{"case": c, "item": item_id} for item_id, case_ids in links for c in case_ids]
    if not rows:
        return
    unit = select(people.item_unit_expr()).where(Item.id == bindparam("item")).scalar_subquery()
    session.execute(
        update(_CASES)
        .where(_CASES.c.id == bindparam("case"), _CASES.c.unit.is_(None))
        .values(unit=unit),
        rows,
    )


def hold(session: Session, holds: Sequence[tuple[str, datetime]]) -> None:
    """Record that new items ``(item_id, now)`` are under legal hold (their versions got it
    on their PUT)."""
    if holds:
        session.execute(
            insert(_table(ItemHold)),
            [{"item_id": item_id, "held": True, "changed_at": now} for item_id, now in holds],
        )
