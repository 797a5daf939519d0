"""The index queries of ``liuhen verify`` (ingest/verify/): read-only, batched, typed."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.orm import Session

from storage.tables import Checkpoint, CustodyEvent, Derivative, Item, ItemCase, LogLeaf, LogState


@dataclass
class LeafPointers:
    """Index rows that point at leaves, by the leaf index they point at."""

    items: dict[int, Item] = field(default_factory=dict)
    custody: dict[int, CustodyEvent] = field(default_factory=dict)
    derivatives: dict[int, Derivative] = field(default_factory=dict)

    def owner(self, idx: int, row: LogLeaf | None) -> str | None:
        """The item a leaf index belongs to, by the rows that point at it."""
        if idx in self.items:
            return self.items[idx].id
        for pointer in (self.custody.get(idx), self.derivatives.get(idx)):
            if pointer is not None:
                return pointer.item_id
        return row.item_id if row is not None else None


@dataclass(frozen=True)
class LogEnd:
    """What the index says about the end of the log, read in one statement."""

    size: int
    """log_state's size."""
    rows: int
    """How many leaf rows there are."""
    last: int | None
    """The highest leaf row index."""
    pointed: int
    """The highest leaf index an item, custody or derivative row points at (-1: none)."""


def pointers_between(session: Session, *, start: int, stop: int) -> LeafPointers:
    """Every index row that points at a leaf in [start, stop)."""

    def where(column: Any) -> Any:
        return (column >= start) & (column < stop)

    return LeafPointers(
        items={i.log_index: i for i in session.scalars(select(Item).where(where(Item.log_index)))},
        custody={
            e.log_index: e
            for e in session.scalars(select(CustodyEvent).where(where(CustodyEvent.log_index)))
        },
        derivatives={
            d.log_index: d
            for d in session.scalars(select(Derivative).where(where(Derivative.log_index)))
        },
    )


def count_items_below(session: Session, *, below: int) -> int:
    return int(
        session.execute(
            select(func.count()).select_from(Item).where(Item.log_index < below)
        ).scalar_one()
    )


def items_after(
    session: Session, *, after: str, below: int, limit: int
) -> tuple[list[Item], dict[str, list[str]]]:
    """Up to ``limit`` items logged below ``below`` with IDs after ``after``, in ID order,
    with the case IDs each is linked to."""
    items = list(
        session.scalars(
            select(Item)
            .where(Item.id > after, Item.log_index < below)
            .order_by(Item.id)
            .limit(limit)
        )
    )
    links: dict[str, list[str]] = {i.id: [] for i in items}
    for item_id, case_id in session.execute(
        select(ItemCase.item_id, ItemCase.case_id).where(ItemCase.item_id.in_(list(links)))
    ):
        links[item_id].append(case_id)
    return items, links


def derivatives_of_items(session: Session, *, item_ids: list[str]) -> dict[str, list[Derivative]]:
    found: dict[str, list[Derivative]] = {i: [] for i in item_ids}
    for d in session.scalars(select(Derivative).where(Derivative.item_id.in_(item_ids))):
        found[d.item_id].append(d)
    return found


def log_end(session: Session) -> LogEnd:
    """log_state, the leaf rows and the pointers at them, in one statement (so a seal
    committing meanwhile cannot make them disagree)."""

    def top(column: Any) -> Any:
        return select(func.max(column)).scalar_subquery()

    size, rows, last, *pointers = session.execute(
        select(
            select(LogState.size).where(LogState.id == 1).scalar_subquery(),
            select(func.count()).select_from(LogLeaf).scalar_subquery(),
            top(LogLeaf.idx),
            top(Item.log_index),
            top(CustodyEvent.log_index),
            top(Derivative.log_index),
        )
    ).one()
    pointed = max((p for p in pointers if p is not None), default=-1)
    return LogEnd(size=int(size or 0), rows=int(rows), last=last, pointed=int(pointed))


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """A read that sees one moment (SQLite transactions are already serialised here)."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def links_and_later_leaves(
    conn: Connection, *, item_id: str, from_index: int
) -> tuple[set[str], Sequence[str]]:
    """An item's case links now, and its leaves from ``from_index`` on, in one snapshot."""
    linked = set(conn.scalars(select(ItemCase.case_id).where(ItemCase.item_id == item_id)))
    later = conn.scalars(
        select(LogLeaf.data)
        .where(LogLeaf.item_id == item_id, LogLeaf.idx >= from_index)
        .order_by(LogLeaf.idx)
    ).all()
    return linked, later


def items_by_id(session: Session, *, item_ids: list[str]) -> list[Item]:
    return list(session.scalars(select(Item).where(Item.id.in_(item_ids))))


def all_checkpoints(session: Session) -> list[Checkpoint]:
    return list(session.scalars(select(Checkpoint).order_by(Checkpoint.size)))


def leaves_of_items(session: Session, *, item_ids: list[str], below: int) -> list[LogLeaf]:
    """Every leaf (item, derivative, custody) of these items below ``below``, in log order."""
    return list(
        session.scalars(
            select(LogLeaf)
            .where(LogLeaf.item_id.in_(item_ids), LogLeaf.idx < below)
            .order_by(LogLeaf.idx)
        )
    )
