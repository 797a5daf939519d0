"""What every page needs: the templates, the request's session, user and language, and the
formatting of times, durations and sizes. Routes (``api/routes/web.py``) stay thin."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from api.deps import RuntimeDep
from api.web import i18n
from api.web.session import (
    UserDirectory,
    WebSession,
    directory_of,
    read_session,
    write_session,
)
from ingest import access
from ingest.access import Action
from ingest.errors import Forbidden, ManifestError
from ingest.people import Principal
from ingest.runtime import Runtime
from storage.errors import NotFound

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"
LANG_COOKIE = "liuhen_lang"
log = logging.getLogger("liuhen.web")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self'; media-src 'self'; style-src 'self'; "
        "script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_templates: Jinja2Templates | None = None


def templates() -> Jinja2Templates:
    """Loaded on first use (nothing heavy at import time)."""
    global _templates
    if _templates is None:
        _templates = Jinja2Templates(directory=WEB_DIR / "templates")
    return _templates


def pick_lang(request: Request) -> tuple[str, bool]:
    """(language, whether the query chose it): ``?lang=``, the cookie, Accept-Language,
    else Chinese."""
    asked = request.query_params.get("lang")
    if asked in i18n.LANGS:
        return asked, True
    cookie = request.cookies.get(LANG_COOKIE)
    if cookie in i18n.LANGS:
        return cookie, False
    return i18n.from_accept_language(request.headers.get("accept-language")), False


@dataclass
class Web:
    """One page request: who, in which language, and how to answer."""

    request: Request
    rt: Runtime
    session: WebSession
    user: Principal | None
    lang: str
    lang_chosen: bool
    directory: UserDirectory

    @property
    def tz(self) -> timezone:
        return timezone(timedelta(minutes=self.rt.settings.pipeline.local_utc_offset_minutes))

    def t(self, key: str) -> str:
        return i18n.label(key, self.lang)

    # --- who may do what (ingest.access: the API's policy) ------------------------------

    def may(
        self, action: Action, *, item_id: str | None = None, case_id: str | None = None
    ) -> bool:
        """Whether the user may: for showing a link or a form (nothing is recorded)."""
        if self.user is None:
            return False
        with self.rt.sessions() as session:
            reason = access.decide(
                session,
                self.user,
                action,
                item_id=item_id,
                case_id=case_id,
                now=datetime.now(UTC),
            )
        return reason is None

    def refused(
        self, action: Action, *, item_id: str | None = None, case_id: str | None = None
    ) -> Response | None:
        """None when the user may; else the page saying why not. A denial is recorded as
        the API records it (``access.require``: a ``denied`` custody event on the item, a
        ``denied`` case event for a case or the supervision page) and logged here too."""
        if self.user is None:
            return self.to_login()
        back = "/search" if self.may(Action.ITEM_SEARCH) else "/me"
        try:
            access.require(self.rt, self.user, action, item_id=item_id, case_id=case_id)
        except (NotFound, ManifestError):
            what = "no_such_item" if item_id is not None else "no_such_case"
            return self.message(self.t("not_found"), self.t(what), status=404, back=back)
        except Forbidden as e:
            log.warning(
                "denied: user=%s role=%s path=%s action=%s: %s",
                self.user.name,
                self.user.role,
                self.request.url.path,
                action.value,
                e,
            )
            key = {
                Action.SUPERVISION_READ: "denied_supervision",
                Action.CASE_READ: "denied_case",
                Action.ITEM_READ: "denied_item",
            }.get(action, "denied_action")
            return self.message(self.t("denied_title"), self.t(key), status=403, back=back)
        return None

    # --- formatting (also given to templates) -------------------------------------------

    def when(self, value: datetime | str | None, *, seconds: bool = True) -> str:
        if value is None:
            return "—"
        if isinstance(value, str):
            value = parse_ts(value)
            if value is None:
                return "—"
        try:
            local = value.astimezone(self.tz)
        except OverflowError:  # at the calendar's edge: shown as it is stored
            return value.isoformat()
        return local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")

    def clock(self, value: datetime, step_s: int) -> str:
        local = value.astimezone(self.tz)
        if step_s > 604800:  # ticks weeks apart or more: the year matters
            return local.strftime("%Y-%m-%d")
        if step_s >= 86400:
            return local.strftime("%m-%d")
        return local.strftime("%H:%M:%S" if step_s < 60 else "%H:%M")

    def duration(self, seconds: float) -> str:
        return i18n.duration(seconds, self.lang)

    def offset(self, ms: int | None) -> str:
        if ms is None:
            return "—"
        seconds = ms / 1000
        if abs(seconds) < 60:
            return f"{seconds:+.1f} s"
        return ("+" if seconds > 0 else "−") + self.duration(abs(seconds))

    def officer(self, officer_id: str | None) -> str:
        return officer_id or self.t("unknown")

    def context(self, **extra: Any) -> dict[str, Any]:
        lang = self.lang
        return {
            "request": self.request,
            "t": self.t,
            "lang": lang,
            "user": self.user,
            "may": lambda action, **target: self.may(Action(action), **target),
            "csrf": self.session.csrf,
            "tz": self.when_tz(),
            "when": self.when,
            "duration": self.duration,
            "offset": self.offset,
            "officer": self.officer,
            "size": i18n.size,
            "static": lambda name: f"/static/{name}",
            "lang_url": self.lang_url,
            "status_label": lambda code: i18n.coded("status", code, lang),
            "kind_label": lambda code: i18n.coded("kind", code, lang),
            "source_label": lambda code: i18n.coded("source", code, lang),
            "problem_label": lambda code: i18n.coded("problem", code, lang),
            "action_label": lambda code: i18n.coded("action", code, lang),
            "recipe": lambda r: json.dumps(r, ensure_ascii=False, indent=2, sort_keys=True),
            **extra,
        }

    def when_tz(self) -> str:
        minutes = self.rt.settings.pipeline.local_utc_offset_minutes
        sign = "+" if minutes >= 0 else "-"
        return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"

    def lang_url(self, lang: str) -> str:
        params = [(k, v) for k, v in self.request.query_params.multi_items() if k != "lang"]
        return f"{self.request.url.path}?{urlencode([*params, ('lang', lang)])}"

    # --- answers ------------------------------------------------------------------------

    def finish(self, response: Response) -> Response:
        """Set the session cookie when it is new, remember a chosen language, add headers."""
        if self.session.fresh:
            write_session(self.request, self.rt, response, self.session)
        if self.lang_chosen:
            response.set_cookie(
                LANG_COOKIE, self.lang, max_age=365 * 86400, path="/", samesite="lax",
                secure=self.request.url.scheme == "https", httponly=True,
            )  # fmt: skip
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    def render(self, name: str, *, status: int = 200, **extra: Any) -> Response:
        response = templates().TemplateResponse(
            self.request, name, self.context(**extra), status_code=status
        )
        return self.finish(response)

    def message(
        self, heading: str, text: str, *, status: int, back: str | None = None, tone: str = "warn"
    ) -> Response:
        return self.render(
            "message.html", status=status, heading=heading, text=text, back=back, tone=tone
        )

    def to_login(self) -> Response:
        target = self.request.url.path
        if self.request.url.query:
            target += "?" + self.request.url.query
        return self.finish(RedirectResponse(f"/login?{urlencode({'next': target})}", 303))

    def csrf_refused(self) -> Response:
        log.warning(
            "refused: bad or missing CSRF token on %s %s from %s (user %s)",
            self.request.method,
            self.request.url.path,
            client_address(self.request),
            self.user.name if self.user else None,
        )
        return self.message(self.t("csrf_title"), self.t("csrf_text"), status=403, back="/")


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def get_web(request: Request, rt: RuntimeDep) -> Web:
    session = read_session(request, rt)
    directory = directory_of(request)
    user = None
    if session.username is not None:
        user = directory.lookup(rt, username=session.username, sid=session.sid)
    lang, chosen = pick_lang(request)
    return Web(request, rt, session, user, lang, chosen, directory)


WebDep = Annotated[Web, Depends(get_web)]


def parse_ts(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def html_response(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status)


def safe_next(target: str | None) -> str:
    """Only a path on this site (never ``//host`` or a scheme) may follow a login."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/me"
    return target
