"""People: users and their roles, API tokens, passwords, case grants. No HTTP here: the API,
the web pages and the CLI call these.

* Passwords are hashed with Argon2id (``argon2-cffi``, its default parameters). A failed
  check, whether the name is unknown or the password wrong, costs one Argon2 verification
  (a dummy hash stands in for an unknown name) and is logged as a ``login_failed`` event.
* API tokens are 256 random bits (``lh_`` + URL-safe base64). Only their SHA-256 is stored:
  a token is high-entropy, so a plain hash cannot be brute-forced, and the lookup is one
  indexed equality on the hash, not a comparison of secrets in Python.
* A :class:`Principal` is who is asking, once authenticated: a user (kind ``user``) or,
  from the device registry, a device (kind ``device``). ``actor`` is what custody records.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy.orm import Session

from ingest.errors import BadPassword, InvalidInput, Unauthenticated
from ingest.reasons import check_reason
from storage import people as store
from storage import repository as repo
from storage.db import transaction
from storage.tables import User

if TYPE_CHECKING:
    from argon2 import PasswordHasher
    from sqlalchemy.orm import sessionmaker

log = logging.getLogger(__name__)

ROLES = ("admin", "officer", "reviewer", "auditor")
Role = Literal["admin", "officer", "reviewer", "auditor", "device"]
Kind = Literal["user", "device"]
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,55}")
UNIT = re.compile(r"\S(?:.{0,98}\S)?")
TOKEN_PREFIX = "lh_"  # noqa: S105 - a prefix, not a secret
DEFAULT_GRANT = timedelta(days=30)
"""A grant without ``--until`` expires after this long: a reviewer's access always ends."""


@dataclass(frozen=True)
class Principal:
    """Who is asking, authenticated."""

    kind: Kind
    """``user`` or ``device``."""
    name: str
    """The user name or device ID."""
    role: Role
    """A user's role; ``device`` for a device."""
    unit: str | None
    """The unit an officer (or device) belongs to."""

    @property
    def actor(self) -> str:
        """How custody events and case events name this principal."""
        return f"{self.kind}:{self.name}"


def principal_of(user: User) -> Principal:
    return Principal(kind="user", name=user.name, role=user.role, unit=user.unit)  # type: ignore[arg-type]


@cache
def _hasher() -> PasswordHasher:
    from argon2 import PasswordHasher

    return PasswordHasher()


@cache
def _dummy_hash() -> str:
    return _hasher().hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    if not password:
        raise InvalidInput("the password is empty")
    return _hasher().hash(password)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


# --- managing users ------------------------------------------------------------------------


@dataclass(frozen=True)
class NewUser:
    user: str
    role: str
    unit: str | None
    token: str
    """The API token issued with the account (shown once; only its hash is kept)."""

    def document(self) -> dict[str, Any]:
        return {"user": self.user, "role": self.role, "unit": self.unit, "token": self.token}


def check_user_name(name: str) -> str:
    if not USER_NAME.fullmatch(name):
        raise InvalidInput(
            f"user name {name!r} must be 1-56 letters, digits or ._@- (starting with a letter "
            "or digit)"
        )
    return name


def add_user(
    sessions: sessionmaker[Session],
    *,
    name: str,
    role: str,
    unit: str | None,
    password: str | None,
    actor: str,
    now: datetime | None = None,
) -> NewUser:
    """Create a user and issue its first token. Officers need a unit; their user name is
    their officer ID (警号), and the unit is recorded on that person too, so items recorded
    under that officer ID belong to the unit."""
    now = now or datetime.now(UTC)
    check_user_name(name)
    if role not in ROLES:
        raise InvalidInput(f"role {role!r} is not one of {', '.join(ROLES)}")
    if unit is not None and not UNIT.fullmatch(unit):
        raise InvalidInput(f"unit {unit!r} must be 1-100 characters without surrounding blanks")
    if role == "officer" and not unit:
        raise InvalidInput("an officer belongs to a unit: give --unit")
    hashed = hash_password(password) if password is not None else None
    token = new_token()
    with transaction(sessions) as session:
        store.insert_user(
            session,
            user=User(
                name=name,
                role=role,
                unit=unit,
                password_hash=hashed,
                created_at=now,
                created_by=actor,
            ),
        )
        store.add_token(session, user_name=name, token_hash=token_hash(token), now=now)
        if role == "officer" and unit:
            store.set_person_unit(session, person_id=name, unit=unit, now=now)
        store.add_case_event(
            session,
            case_id=None,
            action="user_added",
            actor=actor,
            now=now,
            details={"user": name, "role": role, "unit": unit},
        )
    log.info("user %s added (%s, unit %s) by %s", name, role, unit, actor)
    return NewUser(name, role, unit, token)


def issue_token(
    sessions: sessionmaker[Session],
    *,
    name: str,
    actor: str,
    revoke_others: bool = False,
    now: datetime | None = None,
) -> str:
    """A new API token for ``name`` (optionally revoking every earlier one)."""
    now = now or datetime.now(UTC)
    token = new_token()
    with transaction(sessions) as session:
        store.get_user(session, name=name)
        if revoke_others:
            store.revoke_tokens(session, user_name=name, now=now)
        store.add_token(session, user_name=name, token_hash=token_hash(token), now=now)
        store.add_case_event(
            session,
            case_id=None,
            action="token_issued",
            actor=actor,
            now=now,
            details={"user": name, "revoked_others": revoke_others},
        )
    return token


def revoke_tokens(
    sessions: sessionmaker[Session],
    *,
    name: str,
    actor: str,
    keep_session: str | None = None,
    now: datetime | None = None,
) -> int:
    """Revoke every live token of ``name`` and end their web sessions (but ``keep_session``,
    the one asking from the web): a session left open could issue itself a new token.
    Returns how many tokens."""
    now = now or datetime.now(UTC)
    with transaction(sessions) as session:
        store.get_user(session, name=name)
        count = store.revoke_tokens(session, user_name=name, now=now)
        ended = store.end_web_sessions(session, now=now, user_name=name, keep=keep_session)
        store.add_case_event(
            session,
            case_id=None,
            action="tokens_revoked",
            actor=actor,
            now=now,
            details={"user": name, "count": count, "web_sessions": ended},
        )
    return count


def set_disabled(
    sessions: sessionmaker[Session],
    *,
    name: str,
    disabled: bool,
    reason: str,
    actor: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """``liuhen user disable`` / ``enable``. Disabling refuses the user's password and
    tokens and ends their web sessions at once; their tokens are revoked too, so enabling
    again needs a new token (``liuhen user token``). Rows stay: what they did stays theirs."""
    now = now or datetime.now(UTC)
    reason = check_reason(reason)
    with transaction(sessions) as session:
        store.set_user_disabled(session, name=name, at=now if disabled else None)
        tokens = store.revoke_tokens(session, user_name=name, now=now) if disabled else 0
        ended = store.end_web_sessions(session, now=now, user_name=name) if disabled else 0
        store.add_case_event(
            session,
            case_id=None,
            action="user_disabled" if disabled else "user_enabled",
            actor=actor,
            now=now,
            reason=reason,
            details={"user": name, "tokens_revoked": tokens, "web_sessions": ended},
        )
    log.info("user %s %s by %s: %r", name, "disabled" if disabled else "enabled", actor, reason)
    return {
        "user": name,
        "disabled": disabled,
        "reason": reason,
        "tokens_revoked": tokens,
        "web_sessions_ended": ended,
    }


def list_users(session: Session) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    out = []
    for user in store.users(session):
        grants = [
            {"case_id": g.case_id, "until": _ts(g.until), "expired": g.until <= now}
            for g in store.grants_of(session, user_name=user.name)
        ]
        out.append(
            {
                "user": user.name,
                "role": user.role,
                "unit": user.unit,
                "password": user.password_hash is not None,
                "tokens": store.live_tokens(session, user_name=user.name),
                "disabled": user.disabled_at is not None,
                "grants": grants,
                "created_at": _ts(user.created_at),
            }
        )
    return out


def _ts(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


# --- grants --------------------------------------------------------------------------------


def grant(
    sessions: sessionmaker[Session],
    *,
    name: str,
    case_id: str,
    until: datetime | None,
    actor: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Let a reviewer read a case until ``until`` (default: 30 days from now)."""
    now = now or datetime.now(UTC)
    until = until or now + DEFAULT_GRANT
    if until.tzinfo is None:
        raise InvalidInput("--until needs a time zone (e.g. 2026-12-31T00:00:00+08:00)")
    if until <= now:
        raise InvalidInput(f"--until {until.isoformat()} is not in the future")
    with transaction(sessions) as session:
        user = store.get_user(session, name=name)
        if user.role != "reviewer":
            raise InvalidInput(
                f"{name} is {user.role}: grants are for reviewers (officers see their unit's cases)"
            )
        repo.get_case(session, case_id=case_id)
        store.revoke_grants(session, user_name=name, case_id=case_id, actor=actor, now=now)
        store.add_grant(session, user_name=name, case_id=case_id, until=until, actor=actor, now=now)
        store.add_case_event(
            session,
            case_id=case_id,
            action="grant",
            actor=actor,
            now=now,
            details={"user": name, "until": _ts(until)},
        )
    log.info("case %s granted to %s until %s by %s", case_id, name, until, actor)
    return {"user": name, "case_id": case_id, "until": _ts(until)}


def revoke(
    sessions: sessionmaker[Session],
    *,
    name: str,
    case_id: str,
    actor: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    with transaction(sessions) as session:
        store.get_user(session, name=name)
        count = store.revoke_grants(session, user_name=name, case_id=case_id, actor=actor, now=now)
        store.add_case_event(
            session,
            case_id=case_id,
            action="revoke",
            actor=actor,
            now=now,
            details={"user": name, "grants": count},
        )
    return {"user": name, "case_id": case_id, "revoked": count}


# --- authentication ------------------------------------------------------------------------


def principal_for_token(session: Session, token: str) -> Principal:
    """The user a bearer token belongs to; :class:`Unauthenticated` for an unknown or revoked
    token. (Devices get their own lookup from the device registry.)"""
    if not token.startswith(TOKEN_PREFIX):
        raise Unauthenticated("not a liuhen user token")
    user = store.user_for_token(session, token_hash=token_hash(token))
    if user is None:
        raise Unauthenticated("unknown or revoked token, or a disabled user")
    return principal_of(user)


def check_password(
    sessions: sessionmaker[Session], *, username: str, password: str, source: str | None = None
) -> Principal:
    """Sign-in: the principal for ``username`` if ``password`` is right, else
    :class:`BadPassword` (the same error and about the same time whether the name exists or
    not). Every failure is logged and kept as a ``login_failed`` event."""
    from argon2.exceptions import InvalidHashError, VerificationError

    with sessions() as session:
        user = store.find_user(session, name=username) if USER_NAME.fullmatch(username) else None
        # A disabled user's hash is checked like any other (the same time), then refused.
        stored = user.password_hash if user is not None and user.disabled_at is None else None
    try:
        _hasher().verify(stored or _dummy_hash(), password)
        ok = stored is not None
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok or user is None:
        now = datetime.now(UTC)
        log.warning("failed sign-in for %r from %s", username[:64], source or "?")
        with transaction(sessions) as session:
            store.add_case_event(
                session,
                case_id=None,
                action="login_failed",
                actor=f"user:{username[:56]}",
                now=now,
                details={"source": source},
            )
        raise BadPassword("wrong user name or password")
    return principal_of(user)


# --- web sessions --------------------------------------------------------------------------


def start_web_session(
    sessions: sessionmaker[Session], *, sid: str, name: str, max_age_s: float
) -> None:
    now = datetime.now(UTC)
    with transaction(sessions) as session:
        store.add_web_session(
            session,
            sid=sid,
            user_name=name,
            now=now,
            expired_before=now - timedelta(seconds=max_age_s),
        )


def web_session_principal(
    session: Session, *, sid: str, name: str, max_age_s: float
) -> Principal | None:
    """The user of a live web session, as they are now; None once it ended (a logout, revoked
    credentials, a disabled user) or aged out."""
    started_after = datetime.now(UTC) - timedelta(seconds=max_age_s)
    user = store.web_session_user(session, sid=sid, user_name=name, started_after=started_after)
    return principal_of(user) if user is not None else None


def end_web_session(sessions: sessionmaker[Session], *, sid: str) -> None:
    with transaction(sessions) as session:
        store.end_web_sessions(session, now=datetime.now(UTC), sid=sid)
