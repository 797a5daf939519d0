"""Custody events: who did what to an item. Each is a row and a log leaf whose ``prev`` is the
leaf hash of the item's previous custody leaf (the item leaf for the first), so every item
carries its own hash chain inside the global log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from ingest.ledger import AppendedLeaf, Ledger
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
