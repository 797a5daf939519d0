"""Index functions for people, tokens, grants, case events, holds and item units (issue 10).

Typed keyword-only functions like :mod:`storage.repository`; callers own the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.errors import Conflict, NotFound
from storage.tables import (
    ApiToken,
    Case,
    CaseEvent,
    CaseGrant,
    CaseHold,
    Device,
    Item,
    ItemCase,
    ItemHold,
    ItemUnit,
    Person,
    Unit,
    User,
    WebSession,
)

# --- users and tokens ----------------------------------------------------------------------


def insert_user(session: Session, *, user: User) -> None:
    try:
        with session.begin_nested():
            session.add(user)
    except IntegrityError as e:
        raise Conflict(f"a user {user.name!r} exists") from e


def get_user(session: Session, *, name: str) -> User:
    user = session.get(User, name)
    if user is None:
        raise NotFound(f"no user {name!r}")
    return user


def find_user(session: Session, *, name: str) -> User | None:
    return session.get(User, name)


def users(session: Session) -> Sequence[User]:
    return session.scalars(select(User).order_by(User.name)).all()


def add_token(session: Session, *, user_name: str, token_hash: str, now: datetime) -> None:
    session.add(ApiToken(user_name=user_name, token_hash=token_hash, created_at=now))
    session.flush()


def user_for_token(session: Session, *, token_hash: str) -> User | None:
    """The user of a live (unrevoked) token; the lookup is by hash, on a unique index."""
    return session.scalars(
        select(User)
        .join(ApiToken, ApiToken.user_name == User.name)
        .where(
            ApiToken.token_hash == token_hash,
            ApiToken.revoked_at.is_(None),
            User.disabled_at.is_(None),
        )
    ).one_or_none()


def set_user_disabled(session: Session, *, name: str, at: datetime | None) -> None:
    get_user(session, name=name).disabled_at = at
    session.flush()


def add_web_session(
    session: Session, *, sid: str, user_name: str, now: datetime, expired_before: datetime
) -> None:
    """A login's session; sessions past their age are dropped on the way (the cookie's own
    age check refuses them anyway)."""
    session.execute(delete(WebSession).where(WebSession.created_at < expired_before))
    session.add(WebSession(sid=sid, user_name=user_name, created_at=now))
    session.flush()


def web_session_user(
    session: Session, *, sid: str, user_name: str, started_after: datetime
) -> User | None:
    """The user of a live session: not ended, young enough, its user not disabled."""
    return session.scalars(
        select(User)
        .join(WebSession, WebSession.user_name == User.name)
        .where(
            WebSession.sid == sid,
            User.name == user_name,
            WebSession.ended_at.is_(None),
            WebSession.created_at >= started_after,
            User.disabled_at.is_(None),
        )
    ).one_or_none()


def end_web_sessions(
    session: Session,
    *,
    now: datetime,
    sid: str | None = None,
    user_name: str | None = None,
    keep: str | None = None,
) -> int:
    """End one session (``sid``) or every session of ``user_name`` (but ``keep``)."""
    conditions: list[ColumnElement[bool]] = [WebSession.ended_at.is_(None)]
    if sid is not None:
        conditions.append(WebSession.sid == sid)
    if user_name is not None:
        conditions.append(WebSession.user_name == user_name)
    if keep is not None:
        conditions.append(WebSession.sid != keep)
    result = session.execute(update(WebSession).where(*conditions).values(ended_at=now))
    return int(result.rowcount)  # type: ignore[attr-defined]


def revoke_tokens(session: Session, *, user_name: str, now: datetime) -> int:
    result = session.execute(
        update(ApiToken)
        .where(ApiToken.user_name == user_name, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def live_tokens(session: Session, *, user_name: str) -> int:
    return int(
        session.execute(
            select(func.count())
            .select_from(ApiToken)
            .where(ApiToken.user_name == user_name, ApiToken.revoked_at.is_(None))
        ).scalar_one()
    )


def set_person_unit(session: Session, *, person_id: str, unit: str, now: datetime) -> None:
    """Record an officer's unit on their person row (created if absent)."""
    person = session.get(Person, person_id)
    if person is None:
        session.add(Person(id=person_id, unit=unit, created_at=now))
    else:
        person.unit = unit
    session.flush()


def unit_is_known(session: Session, *, unit: str) -> bool:
    """Whether some device, officer, user or case belongs to ``unit`` (a typo names none)."""
    return any(
        session.execute(select(exists().where(column == unit))).scalar_one()
        for column in (Unit.id, Device.unit, Person.unit, User.unit, Case.unit)
    )


# --- grants --------------------------------------------------------------------------------


def add_grant(
    session: Session, *, user_name: str, case_id: str, until: datetime, actor: str, now: datetime
) -> None:
    session.add(
        CaseGrant(
            user_name=user_name, case_id=case_id, granted_at=now, granted_by=actor, until=until
        )
    )
    session.flush()


def revoke_grants(
    session: Session, *, user_name: str, case_id: str, actor: str, now: datetime
) -> int:
    result = session.execute(
        update(CaseGrant)
        .where(
            CaseGrant.user_name == user_name,
            CaseGrant.case_id == case_id,
            CaseGrant.revoked_at.is_(None),
        )
        .values(revoked_at=now, revoked_by=actor)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def grants_of(
    session: Session, *, user_name: str, case_id: str | None = None
) -> Sequence[CaseGrant]:
    """Unrevoked grants of a user (expired ones included), newest expiry first."""
    stmt = select(CaseGrant).where(CaseGrant.user_name == user_name, CaseGrant.revoked_at.is_(None))
    if case_id is not None:
        stmt = stmt.where(CaseGrant.case_id == case_id)
    return session.scalars(stmt.order_by(CaseGrant.until.desc())).all()


def grant_is_live(user_name: str, now: datetime, case_id: Any) -> ColumnElement[bool]:
    """SQL: ``user_name`` holds an unrevoked, unexpired grant on ``case_id`` (a column)."""
    return exists().where(CaseGrant.case_id == case_id, *_live_grant(user_name, now))


def _live_grant(user_name: str, now: datetime) -> tuple[ColumnElement[bool], ...]:
    """SQL: a ``CaseGrant`` row of ``user_name``, unrevoked and unexpired at ``now``."""
    return (CaseGrant.user_name == user_name, CaseGrant.revoked_at.is_(None), CaseGrant.until > now)


# --- case events, units and holds ----------------------------------------------------------


def add_case_event(
    session: Session,
    *,
    case_id: str | None,
    action: str,
    actor: str,
    now: datetime,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    session.add(
        CaseEvent(
            case_id=case_id, action=action, actor=actor, at=now, reason=reason, details=details
        )
    )
    session.flush()


def case_events(session: Session, *, case_id: str | None = None) -> Sequence[CaseEvent]:
    stmt = select(CaseEvent)
    if case_id is not None:
        stmt = stmt.where(CaseEvent.case_id == case_id)
    return session.scalars(stmt.order_by(CaseEvent.id)).all()


def claim_case_unit(session: Session, *, case_id: str, unit: str) -> bool:
    """Give a case its unit if it has none yet (the first linker's unit); True if set."""
    result = session.execute(
        update(Case).where(Case.id == case_id, Case.unit.is_(None)).values(unit=unit)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def case_is_held(session: Session, *, case_id: str) -> bool:
    row = session.get(CaseHold, case_id)
    return True if row is None else row.held


def set_case_hold(
    session: Session, *, case_id: str, held: bool, actor: str, reason: str, now: datetime
) -> None:
    row = session.get(CaseHold, case_id)
    if row is None:
        session.add(
            CaseHold(case_id=case_id, held=held, changed_at=now, changed_by=actor, reason=reason)
        )
    else:
        row.held, row.changed_at, row.changed_by, row.reason = held, now, actor, reason
    session.flush()


def held_cases_of(session: Session, *, item_id: str) -> list[str]:
    """The open (held) cases an item is linked to."""
    return list(
        session.scalars(
            select(ItemCase.case_id)
            .outerjoin(CaseHold, CaseHold.case_id == ItemCase.case_id)
            .where(ItemCase.item_id == item_id, or_(CaseHold.held.is_(None), CaseHold.held))
            .order_by(ItemCase.case_id)
        )
    )


def held_items(session: Session, *, item_ids: Sequence[str]) -> set[str]:
    """Those of ``item_ids`` linked to an open (held) case, as :func:`held_cases_of` counts
    them: one query for a batch of new items."""
    if not item_ids:
        return set()
    return set(
        session.scalars(
            select(ItemCase.item_id)
            .outerjoin(CaseHold, CaseHold.case_id == ItemCase.case_id)
            .where(
                ItemCase.item_id.in_(list(item_ids)), or_(CaseHold.held.is_(None), CaseHold.held)
            )
            .distinct()
        )
    )


def open_cases(session: Session, *, case_ids: list[str]) -> list[str]:
    """Those of ``case_ids`` that are open (held), as :func:`held_cases_of` counts them: a
    case nobody released, including one that does not exist yet."""
    released = set(
        session.scalars(
            select(CaseHold.case_id).where(CaseHold.case_id.in_(case_ids), CaseHold.held.is_(False))
        )
    )
    return [c for c in case_ids if c not in released]


def item_hold_state(session: Session, *, item_id: str) -> bool:
    row = session.get(ItemHold, item_id)
    return bool(row and row.held)


def set_item_hold_state(session: Session, *, item_id: str, held: bool, now: datetime) -> None:
    row = session.get(ItemHold, item_id)
    if row is None:
        session.add(ItemHold(item_id=item_id, held=held, changed_at=now))
    else:
        row.held, row.changed_at = held, now
    session.flush()


# --- item units ----------------------------------------------------------------------------


def set_item_unit(session: Session, *, item_id: str, unit: str) -> None:
    row = session.get(ItemUnit, item_id)
    if row is None:
        session.add(ItemUnit(item_id=item_id, unit=unit))
        session.flush()


def item_unit_expr() -> Any:
    """SQL: an item's unit: the one stamped at intake, else its device's, else its officer's."""
    return func.coalesce(
        select(ItemUnit.unit).where(ItemUnit.item_id == Item.id).scalar_subquery(),
        select(Device.unit).where(Device.id == Item.device_id).scalar_subquery(),
        select(Person.unit).where(Person.id == Item.officer_id).scalar_subquery(),
    )


def item_unit(session: Session, *, item_id: str) -> str | None:
    unit = session.execute(select(item_unit_expr()).where(Item.id == item_id)).scalar_one_or_none()
    return None if unit is None else str(unit)


# IN subqueries, not correlated EXISTS: SQLite does not flatten an EXISTS, and ran it once per
# item of the whole table; an IN it reads once, from the case side.


def in_case_of_unit(unit: str) -> ColumnElement[bool]:
    """SQL: the item (``Item.id``) is linked to a case of ``unit``."""
    return Item.id.in_(
        select(ItemCase.item_id).join(Case, Case.id == ItemCase.case_id).where(Case.unit == unit)
    )


def in_granted_case(user_name: str, now: datetime) -> ColumnElement[bool]:
    """SQL: the item (``Item.id``) is linked to a case ``user_name`` may read now."""
    live = select(CaseGrant.case_id).where(*_live_grant(user_name, now))
    return Item.id.in_(select(ItemCase.item_id).where(ItemCase.case_id.in_(live)))
