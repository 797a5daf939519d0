"""Who may do what (DESIGN.md "Who may do what"), decided in one place.

:func:`decide` answers for one principal, one action and its target (an item, a case, or
both); :func:`require` also records a denial and raises :class:`Forbidden`. The API's one
dependency (``api/auth.py``) and search (:func:`visible`) use these, nothing else decides.

Rules:

* **officer**: uploads; searches and reads the items of their unit: an item is the unit's
  when its own unit is (stamped at intake from the uploading officer or device, else its
  device's or officer's unit) or when it is linked to a case of the unit. Reads and exports
  the cases of their unit; links and unlinks visible items to cases of their unit or to cases
  that have no unit yet (the case then takes the officer's unit).
* **reviewer**: read-only: the items and cases of cases granted to them, until the grant
  expires; exports those cases.
* **auditor**: reads the log and the receipt (leaf + proof) of any item.
* **admin**: holds and releases cases; manages users, devices and retention from the CLI.
* **admin** and **auditor**: read the supervision figures (per unit and officer: counts,
  hours, gaps; no item's content), the web's supervision page.
* **device**: uploads (the device registry decides the rest).
* Every authenticated principal may read the log (checkpoints, consistency proofs).

A case's unit: the unit of the first item linked to it (the uploading officer's or device's
unit), or of the officer who first links an item to it; an admin may set it
(``liuhen case-unit``). An unknown item or case is 404 for everyone; a known one the caller
may not touch is 403, and the denial is recorded.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import ColumnElement, false, select
from sqlalchemy.orm import Session

from ingest import custody
from ingest.errors import Forbidden
from ingest.manifest import check_case_id
from ingest.people import Principal
from ingest.runtime import Runtime
from storage import people as store
from storage import repository as repo
from storage.db import transaction
from storage.tables import Case, Item

log = logging.getLogger(__name__)


class Action(StrEnum):
    ITEM_UPLOAD = "item.upload"
    ITEM_SEARCH = "item.search"
    ITEM_READ = "item.read"
    """The item document, its original and derivatives."""
    ITEM_RECEIPT = "item.receipt"
    ITEM_LINK = "item.link"
    """Link or unlink an item and a case."""
    CASE_READ = "case.read"
    CASE_LINK = "case.link"
    """Put items into a case (at upload, or by linking)."""
    CASE_EXPORT = "case.export"
    CASE_HOLD = "case.hold"
    """Place or release a case's legal hold."""
    LOG_READ = "log.read"
    SUPERVISION_READ = "supervision.read"
    """The per-unit and per-officer figures of the supervision page (no item content)."""
    DEVICE_ADMIN = "device.admin"
    """Enroll, list, disable, rotate the key of, and assign devices."""


A = Action
ROLE_ACTIONS: dict[str, frozenset[Action]] = {
    "officer": frozenset(
        {
            A.ITEM_UPLOAD,
            A.ITEM_SEARCH,
            A.ITEM_READ,
            A.ITEM_RECEIPT,
            A.ITEM_LINK,
            A.CASE_READ,
            A.CASE_LINK,
            A.CASE_EXPORT,
            A.LOG_READ,
        }
    ),
    "reviewer": frozenset(
        {A.ITEM_SEARCH, A.ITEM_READ, A.ITEM_RECEIPT, A.CASE_READ, A.CASE_EXPORT, A.LOG_READ}
    ),
    "auditor": frozenset({A.ITEM_RECEIPT, A.LOG_READ, A.SUPERVISION_READ}),
    "admin": frozenset({A.CASE_HOLD, A.LOG_READ, A.SUPERVISION_READ, A.DEVICE_ADMIN}),
    "device": frozenset({A.ITEM_UPLOAD, A.CASE_LINK, A.LOG_READ}),
}
ITEM_SCOPED = frozenset({A.ITEM_READ, A.ITEM_RECEIPT, A.ITEM_LINK})
CASE_SCOPED = frozenset({A.CASE_READ, A.CASE_LINK, A.CASE_EXPORT, A.ITEM_LINK, A.CASE_HOLD})
CASE_MUST_EXIST = frozenset({A.CASE_READ, A.CASE_EXPORT, A.CASE_HOLD})


def visible(principal: Principal, now: datetime) -> ColumnElement[bool]:
    """SQL over ``Item``: the items ``principal`` may find and read."""
    if principal.role == "officer" and principal.unit:
        unit = principal.unit
        own: ColumnElement[bool] = store.item_unit_expr() == unit
        return own | store.in_case_of_unit(unit)
    if principal.role == "reviewer":
        return store.in_granted_case(principal.name, now)
    return false()


def decide(
    session: Session,
    principal: Principal,
    action: Action,
    *,
    item_id: str | None = None,
    case_id: str | None = None,
    now: datetime,
) -> str | None:
    """None when allowed, else why not (a sentence for the caller and the log)."""
    who = f"{principal.role} {principal.name}"
    if action not in ROLE_ACTIONS.get(principal.role, frozenset()):
        return f"{who} may not {action.value}"
    if item_id is not None and action in ITEM_SCOPED:
        reason = _item_scope(session, principal, action, item_id, now)
        if reason:
            return reason
    if case_id is not None and action in CASE_SCOPED:
        return _case_scope(session, principal, action, case_id, now)
    return None


def _item_scope(
    session: Session, principal: Principal, action: Action, item_id: str, now: datetime
) -> str | None:
    if principal.role == "auditor" and action is A.ITEM_RECEIPT:
        return None
    seen = session.scalar(select(Item.id).where(Item.id == item_id, visible(principal, now)))
    if seen is not None:
        return None
    if principal.role == "reviewer":
        expired = [
            g
            for c in repo.case_ids_of(session, item_id=item_id)
            for g in store.grants_of(session, user_name=principal.name, case_id=c)
        ]
        if expired:
            return (
                f"reviewer {principal.name}'s grant on case {expired[0].case_id} expired at "
                f"{expired[0].until.isoformat()}"
            )
        return f"item {item_id} is in no case granted to reviewer {principal.name}"
    return (
        f"item {item_id} is neither of unit {principal.unit} nor in a case of unit {principal.unit}"
    )


def _case_scope(
    session: Session, principal: Principal, action: Action, case_id: str, now: datetime
) -> str | None:
    if principal.role == "admin":
        return None
    case = session.get(Case, case_id)
    if principal.role in ("officer", "device"):
        if case is not None and case.unit == principal.unit:
            return None
        if action in (A.CASE_LINK, A.ITEM_LINK) and (case is None or case.unit is None):
            return None  # a case without a unit takes the first linker's
        return f"case {case_id} is not a case of unit {principal.unit}"
    if principal.role == "reviewer":
        grants = store.grants_of(session, user_name=principal.name, case_id=case_id)
        if any(g.until > now for g in grants):
            return None
        if grants:
            return (
                f"reviewer {principal.name}'s grant on case {case_id} expired at "
                f"{grants[0].until.isoformat()}"
            )
        return f"case {case_id} is not granted to reviewer {principal.name}"
    return f"{principal.role} {principal.name} may not {action.value} case {case_id}"


def require(
    rt: Runtime,
    principal: Principal,
    action: Action,
    *,
    item_id: str | None = None,
    case_id: str | None = None,
) -> None:
    """Allow, or record the denial and raise :class:`Forbidden`. An unknown item, or an
    unknown case to read, export or hold, is :class:`NotFound` (that an ID exists is no
    secret; what it holds is). Linking may name a new case."""
    now = datetime.now(UTC)
    if case_id is not None:
        check_case_id(case_id, rt.settings.case_id_pattern)
    with rt.reads() as session:
        if item_id is not None:
            repo.get_item(session, item_id=item_id)
        if case_id is not None and action in CASE_MUST_EXIST:
            repo.get_case(session, case_id=case_id)
        reason = decide(session, principal, action, item_id=item_id, case_id=case_id, now=now)
    if reason is None:
        return
    record_denial(rt, principal, action, item_id=item_id, case_id=case_id, reason=reason, now=now)
    raise Forbidden(reason)


def record_denial(
    rt: Runtime,
    principal: Principal,
    action: Action,
    *,
    item_id: str | None,
    case_id: str | None,
    reason: str,
    now: datetime,
) -> None:
    """A denial concerning an item is a ``denied`` custody event (leaf and row); one
    concerning a case, or nothing in particular, a ``denied`` case event. Both are logged."""
    log.warning(
        "denied %s %s (item %s, case %s): %s", principal.actor, action, item_id, case_id, reason
    )
    with transaction(rt.sessions) as session:
        details: dict[str, object] = {"attempted": action.value, "role": principal.role}
        if case_id is not None:
            details["case_id"] = case_id
        if item_id is not None:
            item = repo.get_item(session, item_id=item_id)
            custody.record(
                session,
                rt.ledger,
                item=item,
                action="denied",
                actor=principal.actor,
                now=now,
                reason=reason,
                details=details,
            )
        if item_id is None or case_id is not None:
            store.add_case_event(
                session,
                case_id=case_id,
                action="denied",
                actor=principal.actor,
                now=now,
                reason=reason,
                details={**details, "item_id": item_id} if item_id else details,
            )
