"""The web pages (server-rendered; readable without JavaScript except the players).

Each route: who is asking (login session), may they (``Web.refused`` asks
:mod:`ingest.access`, the API's one policy, and records a denial as the API does), call the
service (``ingest.timeline`` / ``search`` / ``links`` / ``retention`` / ``export`` /
``people`` / ``supervision`` / ``catalog``), render.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from api.routes.items import _bytes_response
from api.web import verification
from api.web.drawing import draw_bars, draw_map, draw_timeline, geojson_coords
from api.web.pages import Web, WebDep, client_address, log, safe_next
from api.web.session import clear_session, limiter_of, new_session, write_session
from ingest import catalog, links, people, retention, search, timeline
from ingest.access import Action
from ingest.errors import InvalidInput, ManifestError
from ingest.export import stream_export
from ingest.manifest import check_case_id
from ingest.people import Principal
from ingest.retrieve import log_read, resolve, verified_stream
from ingest.supervision import supervision_report, to_csv
from integrity.errors import LiuhenError
from storage import people as pstore
from storage import repository as repo
from storage.errors import NotFound

router = APIRouter(include_in_schema=False)

CsrfForm = Annotated[str | None, Form()]
TextForm = Annotated[str | None, Form()]
MAX_TRACK_BYTES = 8 * 1024 * 1024
"""A GPS track larger than this is not drawn (it is still listed and downloadable)."""
STATUSES = ("sealed", "ready", "partial", "unprocessable")
KINDS = ("video", "audio", "image")
SEARCH_FIELDS = ("case", "officer", "device", "unit", "from", "to", "bbox", "status", "media_type")
PAGE_SIZE = 50
DONE = ("link", "unlink", "hold", "release")


# --- login, logout, own page -----------------------------------------------------------------


@router.get("/")
def home(w: WebDep) -> Response:
    return w.finish(RedirectResponse("/me" if w.user else "/login", 303))


@router.get("/login")
def login_form(w: WebDep, next: str | None = None) -> Response:
    return w.render("login.html", next=safe_next(next), error=None, username="")


def _come_back(w: WebDep, target: str, username: str, wait: float) -> Response:
    """429: the login form again, saying when to try."""
    response = w.render(
        "login.html",
        status=429,
        next=target,
        username=username,
        error=f"{w.t('login_wait')} {int(wait) + 1}",
    )
    response.headers["Retry-After"] = str(int(wait) + 1)
    return response


@router.post("/login")
def login(
    w: WebDep,
    username: Annotated[str, Form(max_length=200)],
    password: Annotated[str, Form(max_length=1000)],
    csrf: CsrfForm = None,
    next: Annotated[str | None, Form()] = None,
) -> Response:
    address = client_address(w.request)
    target = safe_next(next)
    if not w.session.check_csrf(csrf):
        return w.csrf_refused()
    limiter = limiter_of(w.request, w.rt)
    wait = limiter.attempt(username=username, address=address)
    if wait > 0:
        log.warning("login refused (rate limit): user=%r address=%s", username, address)
        return _come_back(w, target, username, wait)
    with limiter.turn() as turn:
        if not turn:
            limiter.not_checked(username=username, address=address)
            log.warning("login refused (busy): user=%r address=%s", username, address)
            return _come_back(w, target, username, 1)
        user = w.directory.authenticate(w.rt, username=username, password=password, source=address)
    if user is None:  # the try stays counted
        log.warning("login failed: user=%r address=%s", username, address)
        return w.render(
            "login.html", status=401, next=target, username=username, error=w.t("login_failed")
        )
    limiter.succeeded(username=username, address=address)
    log.info("login: user=%s role=%s address=%s", user.name, user.role, address)
    response = RedirectResponse(target, 303)
    fresh = new_session(user.name)  # new ID, new token
    w.directory.start(w.rt, username=user.name, sid=fresh.sid)
    write_session(w.request, w.rt, response, fresh)
    return response


@router.post("/logout")
def logout(w: WebDep, csrf: CsrfForm = None) -> Response:
    if not w.session.check_csrf(csrf):
        return w.csrf_refused()
    if w.user:
        log.info("logout: user=%s", w.user.name)
    w.directory.end(w.rt, sid=w.session.sid)  # on the server too: a copied cookie is void
    response = RedirectResponse("/login", 303)
    clear_session(w.request, response)
    return response


def _me(
    w: Web, user: Principal, *, token: str | None = None, revoked: int | None = None
) -> Response:
    with w.rt.sessions() as session:
        live = pstore.live_tokens(session, user_name=user.name)
    return w.render("me.html", live_tokens=live, new_token=token, revoked=revoked)


@router.get("/me")
def me(w: WebDep) -> Response:
    if w.user is None:
        return w.to_login()
    return _me(w, w.user)


@router.post("/me/tokens")
def new_token(w: WebDep, csrf: CsrfForm = None) -> Response:
    """A new API token for the user, shown once on the page (only its hash is kept)."""
    if w.user is None:
        return w.to_login()
    if not w.session.check_csrf(csrf):
        return w.csrf_refused()
    token = people.issue_token(w.rt.sessions, name=w.user.name, actor=w.user.actor)
    log.info("token issued: user=%s", w.user.name)
    return _me(w, w.user, token=token)


@router.post("/me/tokens:revoke")
def revoke_tokens(w: WebDep, csrf: CsrfForm = None) -> Response:
    """Revoke every API token of the user (the login session is not a token: it stays)."""
    if w.user is None:
        return w.to_login()
    if not w.session.check_csrf(csrf):
        return w.csrf_refused()
    count = people.revoke_tokens(
        w.rt.sessions, name=w.user.name, actor=w.user.actor, keep_session=w.session.sid
    )
    log.info("tokens revoked: user=%s count=%d", w.user.name, count)
    return _me(w, w.user, revoked=count)


# --- cases -----------------------------------------------------------------------------------


def _case_done(case_id: str, done: str) -> Response:
    return RedirectResponse(f"/cases/{quote(case_id)}?{urlencode({'done': done})}", 303)


@router.post("/cases/{case_id:path}:{action}")
def case_action(
    w: WebDep,
    case_id: str,
    action: str,
    csrf: CsrfForm = None,
    item_id: TextForm = None,
    reason: TextForm = None,
) -> Response:
    """Link and unlink an item (with a reason), hold and release the case (with a reason),
    export it (the package streams back). Authorized as the API's routes are."""
    if w.user is None:
        return w.to_login()
    if not w.session.check_csrf(csrf):
        return w.csrf_refused()
    user, back = w.user, f"/cases/{quote(case_id)}"
    try:
        if action in ("link", "unlink"):
            item = (item_id or "").strip()
            if not item:
                raise InvalidInput(w.t("item_id_needed"))
            if (refused := w.refused(Action.ITEM_LINK, item_id=item, case_id=case_id)) is not None:
                return refused
            if action == "link":
                links.link(
                    w.rt,
                    item_id=item,
                    case_id=case_id,
                    reason=reason or "",
                    actor=user.actor,
                    unit=user.unit,
                )
            else:
                links.unlink(
                    w.rt, item_id=item, case_id=case_id, reason=reason or "", actor=user.actor
                )
            log.info("%s: user=%s item=%s case=%s", action, user.name, item, case_id)
            return _case_done(case_id, action)
        if action in ("hold", "release"):
            if (refused := w.refused(Action.CASE_HOLD, case_id=case_id)) is not None:
                return refused
            retention.set_case_hold(
                w.rt, case_id=case_id, held=action == "hold", reason=reason or "", actor=user.actor
            )
            return _case_done(case_id, action)
        if action == "export":
            if (refused := w.refused(Action.CASE_EXPORT, case_id=case_id)) is not None:
                return refused
            stream = stream_export(w.rt, case_id=case_id, actor=user.actor)
            log.info("export: user=%s case=%s package=%s", user.name, case_id, stream.folder)
            return w.finish(
                StreamingResponse(
                    iter(stream),
                    media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{stream.folder}.zip"'},
                )
            )
    except InvalidInput as e:
        return w.message(w.t("bad_input"), str(e), status=422, back=back)
    except NotFound as e:
        return w.message(w.t("not_found"), str(e), status=404, back=back)
    return w.message(w.t("not_found"), action, status=404, back=back)


@router.get("/case")
def open_case(w: WebDep, id: str = "") -> Response:
    """The "open case" form of /me: to the case's page."""
    case_id = id.strip()
    target = f"/cases/{quote(case_id)}" if case_id else "/me"
    return w.finish(RedirectResponse(target, 303))


@router.get("/cases/{case_id:path}")
def case_page(w: WebDep, case_id: str, gap: str | None = None, done: str | None = None) -> Response:
    if w.user is None:
        return w.to_login()
    if not w.may(Action.CASE_READ) and w.may(Action.CASE_HOLD):
        return _hold_page(w, case_id, done=done)  # an admin: the hold, not the evidence
    if (refused := w.refused(Action.CASE_READ, case_id=case_id)) is not None:
        return refused
    settings = w.rt.settings
    gap_s = settings.web.gap_threshold_s
    if gap and _digits(gap) and 0 < int(gap) <= 7 * 86400:
        gap_s = int(gap)
    try:
        with w.rt.sessions() as session:
            tl = timeline.case_timeline(
                session,
                case_id=case_id,
                gap_threshold=timedelta(seconds=gap_s),
                skew_threshold=timedelta(seconds=settings.pipeline.clock_skew_threshold_s),
            )
            held = pstore.case_is_held(session, case_id=case_id)
            taken_out = links.taken_out(session, case_id=case_id)
    except NotFound:
        return w.message(w.t("not_found"), w.t("no_such_case"), status=404, back="/search")
    drawing = draw_timeline(
        tl, officer_label=w.officer, time_label=w.clock, duration_label=w.duration
    )
    names = {r.item_id: r.original_name or r.item_id[:10] for r in tl.recordings}
    return w.render(
        "case.html",
        tl=tl,
        drawing=drawing,
        gap_s=gap_s,
        names=names,
        held=held,
        taken_out=taken_out,
        done=done if done in DONE else None,
        may_link=w.may(Action.ITEM_LINK, case_id=case_id),
        may_export=w.may(Action.CASE_EXPORT, case_id=case_id),
        may_hold=w.may(Action.CASE_HOLD, case_id=case_id),
    )


def _hold_page(w: Web, case_id: str, *, done: str | None) -> Response:
    """What an admin sees of a case: whether it is held, and the hold/release form; no
    evidence (admins do not read items: DESIGN.md, "Who may do what")."""
    try:
        check_case_id(case_id, w.rt.settings.case_id_pattern)
        with w.rt.sessions() as session:
            case = repo.get_case(session, case_id=case_id)
            held = pstore.case_is_held(session, case_id=case_id)
            count = len(repo.items_of_case(session, case_id=case_id))
    except (NotFound, ManifestError):
        return w.message(w.t("not_found"), w.t("no_such_case"), status=404, back="/me")
    return w.render(
        "case_hold.html",
        case_id=case_id,
        unit=case.unit,
        held=held,
        count=count,
        done=done if done in DONE else None,
    )


# --- items -----------------------------------------------------------------------------------


@router.post("/items/{item_id}:verify")
def verify_item(w: WebDep, item_id: str, csrf: CsrfForm = None) -> Response:
    if w.user is None:
        return w.to_login()
    if not w.session.check_csrf(csrf):
        return w.csrf_refused()
    if (refused := w.refused(Action.ITEM_READ, item_id=item_id)) is not None:
        return refused
    try:
        report = verification.verify_item(w.rt, item_id, actor=w.user.actor)
    except LiuhenError as e:  # the store or the index could not be reached: nothing checked
        log.error("verify: user=%s item=%s could not run: %s", w.user.name, item_id, e)
        return w.message(w.t("verify_failed"), str(e), status=503, back=f"/items/{item_id}")
    log.info("verify: user=%s item=%s ok=%s", w.user.name, item_id, report.ok)
    return _item_page(w, item_id, report=report)


@router.get("/items/{item_id}/files/{role}")
def item_file(w: WebDep, request: Request, item_id: str, role: str) -> Response:
    """The original or a derivative, with HTTP Range (the players seek with it); every
    read is a custody event under the user's name."""
    if w.user is None:
        return w.to_login()
    if (refused := w.refused(Action.ITEM_READ, item_id=item_id)) is not None:
        return refused
    try:
        target = resolve(w.rt, item_id, role)
    except NotFound:
        return w.message(w.t("not_found"), role, status=404, back=f"/items/{item_id}")
    response = _bytes_response(w.rt, w.user.actor, request, target)
    if role == "original":
        with w.rt.sessions() as session:
            name = repo.get_item(session, item_id=item_id).original_name or item_id
        response.headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(name)}"
    elif role != "proxy":
        response.headers["Cache-Control"] = "private, max-age=86400, immutable"
    return response


@router.get("/items/{item_id}")
def item_page(w: WebDep, item_id: str) -> Response:
    if w.user is None:
        return w.to_login()
    if (refused := w.refused(Action.ITEM_READ, item_id=item_id)) is not None:
        return refused
    log_read(w.rt, resolve(w.rt, item_id), action="view", actor=w.user.actor)
    return _item_page(w, item_id, report=None)


def _item_page(w: Web, item_id: str, *, report: Any) -> Response:
    with w.rt.sessions() as session:
        item = repo.get_item(session, item_id=item_id)
        doc = catalog.item_document(session, item)
        kind = timeline.recordings_of(session, [item])[0].kind
    has = {d["role"]: d for d in doc["derivatives"]}
    coords: list[tuple[float, float]] = []
    times: list[str | None] = []
    if "track" in has and has["track"]["size"] <= MAX_TRACK_BYTES:
        coords, iso_times = _track(w, item_id)
        times = [w.when(t).split(" ")[-1] if t else None for t in iso_times]
    marker = None
    if doc["gps"]:
        try:
            marker = (float(doc["gps"]["lon"]), float(doc["gps"]["lat"]))
        except ValueError:
            marker = None
    drawn = draw_map(coords, times=times, marker=marker)
    custody = [
        {**e, "details_text": json.dumps(e["details"], ensure_ascii=False, sort_keys=True)}
        for e in doc["custody"]
    ]
    unlinkable = [c for c in doc["case_ids"] if w.may(Action.ITEM_LINK, item_id=item_id, case_id=c)]
    return w.render(
        "item.html",
        doc=doc,
        kind=kind,
        has=has,
        map=drawn,
        track_fixes=len(coords),
        report=report,
        custody=custody,
        unlinkable=unlinkable,
        may_link=w.may(Action.ITEM_LINK, item_id=item_id),
        captured_at=_ts(doc["captured_at"]),
        captured_end=_ts(doc["captured_end"]),
        received_at=_ts(doc["received_at"]),
        logged_at=_ts(doc["logged_at"]),
        retain_until=_ts(doc["retain_until"]),
    )


def _ts(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def _track(w: Web, item_id: str) -> tuple[list[tuple[float, float]], list[str | None]]:
    """The item's GPS track from its ``track`` derivative, hash-checked as it is read."""
    target = resolve(w.rt, item_id, "track")
    body = b"".join(verified_stream(w.rt, target))
    try:
        return geojson_coords(json.loads(body))
    except ValueError:
        return [], []


# --- search ----------------------------------------------------------------------------------


def _midnight(w: Web, day: date) -> datetime:
    """The start of that day in the local zone, in UTC."""
    return datetime.combine(day, time(0), tzinfo=w.tz).astimezone(UTC)


def _digits(text: str) -> bool:
    """ASCII digits, few enough for ``int()`` (``'²'.isdigit()`` is true, ``int('²')`` fails)."""
    return text.isascii() and text.isdigit() and len(text) <= 12


def _local_day(w: Web, text: str | None, *, after: bool = False) -> datetime | None:
    """Midnight (local zone) starting that day, or the next day with ``after``."""
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{text!r} is not a date (YYYY-MM-DD)") from None
    try:
        return _midnight(w, day + timedelta(days=1 if after else 0))
    except OverflowError:
        raise InvalidInput(f"{text!r} is outside the calendar") from None


@router.get("/search")
def search_page(w: WebDep, request: Request) -> Response:
    """The search API's filters and visibility (``ingest.search``), a page at a time."""
    if w.user is None:
        return w.to_login()
    if (refused := w.refused(Action.ITEM_SEARCH)) is not None:
        return refused
    q = request.query_params
    form = {k: (q.get(k) or "").strip() or None for k in SEARCH_FIELDS}
    cursor = q.get("cursor") or None
    asked = q.get("limit") or ""
    limit = int(asked) if _digits(asked) and 1 <= int(asked) <= search.MAX_LIMIT else PAGE_SIZE
    shown = {**form, "date_from": form["from"], "date_to": form["to"]}
    searched = cursor is not None or any(k in q for k in SEARCH_FIELDS)
    page: dict[str, Any] = {"items": [], "next": None}
    try:
        filters = search.Filters(
            case=form["case"],
            officer=form["officer"],
            device=form["device"],
            unit=form["unit"],
            start=_local_day(w, form["from"]),
            end=_local_day(w, form["to"], after=True),
            bbox=search.parse_bbox(form["bbox"]),
            status=form["status"],
            media_type=form["media_type"],
        )
        if searched:
            with w.rt.sessions() as session:
                page = search.search(
                    session, principal=w.user, filters=filters, cursor=cursor, limit=limit
                )
    except InvalidInput as e:
        return w.render(
            "search.html", status=422, f=shown, error=f"{w.t('bad_input')}: {e}",
            results=[], next_url=None, searched=False, statuses=STATUSES, kinds=KINDS,
            case_hit=None, paged=False,
        )  # fmt: skip
    next_url = None
    if page["next"]:
        params = [(k, v) for k, v in q.multi_items() if k != "cursor"]
        next_url = "/search?" + urlencode([*params, ("cursor", page["next"])])
    case_hit = form["case"]
    if case_hit and not w.may(Action.CASE_READ, case_id=case_hit):
        case_hit = None
    return w.render(
        "search.html", f=shown, error=None, results=page["items"], next_url=next_url,
        searched=searched, statuses=STATUSES, kinds=KINDS, case_hit=case_hit,
        paged=cursor is not None,
    )  # fmt: skip


# --- supervision -----------------------------------------------------------------------------


def _supervision(w: Web, request: Request) -> tuple[Any, str, str, str | None, str | None]:
    """The report for the query's window; (report, from, to, unit, error)."""
    q = request.query_params
    today = datetime.now(w.tz).date()
    error = None
    try:
        first = date.fromisoformat(q.get("from") or (today - timedelta(days=29)).isoformat())
        last = date.fromisoformat(q.get("to") or today.isoformat())
        if last < first:
            raise ValueError("to < from")
        start, end = _midnight(w, first), _midnight(w, last + timedelta(days=1))
    except (ValueError, OverflowError) as e:  # OverflowError: a day at the calendar's edge
        error = f"{w.t('bad_input')}: {e}"
        first, last = today - timedelta(days=29), today
        start, end = _midnight(w, first), _midnight(w, last + timedelta(days=1))
    unit = (q.get("unit") or "").strip() or None
    s = w.rt.settings
    with w.rt.sessions() as session:
        report = supervision_report(
            session,
            start=start,
            end=end,
            gap_threshold=timedelta(seconds=s.web.gap_threshold_s),
            late_after=timedelta(hours=s.web.late_upload_hours),
            skew_threshold=timedelta(seconds=s.pipeline.clock_skew_threshold_s),
            units=[unit] if unit else None,
        )
    return report, first.isoformat(), last.isoformat(), unit, error


def _supervisor(w: Web) -> Response | None:
    if w.user is None:
        return w.to_login()
    return w.refused(Action.SUPERVISION_READ)


@router.get("/supervision")
def supervision(w: WebDep, request: Request) -> Response:
    if (refused := _supervisor(w)) is not None:
        return refused
    report, first, last, unit, error = _supervision(w, request)
    charts = []
    for u in report.units:
        rows = [
            (
                w.officer(officer or None),
                fig.recorded_hours,
                f"{w.duration(fig.recorded_seconds)} · {fig.items} "
                + w.t("item_one" if fig.items == 1 else "items_short"),
                bool(fig.cases_with_gaps),
            )
            for officer, fig in u.officers.items()
        ]
        charts.append(draw_bars(rows))
    query = urlencode({"from": first, "to": last, **({"unit": unit} if unit else {})})
    return w.render(
        "supervision.html", status=422 if error else 200, report=report, charts=charts,
        date_from=first, date_to=last, unit=unit, query=query, error=error,
    )  # fmt: skip


@router.get("/supervision.csv")
def supervision_csv(w: WebDep, request: Request) -> Response:
    if (refused := _supervisor(w)) is not None:
        return refused
    report, first, last, _unit, error = _supervision(w, request)
    if error:
        return w.message(w.t("bad_input"), error, status=422, back="/supervision")
    body = "\ufeff" + to_csv(report)  # the BOM makes spreadsheet programs read UTF-8
    return w.finish(
        Response(
            body,
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="supervision-{first}-{last}.csv"'
            },
        )
    )
