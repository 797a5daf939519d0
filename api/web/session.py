"""The web's login session, CSRF tokens, login rate limits, and the seam to the user store.

**The seam.** Pages ask three questions, all through :class:`UserDirectory`:
``authenticate(username, password)``, ``lookup(username)`` (is this session's user still
there, with which role) and ``may_view_case(user, case_id)``. :func:`directory_of` is the one
place that picks the directory: ``app.state.web_directory`` when set (tests set a
:class:`MemoryDirectory`), else :class:`NoDirectory`, which lets nobody in. The real user
store (users, roles, grants, Argon2 passwords) plugs in there.

**The session** is a cookie signed with ``itsdangerous`` (HMAC-SHA1 key derivation over a
random 32-byte key kept in ``<home>/keys/web-session.key``, mode 0600), holding a session ID,
the CSRF token and the user's name (never a role: that is looked up on every request, so a
changed or removed user takes effect at once). It is HttpOnly, SameSite=Lax, Secure when the
request came over https, and expires after ``web.session_hours``. Every visitor gets one, so
the login form carries a CSRF token too; logging in issues a fresh session (new ID and token).

**CSRF**: every form carries the session's token in a hidden ``csrf`` field; every POST
compares it (constant time) before doing anything.

**Login attempts** are logged (logger ``liuhen.web``) and limited: past
``web.login_failures_per_user`` failures for one user name, or ``login_failures_per_address``
from one address, within ``web.login_window_s``, logins wait (429 with Retry-After).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

from fastapi import Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select

from ingest import custody
from ingest.runtime import Runtime
from storage import repository as repo
from storage.db import transaction
from storage.errors import NotFound
from storage.tables import ItemCase

__all__ = [
    "COOKIE",
    "LoginLimiter",
    "MemoryDirectory",
    "NoDirectory",
    "UserDirectory",
    "WebSession",
    "WebUser",
    "actor_of",
    "directory_of",
    "may_supervise",
    "may_view_item",
    "record_denial",
]

log = logging.getLogger("liuhen.web")

COOKIE = "liuhen_session"
ROLES = ("admin", "officer", "reviewer", "auditor")
Role = Literal["admin", "officer", "reviewer", "auditor"]
SEES_ALL = frozenset({"admin", "auditor"})
"""Roles that may read every case (auditors verify everything; admins run the system)."""


@dataclass(frozen=True)
class WebUser:
    """Who is logged in."""

    name: str
    role: str
    """admin, officer, reviewer or auditor (DESIGN.md, "Who may do what")."""
    unit: str | None = None
    """The officer's unit; officers see the cases of their unit."""


class UserDirectory(Protocol):
    """What the pages need from the user store."""

    def authenticate(self, rt: Runtime, *, username: str, password: str) -> WebUser | None:
        """The user, when the password is theirs; None otherwise (no reason given)."""
        ...

    def lookup(self, rt: Runtime, *, username: str) -> WebUser | None:
        """The user as they are now (role, unit), or None when they no longer exist."""
        ...

    def may_view_case(self, rt: Runtime, *, user: WebUser, case_id: str) -> bool:
        """Whether ``user`` may read the case (its items, their bytes and custody)."""
        ...


class NoDirectory:
    """No user store configured: nobody can log in."""

    def authenticate(self, rt: Runtime, *, username: str, password: str) -> WebUser | None:  # noqa: ARG002
        log.warning("login for %r refused: no user store is configured for the web", username)
        return None

    def lookup(self, rt: Runtime, *, username: str) -> WebUser | None:  # noqa: ARG002
        return None

    def may_view_case(self, rt: Runtime, *, user: WebUser, case_id: str) -> bool:  # noqa: ARG002
        return False


@dataclass
class _Entry:
    user: WebUser
    salt: bytes
    digest: bytes
    cases: set[str] = field(default_factory=set)


class MemoryDirectory:
    """Users held in memory, for tests and demos only (the real store is the people
    service). Passwords are kept as scrypt hashes; officers see the cases whose ``unit`` is
    theirs, reviewers the cases granted to them, admins and auditors every case."""

    def __init__(self) -> None:
        self._users: dict[str, _Entry] = {}

    def add(
        self,
        name: str,
        *,
        role: Role,
        password: str,
        unit: str | None = None,
        cases: Iterable[str] = (),
    ) -> WebUser:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        salt = secrets.token_bytes(16)
        user = WebUser(name, role, unit)
        self._users[name] = _Entry(user, salt, _scrypt(password, salt), set(cases))
        return user

    def grant(self, name: str, case_id: str) -> None:
        self._users[name].cases.add(case_id)

    def authenticate(self, rt: Runtime, *, username: str, password: str) -> WebUser | None:  # noqa: ARG002
        entry = self._users.get(username)
        if entry is None:
            _scrypt(password, b"\0" * 16)  # the same work whether or not the name exists
            return None
        if hmac.compare_digest(_scrypt(password, entry.salt), entry.digest):
            return entry.user
        return None

    def lookup(self, rt: Runtime, *, username: str) -> WebUser | None:  # noqa: ARG002
        entry = self._users.get(username)
        return entry.user if entry else None

    def may_view_case(self, rt: Runtime, *, user: WebUser, case_id: str) -> bool:
        if user.role in SEES_ALL:
            return True
        entry = self._users.get(user.name)
        if entry is None:
            return False
        if user.role == "reviewer":
            return case_id in entry.cases
        if user.role == "officer":
            if case_id in entry.cases:
                return True
            with rt.sessions() as session:
                try:
                    case = repo.get_case(session, case_id=case_id)
                except NotFound:
                    return False
                return user.unit is not None and case.unit == user.unit
        return False


def _scrypt(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)


def directory_of(request: Request) -> UserDirectory:
    """THE place the web finds its user store (see the module docstring)."""
    directory: UserDirectory | None = getattr(request.app.state, "web_directory", None)
    return directory if directory is not None else NoDirectory()


def actor_of(user: WebUser) -> str:
    """How a web user is named in custody events."""
    return f"web:{user.name}"[:64]


def may_supervise(user: WebUser) -> bool:
    return user.role in SEES_ALL


def may_view_item(rt: Runtime, directory: UserDirectory, *, user: WebUser, item_id: str) -> bool:
    """Admins and auditors: any item. Others: an item of a case they may view, or one they
    recorded themselves."""
    if user.role in SEES_ALL:
        return True
    with rt.sessions() as session:
        item = repo.get_item(session, item_id=item_id)
        if item.officer_id == user.name and user.role == "officer":
            return True
        cases = list(session.scalars(select(ItemCase.case_id).where(ItemCase.item_id == item_id)))
    return any(directory.may_view_case(rt, user=user, case_id=c) for c in cases)


def record_denial(
    rt: Runtime, *, user: WebUser, path: str, case_id: str | None = None, item_id: str | None = None
) -> None:
    """A refused look at a case or item: logged, and for an item a ``denied`` custody event
    in its chain (the item's history shows who tried)."""
    log.warning(
        "denied: user=%s role=%s path=%s case=%s item=%s",
        user.name,
        user.role,
        path,
        case_id,
        item_id,
    )
    if item_id is None:
        return
    with transaction(rt.sessions) as session:
        item = repo.get_item(session, item_id=item_id)
        custody.record(
            session,
            rt.ledger,
            item=item,
            action="denied",
            actor=actor_of(user),
            now=datetime.now(UTC),
            details={"path": path[:200], "role": user.role},
        )


# --- the cookie ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebSession:
    sid: str
    csrf: str
    username: str | None = None
    fresh: bool = False
    """Made for this request: the response must set the cookie."""

    def check_csrf(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(token or "", self.csrf)


def new_session(username: str | None = None) -> WebSession:
    return WebSession(secrets.token_urlsafe(16), secrets.token_urlsafe(32), username, fresh=True)


def session_key(path: Path) -> bytes:
    """The signing key, made once (O_EXCL: two processes starting together agree)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):
            key = path.read_bytes()
            if len(key) >= 32:
                return key
            time.sleep(0.01)  # the other process is still writing it
        raise RuntimeError(f"{path} holds no session key") from None
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


class SessionCodec:
    def __init__(self, key: bytes, *, max_age_s: float) -> None:
        self._s = URLSafeTimedSerializer(key, salt="liuhen-web-session")
        self.max_age_s = max_age_s

    def dumps(self, session: WebSession) -> str:
        return self._s.dumps({"i": session.sid, "c": session.csrf, "u": session.username})

    def loads(self, value: str | None) -> WebSession | None:
        if not value:
            return None
        try:
            data = self._s.loads(value, max_age=int(self.max_age_s))
        except BadSignature:  # also SignatureExpired
            return None
        if not isinstance(data, dict):
            return None
        sid, csrf, user = data.get("i"), data.get("c"), data.get("u")
        if not (isinstance(sid, str) and isinstance(csrf, str)):
            return None
        return WebSession(sid, csrf, user if isinstance(user, str) else None)


def codec_of(request: Request, rt: Runtime) -> SessionCodec:
    codec: SessionCodec | None = getattr(request.app.state, "web_session_codec", None)
    if codec is None:
        key = session_key(rt.settings.home_dir / "keys" / "web-session.key")
        codec = SessionCodec(key, max_age_s=rt.settings.web.session_hours * 3600)
        request.app.state.web_session_codec = codec
    return codec


def read_session(request: Request, rt: Runtime) -> WebSession:
    """This request's session; a fresh anonymous one when it has none (or a bad one)."""
    return codec_of(request, rt).loads(request.cookies.get(COOKIE)) or new_session()


def write_session(request: Request, rt: Runtime, response: Response, session: WebSession) -> None:
    codec = codec_of(request, rt)
    response.set_cookie(
        COOKIE,
        codec.dumps(session),
        max_age=int(codec.max_age_s),
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="lax",
    )


def clear_session(request: Request, response: Response) -> None:
    response.delete_cookie(
        COOKIE, path="/", secure=request.url.scheme == "https", httponly=True, samesite="lax"
    )


# --- login attempts --------------------------------------------------------------------------


class LoginLimiter:
    """Failed logins per user name and per address over a sliding window (in this process)."""

    def __init__(self, *, per_user: int, per_address: int, window_s: float) -> None:
        self.per_user, self.per_address, self.window_s = per_user, per_address, window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and q[0] <= now - self.window_s:
            q.popleft()
        return q

    def wait_s(self, *, username: str, address: str, now: float | None = None) -> float:
        """Seconds until a login may be tried again; 0 when it may be tried now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            waits = []
            for key, limit in (
                (f"u:{username}", self.per_user),
                (f"a:{address}", self.per_address),
            ):
                q = self._recent(key, now)
                if len(q) >= limit:
                    waits.append(q[len(q) - limit] + self.window_s - now)
            return max(waits, default=0.0)

    def failed(self, *, username: str, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._recent(f"u:{username}", now).append(now)
            self._recent(f"a:{address}", now).append(now)

    def succeeded(self, *, username: str) -> None:
        with self._lock:
            self._failures.pop(f"u:{username}", None)


def limiter_of(request: Request, rt: Runtime) -> LoginLimiter:
    limiter: LoginLimiter | None = getattr(request.app.state, "web_login_limiter", None)
    if limiter is None:
        w = rt.settings.web
        limiter = LoginLimiter(
            per_user=w.login_failures_per_user,
            per_address=w.login_failures_per_address,
            window_s=w.login_window_s,
        )
        request.app.state.web_login_limiter = limiter
    return limiter
