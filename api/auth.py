"""Authentication and authorization for the HTTP API, in one place.

``Authorization: Bearer TOKEN`` names the principal (:func:`get_principal`); each route
declares the action it performs with one of the ``Can*`` dependencies below, which asks
:mod:`ingest.access` about the route's ``item_id`` / ``case_id`` path parameters and refuses
(401 without valid credentials, 403 when not allowed; the denial is logged) before the route
runs. Routes contain no permission checks of their own.

A device principal (kind ``device``) comes from the device registry: its lookup joins
:func:`resolve_token` (a device token is told apart by its prefix).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import RuntimeDep
from ingest import access, people
from ingest.access import Action
from ingest.errors import Unauthenticated
from ingest.people import Principal
from ingest.runtime import Runtime
from storage import people as store
from storage.db import transaction

log = logging.getLogger(__name__)
_bearer = HTTPBearer(auto_error=False, description="A liuhen API token (`liuhen user token`).")


def resolve_token(rt: Runtime, token: str) -> Principal:
    """The principal a bearer token stands for; :class:`Unauthenticated` if none."""
    with rt.reads() as session:
        return people.principal_for_token(session, token)


def get_principal(
    request: Request, rt: Runtime, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    """The principal of ``Authorization: Bearer``; :class:`Unauthenticated` (recorded) if
    there is none or it names nobody."""
    try:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Unauthenticated("send Authorization: Bearer TOKEN (liuhen user token NAME)")
        return resolve_token(rt, credentials.credentials)
    except Unauthenticated as e:
        _record_unauthenticated(rt, request, str(e))
        raise


UNAUTHENTICATED_EVENTS = 30
"""Rows an address's unauthenticated requests write per ``UNAUTHENTICATED_WINDOW_S``: each
takes the index's write lock, which seals wait for, and anyone who reaches the API can send
them. Every one is still in the log file; the rows past the limit are counted, and the next
row of that address says how many (``details.not_recorded``)."""
UNAUTHENTICATED_WINDOW_S = 60.0


class _EventBudget:
    """Per address: when its window began, rows written in it, requests not written. One per
    app (``app.state``): the rows are the index's, and each app has its runtime."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str | None, list[float]] = {}

    def take(self, address: str | None) -> int | None:
        """None when this request gets no row; else how many before it went without one."""
        now = time.monotonic()
        with self._lock:
            if len(self._seen) > 10_000:  # addresses enough: forget the quiet ones
                self._seen = {k: v for k, v in self._seen.items()
                              if now - v[0] < UNAUTHENTICATED_WINDOW_S}  # fmt: skip
            entry = self._seen.setdefault(address, [now, 0, 0])
            if now - entry[0] >= UNAUTHENTICATED_WINDOW_S:
                entry[0], entry[1] = now, 0
            if entry[1] >= UNAUTHENTICATED_EVENTS:
                entry[2] += 1
                return None
            entry[1] += 1
            skipped, entry[2] = int(entry[2]), 0
            return skipped


def _budget_of(request: Request) -> _EventBudget:
    budget: _EventBudget | None = getattr(request.app.state, "unauthenticated_budget", None)
    if budget is None:  # a race here makes two budgets for a moment: harmless
        budget = request.app.state.unauthenticated_budget = _EventBudget()
    return budget


def _record_unauthenticated(rt: Runtime, request: Request, why: str) -> None:
    client = request.client.host if request.client else None
    log.warning("unauthenticated %s %s from %s: %s", request.method, request.url.path, client, why)
    skipped = _budget_of(request).take(client)
    if skipped is None:
        return
    details: dict[str, Any] = {
        "method": request.method,
        "path": request.url.path[:300],
        "from": client,
    }
    if skipped:
        details["not_recorded"] = skipped  # requests from this address since the last row
    with transaction(rt.sessions) as session:
        store.add_case_event(
            session,
            case_id=None,
            action="unauthenticated",
            actor="anonymous",
            now=datetime.now(UTC),
            reason=why,
            details=details,
        )


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def authorize(action: Action) -> Callable[..., Principal]:
    """A dependency: the principal, if it may perform ``action`` on the route's target.

    Who is asking and whether they may are one dependency, not two: FastAPI runs each plain
    ``def`` dependency in a worker thread of its own, a thread hop per request."""

    def check(request: Request, rt: RuntimeDep, credentials: Credentials) -> Principal:
        principal = get_principal(request, rt, credentials)
        params: dict[str, Any] = request.path_params
        access.require(
            rt,
            principal,
            action,
            item_id=params.get("item_id"),
            case_id=params.get("case_id"),
        )
        return principal

    check.__name__ = f"authorize_{action.name.lower()}"
    return check


def allowed(rt: Runtime, principal: Principal, action: Action, **target: str | None) -> None:
    """The same check for a target the path does not name (the cases of an upload)."""
    access.require(rt, principal, action, **target)


CanUpload = Annotated[Principal, Depends(authorize(Action.ITEM_UPLOAD))]
CanSearch = Annotated[Principal, Depends(authorize(Action.ITEM_SEARCH))]
CanReadItem = Annotated[Principal, Depends(authorize(Action.ITEM_READ))]
CanReadReceipt = Annotated[Principal, Depends(authorize(Action.ITEM_RECEIPT))]
CanLink = Annotated[Principal, Depends(authorize(Action.ITEM_LINK))]
CanReadCase = Annotated[Principal, Depends(authorize(Action.CASE_READ))]
CanExportCase = Annotated[Principal, Depends(authorize(Action.CASE_EXPORT))]
CanHoldCase = Annotated[Principal, Depends(authorize(Action.CASE_HOLD))]
CanReadLog = Annotated[Principal, Depends(authorize(Action.LOG_READ))]
CanAdministerDevices = Annotated[Principal, Depends(authorize(Action.DEVICE_ADMIN))]
