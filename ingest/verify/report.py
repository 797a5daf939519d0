"""What a verification run found, and the run logged as custody."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ingest import custody
from ingest.runtime import Runtime
from storage import verify_queries as q
from storage.db import transaction
from storage.tables import Item

log = logging.getLogger(__name__)

EVENTS_PER_TRANSACTION = 200
LEAF_CODES = frozenset(
    {"leaf_missing", "leaf_hash", "leaf_order", "leaf_data", "leaf_format", "custody_chain"}
)
"""Failures that mean a leaf itself is wrong (``Report.first_bad_leaf``)."""


@dataclass(frozen=True)
class Failure:
    """One thing that does not check."""

    item_id: str | None
    """The item it concerns; None when it concerns the log as a whole."""
    what: str
    """A stable code (see ``ingest.verify``)."""
    detail: str
    """What was expected and what was found."""
    leaf_index: int | None = None
    """The log leaf it concerns, when there is one."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "what": self.what,
            "detail": self.detail,
            "leaf_index": self.leaf_index,
        }


@dataclass(frozen=True)
class CouldNotCheck:
    """An object (or a whole service) that could not be read: an outage, not evidence."""

    item_id: str | None
    """The item it belongs to; None for the log's mirror or a whole service."""
    key: str | None
    """The object key (or prefix) that could not be read; None for a whole service."""
    version_id: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "key": self.key,
            "version_id": self.version_id,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Report:
    """The outcome of one verification run (``liuhen verify --json``)."""

    ok: bool
    """True only when everything was checked and nothing failed."""
    checked: int
    """How many items were checked in full."""
    failures: list[Failure]
    """Log failures by leaf index first, then in the order found."""
    could_not_check: list[CouldNotCheck]
    """What could not be read (store or database unavailable); never counted as a failure."""

    @property
    def first_bad_leaf(self) -> int | None:
        """The lowest index of a leaf that is itself wrong, if any."""
        bad = [f.leaf_index for f in self.failures if f.what in LEAF_CODES]
        return min((i for i in bad if i is not None), default=None)

    @property
    def exit_status(self) -> int:
        """0 all checked and matched, 1 something differs, 75 something unchecked (DESIGN.md)."""
        if self.failures:
            return 1
        return 75 if self.could_not_check else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "failures": [f.as_dict() for f in self.failures],
            "could_not_check": [c.as_dict() for c in self.could_not_check],
        }


def make_report(failures: list[Failure], unchecked: list[CouldNotCheck], *, checked: int) -> Report:
    # Stable sort: the log's failures by index first, the rest as found.
    ordered = sorted(failures, key=lambda f: (f.leaf_index is None, f.leaf_index or 0))
    return Report(
        ok=not ordered and not unchecked,
        checked=checked,
        failures=ordered,
        could_not_check=list(unchecked),
    )


def record(
    rt: Runtime,
    report: Report,
    item_ids: list[str],
    *,
    actor: str,
    scope: str,
    appendable: bool,
) -> None:
    """Log the run as a ``verify`` custody event per item checked, after the checking (so the
    run checked the state it found). One savepoint each: an item whose event cannot be built
    leaves no half-taken index behind, and the others are still logged.

    Not when the end of the log is in doubt (truncated, say): new leaves would take indexes
    that a signed checkpoint may already cover, writing over the history being reported. An
    item with an object that could not be read is not in ``item_ids``: an outage is never
    written into the log as a result.
    """
    if not appendable:
        log.warning("the end of the log is in doubt: this verification run is not logged")
        return
    log_ok = not any(f.item_id is None for f in report.failures)
    now = datetime.now(UTC)
    extra = {"log_ok": log_ok} if scope == "all" else {}
    codes: dict[str, set[str]] = {}
    for f in report.failures:
        if f.item_id is not None:
            codes.setdefault(f.item_id, set()).add(f.what)

    def details(item: Item) -> dict[str, Any]:
        found = sorted(codes.get(item.id, ()))
        return {"scope": scope, "ok": not found, "failures": found, **extra}

    for start in range(0, len(item_ids), EVENTS_PER_TRANSACTION):
        chunk = item_ids[start : start + EVENTS_PER_TRANSACTION]
        with transaction(rt.sessions) as session:
            items = q.items_by_id(session, item_ids=chunk)
            skipped = custody.record_many(
                session,
                rt.ledger,
                items=items,
                action="verify",
                actor=actor,
                now=now,
                details=details,
            )
        for item_id in skipped:
            log.warning(
                "verify event for item %s not logged: its row is no longer a valid leaf", item_id
            )
