"""The web's login session, CSRF tokens, login rate limits, and who is logged in.

**Who.** A logged-in user is a :class:`ingest.people.Principal`, the same the API's bearer
tokens give; pages decide what it may do with :mod:`ingest.access`, the one policy the API
uses too (``api/web/pages.py``: ``Web.allow`` / ``Web.may``). The pages ask the user store
two questions through :class:`UserDirectory`: ``authenticate(username, password, source)``
``lookup(username, sid)`` (is this session live and its user still there, with which role
and unit), ``start`` and ``end`` (a login's session, a logout).
:func:`directory_of` finds it at ``app.state.web_directory``, which ``create_app`` sets to
:class:`PeopleDirectory` (the users table, Argon2 passwords: ``liuhen user add NAME --role R
--password-stdin``); an app without one lets nobody in (:class:`NoDirectory`).

**The session** is a cookie signed with ``itsdangerous`` (HMAC-SHA1 key derivation over a
random 32-byte key kept in ``<home>/keys/web-session.key``, mode 0600), holding a session ID,
the CSRF token and the user's name (never a role: that is looked up on every request, so a
changed or removed user takes effect at once). The session ID is also a row on the server
(``web_sessions``): a logout ends it there, and so do ``liuhen user revoke-tokens`` and
``liuhen user disable`` for every session of that user; a copied cookie is then worth
nothing. It is HttpOnly, SameSite=Lax, Secure when the
request came over https, and expires after ``web.session_hours``. Every visitor gets one, so
the login form carries a CSRF token too; logging in issues a fresh session (new ID and token).

**CSRF**: every form carries the session's token in a hidden ``csrf`` field; every POST
compares it (constant time) before doing anything.

**Login attempts** are logged (logger ``liuhen.web``; a wrong password is also a
``login_failed`` event of the people service) and limited: past
``web.login_failures_per_user`` failures for one user name, or ``login_failures_per_address``
from one address, within ``web.login_window_s``, logins wait (429 with Retry-After). A try
counts from before its password is checked (tries sent at once cannot all slip through), and
at most ``LOGINS_AT_ONCE`` checks run together.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fastapi import Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from ingest import people
from ingest.errors import BadPassword
from ingest.people import Principal
from ingest.runtime import Runtime

__all__ = [
    "COOKIE",
    "LoginLimiter",
    "NoDirectory",
    "PeopleDirectory",
    "UserDirectory",
    "WebSession",
    "directory_of",
]

log = logging.getLogger("liuhen.web")

COOKIE = "liuhen_session"


class UserDirectory(Protocol):
    """What the pages need from the user store."""

    def authenticate(
        self, rt: Runtime, *, username: str, password: str, source: str
    ) -> Principal | None:
        """The user, when the password is theirs; None otherwise (no reason given)."""
        ...

    def lookup(self, rt: Runtime, *, username: str, sid: str) -> Principal | None:
        """The user of session ``sid`` as they are now (role, unit), or None when the session
        ended (a logout, revoked credentials, a disabled user) or the user no longer exists."""
        ...

    def start(self, rt: Runtime, *, username: str, sid: str) -> None:
        """Record a login's new session."""
        ...

    def end(self, rt: Runtime, *, sid: str) -> None:
        """End a session (a logout)."""
        ...


class PeopleDirectory:
    """The people service: the users table, Argon2 passwords (``ingest.people``)."""

    def authenticate(
        self, rt: Runtime, *, username: str, password: str, source: str
    ) -> Principal | None:
        try:
            return people.check_password(
                rt.sessions, username=username, password=password, source=f"web {source}"
            )
        except BadPassword:
            return None

    def lookup(self, rt: Runtime, *, username: str, sid: str) -> Principal | None:
        with rt.sessions() as session:
            return people.web_session_principal(
                session, sid=sid, name=username, max_age_s=rt.settings.web.session_hours * 3600
            )

    def start(self, rt: Runtime, *, username: str, sid: str) -> None:
        people.start_web_session(
            rt.sessions, sid=sid, name=username, max_age_s=rt.settings.web.session_hours * 3600
        )

    def end(self, rt: Runtime, *, sid: str) -> None:
        people.end_web_session(rt.sessions, sid=sid)


class NoDirectory:
    """No user store configured: nobody can log in."""

    def authenticate(
        self,
        rt: Runtime,  # noqa: ARG002
        *,
        username: str,
        password: str,  # noqa: ARG002
        source: str,  # noqa: ARG002
    ) -> Principal | None:
        log.warning("login for %r refused: no user store is configured for the web", username)
        return None

    def lookup(self, rt: Runtime, *, username: str, sid: str) -> Principal | None:  # noqa: ARG002
        return None

    def start(self, rt: Runtime, *, username: str, sid: str) -> None:  # noqa: ARG002
        raise RuntimeError("no user store: nobody logs in")

    def end(self, rt: Runtime, *, sid: str) -> None:  # noqa: ARG002
        return None


def directory_of(request: Request) -> UserDirectory:
    """THE place the web finds its user store (see the module docstring)."""
    directory: UserDirectory | None = getattr(request.app.state, "web_directory", None)
    return directory if directory is not None else NoDirectory()


# --- the cookie ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebSession:
    sid: str
    csrf: str
    username: str | None = None
    fresh: bool = False
    """Made for this request: the response must set the cookie."""

    def check_csrf(self, token: str | None) -> bool:
        # As bytes: compare_digest refuses str with characters beyond ASCII (a TypeError).
        return bool(token) and hmac.compare_digest((token or "").encode(), self.csrf.encode())


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


LOGINS_AT_ONCE = 4
"""Password checks running together at most (each takes Argon2's memory, 64 MiB)."""
CHECK_WAIT_S = 10.0
"""How long a login waits for a turn to check its password before it is told to come back."""


class LoginLimiter:
    """Login tries per user name and per address over a sliding window (in this process).

    A try is counted before its password is checked and taken back when it succeeds, so tries
    sent at once cannot all pass before the first failure is counted; and at most
    ``at_once`` checks run together."""

    def __init__(
        self, *, per_user: int, per_address: int, window_s: float, at_once: int = LOGINS_AT_ONCE
    ) -> None:
        self.per_user, self.per_address, self.window_s = per_user, per_address, window_s
        self._tries: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._checks = threading.BoundedSemaphore(at_once)

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._tries.setdefault(key, deque())
        while q and q[0] <= now - self.window_s:
            q.popleft()
        return q

    def attempt(self, *, username: str, address: str, now: float | None = None) -> float:
        """Count a try: 0 when it may go ahead, else the seconds until one may (not counted)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            queues = [
                (self._recent(f"u:{username}", now), self.per_user),
                (self._recent(f"a:{address}", now), self.per_address),
            ]
            waits = [
                q[len(q) - limit] + self.window_s - now for q, limit in queues if len(q) >= limit
            ]
            if waits:
                return max(waits)
            for q, _ in queues:
                q.append(now)
            return 0.0

    def succeeded(self, *, username: str, address: str) -> None:
        """The try was good: the name starts afresh, and the address gets its try back."""
        with self._lock:
            self._tries.pop(f"u:{username}", None)
            self._take_back(f"a:{address}")

    def not_checked(self, *, username: str, address: str) -> None:
        """The try never reached the password: both get it back."""
        with self._lock:
            self._take_back(f"u:{username}")
            self._take_back(f"a:{address}")

    def _take_back(self, key: str) -> None:
        q = self._tries.get(key)
        if q:
            q.pop()

    @contextmanager
    def turn(self) -> Iterator[bool]:
        """A turn to check a password; False when none came free within ``CHECK_WAIT_S``."""
        got = self._checks.acquire(timeout=CHECK_WAIT_S)
        try:
            yield got
        finally:
            if got:
                self._checks.release()


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
