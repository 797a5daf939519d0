"""Typed keyword-only functions over the index. Callers own the transaction (``db.transaction``).

Uniqueness is enforced by the database (items by SHA-256, derivatives by item and role), never
by check-then-insert: a violation inside a savepoint becomes :class:`Conflict`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.errors import Conflict, NotFound
from storage.tables import (
    Base,
    Case,
    Checkpoint,
    CustodyEvent,
    Derivative,
    Device,
    Item,
    ItemCase,
    LogLeaf,
    LogState,
    LogTile,
    LogTree,
    Person,
)

# --- parties -------------------------------------------------------------------------------


def ensure_device(session: Session, *, device_id: str, now: datetime) -> None:
    insert_missing(session, Device, [device_id], now=now)


def ensure_person(session: Session, *, person_id: str, now: datetime) -> None:
    insert_missing(session, Person, [person_id], now=now)


def ensure_case(session: Session, *, case_id: str, now: datetime) -> None:
    insert_missing(session, Case, [case_id], now=now)


def insert_missing(
    session: Session, model: type[Device | Person | Case], ids: Sequence[str], *, now: datetime
) -> None:
    """Create the rows of ``ids`` that do not exist yet, in one statement: a row a concurrent
    writer created meanwhile is as good as ours (``ON CONFLICT DO NOTHING``, no savepoint)."""
    if not ids:
        return
    table = Base.metadata.tables[model.__tablename__]
    dialect = session.get_bind().dialect.name
    maker = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        maker(table).on_conflict_do_nothing(), [{"id": i, "created_at": now} for i in ids]
    )


# --- items ---------------------------------------------------------------------------------


def insert_item(session: Session, *, item: Item) -> None:
    """Insert a new item; :class:`Conflict` when its SHA-256 is already indexed."""
    try:
        with session.begin_nested():
            session.add(item)
    except IntegrityError as e:
        raise Conflict(f"an item with SHA-256 {item.sha256} exists") from e


def get_item(session: Session, *, item_id: str) -> Item:
    item = session.get(Item, item_id)
    if item is None:
        raise NotFound(f"no item {item_id!r}")
    return item


def find_item_by_sha256(session: Session, *, sha256: str) -> Item | None:
    return session.scalars(select(Item).where(Item.sha256 == sha256)).one_or_none()


def update_item(session: Session, *, item_id: str, **values: Any) -> None:
    session.execute(update(Item).where(Item.id == item_id).values(**values))


# --- cases ---------------------------------------------------------------------------------


def case_ids_of(session: Session, *, item_id: str) -> list[str]:
    rows = session.scalars(
        select(ItemCase.case_id).where(ItemCase.item_id == item_id).order_by(ItemCase.case_id)
    )
    return list(rows)


def case_ids_of_items(session: Session, item_ids: Sequence[str]) -> dict[str, list[str]]:
    """Case IDs of each item (one query per 500 items, not one per item)."""
    out: dict[str, list[str]] = {i: [] for i in item_ids}
    for start in range(0, len(item_ids), 500):
        rows = session.execute(
            select(ItemCase.item_id, ItemCase.case_id)
            .where(ItemCase.item_id.in_(item_ids[start : start + 500]))
            .order_by(ItemCase.case_id)
        )
        for item_id, case_id in rows:
            out[item_id].append(case_id)
    return out


def link_case(session: Session, *, item_id: str, case_id: str, actor: str, now: datetime) -> bool:
    """Link an item to a case; False when the link already existed."""
    ensure_case(session, case_id=case_id, now=now)
    try:
        with session.begin_nested():
            session.add(ItemCase(item_id=item_id, case_id=case_id, linked_at=now, linked_by=actor))
    except IntegrityError:
        return False
    return True


def unlink_case(session: Session, *, item_id: str, case_id: str) -> bool:
    result = session.execute(
        delete(ItemCase).where(ItemCase.item_id == item_id, ItemCase.case_id == case_id)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def get_case(session: Session, *, case_id: str) -> Case:
    case = session.get(Case, case_id)
    if case is None:
        raise NotFound(f"no case {case_id!r}")
    return case


def items_of_case(session: Session, *, case_id: str) -> Sequence[Item]:
    return session.scalars(
        select(Item)
        .join(ItemCase, ItemCase.item_id == Item.id)
        .where(ItemCase.case_id == case_id)
        .order_by(Item.captured_at.is_(None), Item.captured_at, Item.received_at, Item.id)
    ).all()


# --- derivatives ---------------------------------------------------------------------------


def derivatives_of(session: Session, *, item_id: str) -> Sequence[Derivative]:
    return session.scalars(
        select(Derivative).where(Derivative.item_id == item_id).order_by(Derivative.role)
    ).all()


def get_derivative(session: Session, *, item_id: str, role: str) -> Derivative:
    row = session.scalars(
        select(Derivative).where(Derivative.item_id == item_id, Derivative.role == role)
    ).one_or_none()
    if row is None:
        raise NotFound(f"item {item_id!r} has no derivative {role!r}")
    return row


def insert_derivatives(session: Session, *, rows: list[dict[str, Any]]) -> None:
    """Index an item's new derivatives in one statement (Core table, no savepoint); a role the
    item has already is a Conflict, and the caller's transaction is then rolled back."""
    if not rows:
        return
    try:
        session.execute(insert(Base.metadata.tables[Derivative.__tablename__]), rows)
    except IntegrityError as e:
        roles = ", ".join(sorted(str(r["role"]) for r in rows))
        raise Conflict(f"item {rows[0]['item_id']} already has one of {roles}") from e


# --- custody -------------------------------------------------------------------------------


def unlinks_from_case(session: Session, *, case_id: str) -> list[CustodyEvent]:
    """Every ``unlink`` custody event that took an item out of ``case_id``, in log order (the
    item may have been linked again since). Unlinks have a partial index of their own."""
    rows = session.scalars(
        select(CustodyEvent).where(CustodyEvent.action == "unlink").order_by(CustodyEvent.log_index)
    )
    return [e for e in rows if (e.details or {}).get("case_id") == case_id]


def custody_of(session: Session, *, item_id: str) -> Sequence[CustodyEvent]:
    return session.scalars(
        select(CustodyEvent).where(CustodyEvent.item_id == item_id).order_by(CustodyEvent.log_index)
    ).all()


def last_custody_hash(session: Session, *, item_id: str) -> str | None:
    return session.scalars(
        select(CustodyEvent.leaf_hash)
        .where(CustodyEvent.item_id == item_id)
        .order_by(CustodyEvent.log_index.desc())
        .limit(1)
    ).one_or_none()


def last_custody_hashes(session: Session, *, item_ids: list[str]) -> dict[str, str]:
    """For each item, the leaf hash its next custody leaf must name as ``prev``: the last
    custody leaf's, or the item leaf's when it has none yet."""
    last = (
        select(CustodyEvent.item_id, func.max(CustodyEvent.log_index).label("idx"))
        .where(CustodyEvent.item_id.in_(item_ids))
        .group_by(CustodyEvent.item_id)
        .subquery()
    )
    rows = session.execute(
        select(CustodyEvent.item_id, CustodyEvent.leaf_hash).join(
            last,
            (CustodyEvent.item_id == last.c.item_id) & (CustodyEvent.log_index == last.c.idx),
        )
    )
    prevs: dict[str, str] = {}
    for custody_item, custody_hash in rows:
        if custody_item is not None:
            prevs[custody_item] = custody_hash
    missing = [i for i in item_ids if i not in prevs]
    if missing:
        for item_id, item_leaf_hash in session.execute(
            select(Item.id, LogLeaf.leaf_hash)
            .join(LogLeaf, LogLeaf.idx == Item.log_index)
            .where(Item.id.in_(missing))
        ):
            prevs[item_id] = item_leaf_hash.hex()
    return prevs


def add_custody_rows(session: Session, *, rows: list[dict[str, Any]]) -> None:
    if rows:
        # The Core table: one executemany, not the ORM's bulk insert path.
        session.execute(insert(Base.metadata.tables[CustodyEvent.__tablename__]), rows)


def add_custody(session: Session, *, event: CustodyEvent) -> None:
    session.add(event)
    session.flush()


# --- the log -------------------------------------------------------------------------------


def next_log_index(session: Session) -> int:
    """Hand out the next dense leaf index. Locks the sequencer row until the transaction ends."""
    size = session.execute(
        update(LogState)
        .where(LogState.id == 1)
        .values(size=LogState.size + 1)
        .returning(LogState.size)
    ).scalar_one()
    return int(size) - 1


def reserve_log_indexes(session: Session, count: int) -> int:
    """Hand out count consecutive indexes at once; returns the first."""
    size = session.execute(
        update(LogState)
        .where(LogState.id == 1)
        .values(size=LogState.size + count)
        .returning(LogState.size)
    ).scalar_one()
    return int(size) - count


_INSERT_LEAF = "INSERT INTO log_leaves (idx, leaf_hash, data, kind, item_id, created_at) VALUES "
_INSERT_LEAF_SQLITE = _INSERT_LEAF + "(?, ?, ?, ?, ?, ?)"
_INSERT_LEAF_PSYCOPG = _INSERT_LEAF + "(%s, %s, %s, %s, %s, %s)"


def add_leaves(session: Session, *, rows: list[dict[str, Any]]) -> None:
    """Insert many leaf rows with the driver's executemany: the batch path of the log.

    SQLAlchemy's per-row parameter processing costs as much as the insert itself, so the rows
    go to the driver as they are; ``created_at`` is converted here the way ``UTCDateTime``
    stores it (naive UTC text on SQLite, an aware value elsewhere). A test reads them back.
    """
    if not rows:
        return
    conn = session.connection()
    sqlite = conn.dialect.name == "sqlite"
    sql = _INSERT_LEAF_SQLITE if sqlite else _INSERT_LEAF_PSYCOPG
    params = []
    stamps: dict[datetime, object] = {}  # a batch shares one time: convert it once
    for row in rows:
        at: datetime = row["created_at"]
        stamp = stamps.get(at)
        if stamp is None:
            utc = at.astimezone(UTC)
            stamp = stamps[at] = utc.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else utc
        params.append(
            (row["idx"], row["leaf_hash"], row["data"], row["kind"], row["item_id"], stamp)
        )
    conn.exec_driver_sql(sql, params)


def log_size(session: Session) -> int:
    return int(session.execute(select(LogState.size).where(LogState.id == 1)).scalar_one())


def add_leaf(session: Session, *, leaf: LogLeaf) -> None:
    session.add(leaf)
    session.flush()


def leaves_between(session: Session, *, start: int, stop: int) -> Sequence[LogLeaf]:
    return session.scalars(
        select(LogLeaf).where(LogLeaf.idx >= start, LogLeaf.idx < stop).order_by(LogLeaf.idx)
    ).all()


def leaf_rows_between(session: Session, *, start: int, stop: int) -> list[tuple[int, bytes, str]]:
    """``(idx, leaf_hash, data)`` of leaves start..stop-1 in order, as plain tuples: the
    signer reads thousands per checkpoint, and ORM objects cost several times the query."""
    rows = session.execute(
        select(LogLeaf.idx, LogLeaf.leaf_hash, LogLeaf.data)
        .where(LogLeaf.idx >= start, LogLeaf.idx < stop)
        .order_by(LogLeaf.idx)
    )
    return [(int(idx), bytes(digest), str(data)) for idx, digest, data in rows]


def get_leaf(session: Session, *, index: int) -> LogLeaf:
    leaf = session.get(LogLeaf, index)
    if leaf is None:
        raise NotFound(f"no log leaf {index}")
    return leaf


def latest_checkpoint(session: Session) -> Checkpoint | None:
    return session.scalars(select(Checkpoint).order_by(Checkpoint.size.desc()).limit(1)).first()


def checkpoints(session: Session) -> Sequence[Checkpoint]:
    return session.scalars(select(Checkpoint).order_by(Checkpoint.size)).all()


def get_checkpoint(session: Session, *, size: int) -> Checkpoint:
    cp = session.get(Checkpoint, size)
    if cp is None:
        raise NotFound(f"no checkpoint of size {size}")
    return cp


def add_checkpoint(session: Session, *, checkpoint: Checkpoint) -> None:
    session.add(checkpoint)
    session.flush()


# --- the log's tree (tiles and the signer's state) ---------------------------------------------


def log_tree_state(session: Session) -> tuple[int, bytes]:
    """How many leaves the stored tiles cover, and the root they give."""
    row = session.get(LogTree, 1)
    if row is None:
        raise NotFound("the log_tree row is missing (is the index migrated?)")
    return int(row.size), bytes(row.root_hash)


def read_tiles(
    session: Session, *, keys: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    """The stored tiles among ``keys`` (absent ones are left out)."""
    if not keys:
        return {}
    rows = session.execute(
        select(LogTile.level, LogTile.idx, LogTile.hashes).where(
            tuple_(LogTile.level, LogTile.idx).in_(list(keys))
        )
    )
    return {(int(level), int(idx)): bytes(hashes) for level, idx, hashes in rows}


def iter_tiles(session: Session, *, page: int = 256) -> Iterator[tuple[int, int, bytes]]:
    """Every stored tile ``(level, idx, hashes)`` in key order, ``page`` rows per query."""
    after = (-1, -1)
    while True:
        rows = session.execute(
            select(LogTile.level, LogTile.idx, LogTile.hashes)
            .where(tuple_(LogTile.level, LogTile.idx) > tuple_(*after))
            .order_by(LogTile.level, LogTile.idx)
            .limit(page)
        ).all()
        for level, idx, hashes in rows:
            yield int(level), int(idx), bytes(hashes)
        if len(rows) < page:
            return
        after = (int(rows[-1][0]), int(rows[-1][1]))


def advance_log_tree(session: Session, *, old_size: int, new_size: int, root_hash: bytes) -> bool:
    """Move the tree from ``old_size`` to ``new_size``; False if it is no longer at
    ``old_size`` (another signer got there first). Locks the row until the transaction ends."""
    moved = session.execute(
        update(LogTree)
        .where(LogTree.id == 1, LogTree.size == old_size)
        .values(size=new_size, root_hash=root_hash)
        .returning(LogTree.size)
    )
    return moved.first() is not None


def write_tiles(session: Session, *, tiles: Mapping[tuple[int, int], bytes]) -> None:
    """Store tiles, replacing what was stored under the same keys (the growing edge)."""
    if not tiles:
        return
    session.execute(delete(LogTile).where(tuple_(LogTile.level, LogTile.idx).in_(list(tiles))))
    session.execute(
        insert(LogTile),
        [{"level": level, "idx": idx, "hashes": data} for (level, idx), data in tiles.items()],
    )
