"""Retention and legal hold.

* **Categories**: ``routine`` (``retention_days``, at least 183, from arrival), ``important``
  (the device marked it; ``retention_important_days``), ``evidence`` (linked to a case: kept
  without end). The original's COMPLIANCE retention is its category's at sealing; a case
  link makes the index keep it forever (only unlinking, with a reason, ends that).
* **Legal hold**: a case is open (held) from its first link until an admin releases it
  (``liuhen release``), and can be held again (``liuhen hold``). An item linked to at least
  one open case has the S3 legal hold on its original and every derivative; the index
  records the state last applied (``item_holds``), each change is a ``legal_hold`` custody
  event, and re-applying is harmless (a failed change is re-done by the next sync).
* **Deletion**: only :func:`purge` (an admin command with a reason) deletes, and only items
  whose retention has ended, that are in no case, not held, and whose every object the store
  itself says is neither held nor retained. Each deletion is a ``deleted`` custody event; the
  item row, its leaves and its custody chain stay forever, its status becomes ``deleted``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from configs.settings import Settings
from ingest import custody
from ingest.errors import InvalidInput, StillHeld
from ingest.manifest import check_case_id
from ingest.runtime import Runtime
from storage import people as store
from storage import repository as repo
from storage.db import transaction
from storage.tables import Item

log = logging.getLogger(__name__)

DELETED = "deleted"


def check_reason(reason: str | None) -> str:
    text = (reason or "").strip()
    if not text:
        raise InvalidInput("a reason is required (--reason TEXT)")
    if len(text) > 2000:
        raise InvalidInput("the reason is longer than 2000 characters")
    return text


def category_retention(settings: Settings, *, important: bool) -> timedelta:
    """How long a recording is kept before it may be deleted, when it is in no case."""
    return settings.retention_important if important else settings.retention


def retention_document(session: Session, item: Item) -> dict[str, Any]:
    """The item document's ``retention``: category, end (None: kept without end), holds."""
    cases = repo.case_ids_of(session, item_id=item.id)
    important = bool((item.manifest or {}).get("important"))
    category = "evidence" if cases else ("important" if important else "routine")
    held_by = store.held_cases_of(session, item_id=item.id)
    return {
        "category": category,
        "until": None if cases else _ts(item.retain_until),
        "held": bool(held_by),
        "held_by": held_by,
        "deleted": item.status == DELETED,
    }


def _ts(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


# --- legal hold ----------------------------------------------------------------------------


def _objects(session: Session, item: Item) -> list[tuple[str, str]]:
    objs = [(item.object_key, item.version_id)]
    objs += [(d.object_key, d.version_id) for d in repo.derivatives_of(session, item_id=item.id)]
    return objs


def sync_item_hold(
    rt: Runtime, session: Session, item: Item, *, actor: str, now: datetime, log_it: bool = True
) -> bool:
    """Make the S3 legal hold of the item's objects match its cases (inside the caller's
    transaction: if the store fails, nothing is committed). True when it changed.

    A change is a ``legal_hold`` custody event, except at intake (``log_it=False``), where
    the ``sealed`` / ``link`` leaf already names the case that holds it."""
    if item.status == DELETED:
        return False
    # The sequencer lock first, as a derivative being stored takes it before it reads the
    # hold state: the two serialise, so a new derivative is never missed by a hold.
    repo.reserve_log_indexes(session, 0)
    held_by = store.held_cases_of(session, item_id=item.id)
    want = bool(held_by)
    if want == store.item_hold_state(session, item_id=item.id):
        return False
    for key, version in _objects(session, item):
        rt.store.legal_hold(key, version, want)
    store.set_item_hold_state(session, item_id=item.id, held=want, now=now)
    if not log_it:
        return True
    custody.record(
        session,
        rt.ledger,
        item=item,
        action="legal_hold",
        actor=actor,
        now=now,
        details={"on": want, "cases": held_by},
    )
    return True


def hold_new_derivative(
    rt: Runtime, session: Session, *, item_id: str, key: str, version: str
) -> None:
    """A derivative made while its item is held is held too. The pipeline calls this in the
    transaction that appended the derivative's leaf, i.e. holding the sequencer lock that
    :func:`sync_item_hold` takes first."""
    if store.item_hold_state(session, item_id=item_id):
        rt.store.legal_hold(key, version, True)


def set_case_hold(
    rt: Runtime, *, case_id: str, held: bool, reason: str, actor: str, now: datetime | None = None
) -> dict[str, Any]:
    """``liuhen hold`` / ``liuhen release``: the case's state, then each item's S3 holds."""
    now = now or datetime.now(UTC)
    reason = check_reason(reason)
    check_case_id(case_id, rt.settings.case_id_pattern)
    with transaction(rt.sessions) as session:
        repo.get_case(session, case_id=case_id)
        store.set_case_hold(
            session, case_id=case_id, held=held, actor=actor, reason=reason, now=now
        )
        store.add_case_event(
            session,
            case_id=case_id,
            action="hold" if held else "release",
            actor=actor,
            now=now,
            reason=reason,
        )
        items = []
        for item in repo.items_of_case(session, case_id=case_id):
            sync_item_hold(rt, session, item, actor=actor, now=now)
            items.append({"id": item.id, "held": store.item_hold_state(session, item_id=item.id)})
    log.info("case %s %s by %s: %s", case_id, "held" if held else "released", actor, reason)
    return {"case_id": case_id, "held": held, "reason": reason, "items": items}


# --- deletion ------------------------------------------------------------------------------


def _why_kept(rt: Runtime, session: Session, item: Item, now: datetime) -> str | None:
    if item.status == DELETED:
        return "already deleted"
    cases = repo.case_ids_of(session, item_id=item.id)
    if cases:
        return f"evidence in case(s) {', '.join(cases)}: kept without end"
    if store.held_cases_of(session, item_id=item.id) or store.item_hold_state(
        session, item_id=item.id
    ):
        return "under legal hold"
    if item.retain_until > now:
        return f"retained until {_ts(item.retain_until)}"
    for key, version in _objects(session, item):
        if rt.store.legal_hold_on(key, version):
            return f"{key}@{version} is under S3 legal hold"
        mode, until = rt.store.retention(key, version)
        if mode is not None and until is not None and until > now:
            return f"{key}@{version} is retained ({mode}) until {_ts(until)}"
    return None


def delete_item(
    rt: Runtime, *, item_id: str, reason: str, actor: str, now: datetime | None = None
) -> dict[str, Any]:
    """Delete an expired, unheld item's objects; :class:`StillHeld` otherwise. The custody
    event is appended and the status set in the same transaction, the objects removed last
    inside it: a store that refuses leaves nothing committed."""
    now = now or datetime.now(UTC)
    reason = check_reason(reason)
    with transaction(rt.sessions) as session:
        item = repo.get_item(session, item_id=item_id)
        why = _why_kept(rt, session, item, now)
        if why is not None:
            raise StillHeld(f"item {item_id} not deleted: {why}")
        objects = _objects(session, item)
        custody.record(
            session,
            rt.ledger,
            item=item,
            action=DELETED,
            actor=actor,
            now=now,
            reason=reason,
            details={"objects": [f"{k}@{v}" for k, v in objects]},
        )
        repo.update_item(session, item_id=item_id, status=DELETED)
        for key, version in reversed(objects):  # derivatives first, the original last
            rt.store.remove_version(key, version)
    log.info("item %s deleted by %s: %s", item_id, actor, reason)
    return {"id": item_id, "objects": len(objects)}


def purge(
    rt: Runtime, *, reason: str, actor: str, dry_run: bool = False, now: datetime | None = None
) -> dict[str, Any]:
    """Delete every item whose retention has ended and that nothing holds. Items past their
    retention date but kept (held, in a case, an object still locked) are listed with why."""
    now = now or datetime.now(UTC)
    reason = check_reason(reason)
    with rt.sessions() as session:
        candidates = list(
            session.scalars(
                select(Item.id)
                .where(Item.retain_until <= now, Item.status != DELETED)
                .order_by(Item.retain_until, Item.id)
            )
        )
    deleted: list[dict[str, Any]] = []
    kept: list[dict[str, str]] = []
    for item_id in candidates:
        with rt.sessions() as session:
            why = _why_kept(rt, session, repo.get_item(session, item_id=item_id), now)
        if why is not None:
            kept.append({"id": item_id, "reason": why})
        elif dry_run:
            deleted.append({"id": item_id, "objects": None})
        else:
            try:
                deleted.append(
                    delete_item(rt, item_id=item_id, reason=reason, actor=actor, now=now)
                )
            except StillHeld as e:
                kept.append({"id": item_id, "reason": str(e)})
    return {"deleted": deleted, "kept": kept, "dry_run": dry_run, "reason": reason}
