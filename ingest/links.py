"""Linking items and cases, with a required reason. Each change is a ``link`` / ``unlink``
custody event with details ``{"case_id": ...}`` (what ``liuhen verify`` follows), in the same
transaction as the index row; the item's legal hold follows its cases."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from ingest import custody
from ingest.manifest import check_case_id
from ingest.reasons import check_reason
from ingest.retention import HoldPlan, refuse_deleted, sync_item_hold, with_holds
from ingest.runtime import Runtime
from storage import people as store
from storage import repository as repo
from storage.db import transaction
from storage.errors import NotFound
from storage.tables import Item


def settle_case_units(
    session: Session, *, item: Item, case_ids: list[str], unit: str | None
) -> None:
    """Cases without a unit take ``unit``, else the item's (the first linker's unit)."""
    unit = unit or store.item_unit(session, item_id=item.id)
    if unit:
        for case_id in case_ids:
            store.claim_case_unit(session, case_id=case_id, unit=unit)


def link(
    rt: Runtime,
    *,
    item_id: str,
    case_id: str,
    reason: str,
    actor: str,
    unit: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Link ``item_id`` to ``case_id`` (created if new). Linking twice changes nothing."""
    now = now or datetime.now(UTC)
    reason = check_reason(reason)
    check_case_id(case_id, rt.settings.case_id_pattern)

    def work(session: Session, plan: HoldPlan) -> dict[str, Any]:
        # The case row before the sequencer, as a group commit makes its new cases: one
        # being made by a seal is waited for without holding the sequencer the seal needs.
        repo.ensure_case(session, case_id=case_id, now=now)
        # The sequencer before the item is read: a purge deciding under it that the item is
        # in no case is then never followed by this link committing (``retention``).
        repo.reserve_log_indexes(session, 0)
        item = repo.get_item(session, item_id=item_id)
        refuse_deleted(item)
        changed = repo.link_case(session, item_id=item_id, case_id=case_id, actor=actor, now=now)
        if changed:
            custody.record(
                session,
                rt.ledger,
                item=item,
                action="link",
                actor=actor,
                now=now,
                reason=reason,
                details={"case_id": case_id},
            )
            settle_case_units(session, item=item, case_ids=[case_id], unit=unit)
            sync_item_hold(session, item, plan, ledger=rt.ledger, actor=actor, now=now)
        case_ids = repo.case_ids_of(session, item_id=item_id)
        return {"id": item_id, "case_id": case_id, "changed": changed, "case_ids": case_ids}

    return with_holds(rt, work)


def unlink(
    rt: Runtime,
    *,
    item_id: str,
    case_id: str,
    reason: str,
    actor: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Unlink ``item_id`` from ``case_id``; :class:`NotFound` if they are not linked."""
    now = now or datetime.now(UTC)
    reason = check_reason(reason)
    check_case_id(case_id, rt.settings.case_id_pattern)

    def work(session: Session, plan: HoldPlan) -> dict[str, Any]:
        item = repo.get_item(session, item_id=item_id)
        if not repo.unlink_case(session, item_id=item_id, case_id=case_id):
            raise NotFound(f"item {item_id} is not linked to case {case_id}")
        custody.record(
            session,
            rt.ledger,
            item=item,
            action="unlink",
            actor=actor,
            now=now,
            reason=reason,
            details={"case_id": case_id},
        )
        sync_item_hold(session, item, plan, ledger=rt.ledger, actor=actor, now=now)
        case_ids = repo.case_ids_of(session, item_id=item_id)
        return {"id": item_id, "case_id": case_id, "changed": True, "case_ids": case_ids}

    return with_holds(rt, work)


def set_case_unit(
    rt: Runtime, *, case_id: str, unit: str, reason: str, actor: str, now: datetime | None = None
) -> dict[str, Any]:
    """An admin sets (or changes) the unit a case belongs to."""
    now = now or datetime.now(UTC)
    reason = check_reason(reason)
    check_case_id(case_id, rt.settings.case_id_pattern)
    with transaction(rt.sessions) as session:
        case = repo.get_case(session, case_id=case_id)
        old, case.unit = case.unit, unit
        store.add_case_event(
            session,
            case_id=case_id,
            action="unit",
            actor=actor,
            now=now,
            reason=reason,
            details={"from": old, "to": unit},
        )
    return {"case_id": case_id, "unit": unit, "previous": old}


def taken_out(session: Session, *, case_id: str) -> list[dict[str, Any]]:
    """The items the case held once and no longer does, each with its last ``unlink`` of the
    case (when, by whom, why), in that order: a case page shows them, so evidence never
    leaves a case unseen (its export lists them too)."""
    members = {i.id for i in repo.items_of_case(session, case_id=case_id)}
    last = {e.item_id: e for e in repo.unlinks_from_case(session, case_id=case_id)}
    out = []
    for item_id, unlink in last.items():
        if item_id is None or item_id in members:
            continue
        item = repo.get_item(session, item_id=item_id)
        out.append(
            {
                "item_id": item_id,
                "original_name": item.original_name,
                "sha256": item.sha256,
                "at": unlink.at,
                "actor": unlink.actor,
                "reason": unlink.reason,
            }
        )
    return sorted(out, key=lambda r: (r["at"], r["item_id"]))
