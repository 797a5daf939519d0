"""Retention and legal hold.

* **Categories**: ``routine`` (``retention_days``, at least 183, from arrival), ``important``
  (the device marked it; ``retention_important_days``), ``evidence`` (linked to a case: kept
  without end). The original's COMPLIANCE retention is its category's at sealing; a case
  link makes the index keep it forever (only unlinking, with a reason, ends that).
* **Legal hold**: a case is open (held) from its first link until an admin releases it
  (``liuhen release``), and can be held again (``liuhen hold``). An item linked to at least
  one open case has the S3 legal hold on its original and every derivative; the index
  records the state last applied (``item_holds``), each change is a ``legal_hold`` custody
  event, and re-applying is harmless: holding or releasing a case writes every flag its
  items want again, which repairs what a failed or interrupted change left.
* **Deletion**: only :func:`purge` (an admin command with a reason) deletes, and only items
  whose retention has ended, that are in no case, not held, and whose every object the store
  itself says is neither held nor retained. Each deletion is a ``deleted`` custody event; the
  item row, its leaves and its custody chain stay forever, its status becomes ``deleted``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from configs.settings import Settings
from ingest import custody
from ingest.errors import HoldsChanging, ItemDeleted, StillHeld
from ingest.ledger import Ledger
from ingest.manifest import check_case_id
from ingest.reasons import check_reason
from ingest.runtime import Runtime
from storage import people as store
from storage import repository as repo
from storage.db import transaction
from storage.errors import ObjectStoreError
from storage.tables import Item

log = logging.getLogger(__name__)
T = TypeVar("T")

DELETED = "deleted"
HOLD_ROUNDS = 5
"""How often a hold change is tried again when its items' objects changed in between."""


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


def refuse_deleted(item: Item) -> None:
    """:class:`ItemDeleted` when the item was deleted: call it under the sequencer."""
    if item.status == DELETED:
        raise ItemDeleted(
            f"item {item.id} (SHA-256 {item.sha256}) was deleted when its retention ended; "
            "its record and custody stay, but it cannot be sealed again or linked to a case"
        )


# --- legal hold ----------------------------------------------------------------------------


def _objects(session: Session, item: Item) -> list[tuple[str, str]]:
    objs = [(item.object_key, item.version_id)]
    objs += [(d.object_key, d.version_id) for d in repo.derivatives_of(session, item_id=item.id)]
    return objs


class HoldPlan:
    """The legal-hold flags a transaction needs on the store, set outside it.

    A change that moves an item's hold (a case held or released, a link, an unlink) runs in
    :func:`with_holds`: its transaction finds which objects need their flag changed
    (:func:`sync_item_hold`); if any do, it rolls back, the flags are set with no
    transaction open, and it runs again, now finding them set. So the store is never called
    while the transaction holds the sequencer (and on SQLite the one write lock)."""

    def __init__(self) -> None:
        self.applied: dict[tuple[str, str], bool] = {}
        self.needed: dict[tuple[str, str], bool] = {}

    def ready(self, objects: list[tuple[str, str]], on: bool) -> bool:
        """Whether every object's flag is ``on`` already; the others are noted as needed."""
        missing = [o for o in objects if self.applied.get(o) is not on]
        for o in missing:
            self.needed[o] = on
        return not missing


class _StoreFirst(Exception):
    """Roll back: the store's flags must change before this transaction can commit."""


def with_holds(rt: Runtime, work: Callable[[Session, HoldPlan], T]) -> T:
    """Run ``work`` in a transaction, changing the store's legal-hold flags it needs between
    attempts (:class:`HoldPlan`). ``work`` must be safe to run again: each run starts over."""
    plan = HoldPlan()
    for _ in range(HOLD_ROUNDS):
        plan.needed = {}
        try:
            with transaction(rt.sessions) as session:
                result = work(session, plan)
                if plan.needed:
                    raise _StoreFirst
                return result
        except _StoreFirst:
            pass
        for (key, version), on in plan.needed.items():  # no transaction is open here
            rt.store.legal_hold(key, version, on)
            plan.applied[(key, version)] = on
    raise HoldsChanging(
        "the items' objects kept changing while their legal hold was set; nothing was "
        "committed: try again"
    )


def sync_item_hold(
    session: Session,
    item: Item,
    plan: HoldPlan,
    *,
    ledger: Ledger,
    actor: str,
    now: datetime,
    log_it: bool = True,
    reassert: bool = False,
) -> bool:
    """Make the item's recorded legal hold match its cases, inside a :func:`with_holds`
    transaction: when the store's flags are not set yet, note them in ``plan`` (the
    transaction is then run again) and change nothing. True when it changed.

    The recorded state is what the store was last told, but the store's flags may differ:
    this plan may have set them the other way in an earlier round (a link committed in
    between), or a change that failed or was cut off after its store calls never committed.
    So flags this plan set are always brought back in line, and ``reassert`` (a case held or
    released) writes every flag the item wants, which also repairs what an earlier failure
    left.

    A change is a ``legal_hold`` custody event, except at intake (``log_it=False``), where
    the ``sealed`` / ``link`` leaf already names the case that holds it."""
    if item.status == DELETED:
        return False
    # The sequencer lock first: a derivative being committed reads the hold state under it
    # (``ingest.derivative_store``), so the two serialise and a new derivative is never missed.
    repo.reserve_log_indexes(session, 0)
    held_by = store.held_cases_of(session, item_id=item.id)
    want = bool(held_by)
    objects = _objects(session, item)
    if want == store.item_hold_state(session, item_id=item.id):
        if reassert or any(plan.applied.get(o, want) is not want for o in objects):
            plan.ready(objects, want)
        return False
    if not plan.ready(objects, want):
        return False
    store.set_item_hold_state(session, item_id=item.id, held=want, now=now)
    if not log_it:
        return True
    custody.record(
        session,
        ledger,
        item=item,
        action="legal_hold",
        actor=actor,
        now=now,
        details={"on": want, "cases": held_by},
    )
    return True


def set_case_hold(
    rt: Runtime, *, case_id: str, held: bool, reason: str, actor: str, now: datetime | None = None
) -> dict[str, Any]:
    """``liuhen hold`` / ``liuhen release``: the case's state, then each item's S3 holds."""
    now = now or datetime.now(UTC)
    reason = check_reason(reason)
    check_case_id(case_id, rt.settings.case_id_pattern)

    def work(session: Session, plan: HoldPlan) -> list[dict[str, Any]]:
        # The sequencer before the case's items are read: a seal into the case then either
        # committed before (and is among them) or reads the new hold under it (and applies it).
        repo.reserve_log_indexes(session, 0)
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
            sync_item_hold(
                session, item, plan, ledger=rt.ledger, actor=actor, now=now, reassert=True
            )
            items.append({"id": item.id, "held": store.item_hold_state(session, item_id=item.id)})
        return items

    items = with_holds(rt, work)
    log.info("case %s %s by %s: %r", case_id, "held" if held else "released", actor, reason)
    return {"case_id": case_id, "held": held, "reason": reason, "items": items}


# --- deletion ------------------------------------------------------------------------------


def _why_kept_by_index(session: Session, item: Item, now: datetime) -> str | None:
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
    return None


def _why_kept(rt: Runtime, session: Session, item: Item, now: datetime) -> str | None:
    """Why the item may not be deleted: the index's reasons, then the store's own flags."""
    why = _why_kept_by_index(session, item, now)
    if why is not None:
        return why
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
    """Delete an expired, unheld item's objects; :class:`StillHeld` otherwise.

    What keeps an item is checked first, the store's own flags included (read with no
    transaction open); then the ``deleted`` custody event and the status are committed,
    the index's reasons checked again under the sequencer; the objects are removed last,
    with no transaction open, so the store is never called while the sequencer is held. A
    store that refuses or fails then leaves objects behind (``left``, and a warning): the log
    says deleted while the bytes remain, never bytes gone without the log saying so."""
    now = now or datetime.now(UTC)
    reason = check_reason(reason)
    with rt.reads() as session:
        item = repo.get_item(session, item_id=item_id)
        why = _why_kept(rt, session, item, now)
        checked = _objects(session, item)
    if why is not None:
        raise StillHeld(f"item {item_id} not deleted: {why}")
    with transaction(rt.sessions) as session:
        # The sequencer first: a link takes it before it reads the item (``ingest.links``),
        # so a link committed after the check below finds the item deleted, and one committed
        # before it is seen by the check (on PostgreSQL each statement sees its own moment).
        repo.reserve_log_indexes(session, 0)
        item = repo.get_item(session, item_id=item_id)
        objects = _objects(session, item)
        why = _why_kept_by_index(session, item, now)
        if why is None and objects != checked:
            why = "its objects changed while it was checked: try again"
        if why is not None:
            raise StillHeld(f"item {item_id} not deleted: {why}")
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
    left = []
    for key, version in reversed(objects):  # derivatives first, the original last
        try:
            rt.store.remove_version(key, version)
        except ObjectStoreError as e:
            left.append({"object": f"{key}@{version}", "error": str(e)})
    if left:
        log.warning(
            "item %s deleted, but %d object(s) stay on the store: %s", item_id, len(left), left
        )
    log.info("item %s deleted by %s: %r", item_id, actor, reason)
    return {"id": item_id, "objects": len(objects) - len(left), "left": left}


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
