"""Custody events: who did what to an item. Each is a row and a log leaf whose ``prev`` is the
leaf hash of the item's previous custody leaf (the item leaf for the first), so every item
carries its own hash chain inside the global log.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from ingest.ledger import AppendedLeaf, Ledger
from integrity.errors import CanonicalJSONError
from integrity.leaves import custody_leaf
from storage import repository as repo
from storage.tables import CustodyEvent, Item


def record(
    session: Session,
    ledger: Ledger,
    *,
    item: Item,
    action: str,
    actor: str,
    now: datetime,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> AppendedLeaf:
    def build() -> dict[str, Any]:
        prev = repo.last_custody_hash(session, item_id=item.id) or item_leaf_hash(session, item)
        return custody_leaf(
            item_id=item.id,
            item_sha256=item.sha256,
            action=action,
            actor=actor,
            at=now,
            reason=reason,
            prev=prev,
            details=details,
        )

    leaf = ledger.append(session, kind="custody", item_id=item.id, build=build, now=now)
    repo.add_custody(
        session,
        event=CustodyEvent(
            item_id=item.id,
            action=action,
            actor=actor,
            at=now,
            reason=reason,
            details=details,
            log_index=leaf.index,
            leaf_hash=leaf.leaf_hash,
        ),
    )
    return leaf


def item_leaf_hash(session: Session, item: Item) -> str:
    return repo.get_leaf(session, index=item.log_index).leaf_hash.hex()


def record_many(
    session: Session,
    ledger: Ledger,
    *,
    items: Sequence[Item],
    action: str,
    actor: str,
    now: datetime,
    details: Callable[[Item], dict[str, Any] | None],
) -> list[str]:
    """One custody event for each of many items (a verification run), in one batch.

    The sequencer is locked before any ``prev`` is read, as in :func:`record`. Returns the IDs
    of the items whose event could not be built (e.g. an item row no longer a valid leaf
    field); those are left out, the others are logged.
    """
    repo.reserve_log_indexes(session, 0)  # take the sequencer lock first
    ids = [item.id for item in items]
    prevs = repo.last_custody_hashes(session, item_ids=ids)
    entries: list[tuple[str, str | None, dict[str, Any]]] = []
    built: list[tuple[Item, dict[str, Any] | None]] = []
    skipped: list[str] = []
    for item in items:
        extra = details(item)
        try:
            leaf = custody_leaf(
                item_id=item.id,
                item_sha256=item.sha256,
                action=action,
                actor=actor,
                at=now,
                reason=None,
                prev=prevs[item.id],
                details=extra,
            )
        except (CanonicalJSONError, KeyError):
            skipped.append(item.id)
            continue
        entries.append(("custody", item.id, leaf))
        built.append((item, extra))
    appended = ledger.append_many(session, entries, now=now)
    repo.add_custody_rows(
        session,
        rows=[
            {
                "item_id": item.id,
                "action": action,
                "actor": actor,
                "at": now,
                "reason": None,
                "details": extra,
                "log_index": leaf.index,
                "leaf_hash": leaf.leaf_hash,
            }
            for (item, extra), leaf in zip(built, appended, strict=True)
        ],
    )
    return skipped
