"""The web pages (server-rendered; readable without JavaScript except the players).

Each route: who is asking (login session), may they, fetch through a service function,
render. Data access lives in ``ingest.timeline`` / ``ingest.supervision`` / ``ingest.browse``
/ ``ingest.catalog``; access decisions in ``api.web.session``.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from api.routes.items import _bytes_response
from api.web import verification
from api.web.drawing import draw_bars, draw_map, draw_timeline, geojson_coords
from api.web.pages import Web, WebDep, client_address, log, safe_next
from api.web.session import (
    WebUser,
    actor_of,
    clear_session,
    limiter_of,
    may_supervise,
    may_view_item,
    new_session,
    record_denial,
    write_session,
)
from ingest import catalog, timeline
from ingest.browse import KINDS, ItemFilters, find_items, parse_bbox
from ingest.errors import ManifestError
from ingest.manifest import check_case_id
from ingest.retrieve import log_read, resolve, verified_stream
from ingest.supervision import supervision_report, to_csv
from integrity.errors import LiuhenError
from storage import repository as repo
from storage.errors import NotFound
from storage.tables import Item

router = APIRouter(include_in_schema=False)

CsrfForm = Annotated[str | None, Form()]
MAX_TRACK_BYTES = 8 * 1024 * 1024
"""A GPS track larger than this is not drawn (it is still listed and downloadable)."""
CASE_ACTIONS = ("link", "unlink", "hold", "release", "export")
STATUSES = ("sealed", "ready", "partial", "unprocessable")
SEARCH_FIELDS = ("case", "officer", "device", "unit", "from", "to", "bbox", "status", "media_type")


# --- login, logout, own page -----------------------------------------------------------------


@router.get("/")
def home(w: WebDep) -> Response:
    return w.finish(RedirectResponse("/me" if w.user else "/login", 303))


@router.get("/login")
def login_form(w: WebDep, next: str | None = None) -> Response:
    return w.render("login.html", next=safe_next(next), error=None, username="")


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
    wait = limiter.wait_s(username=username, address=address)
    if wait > 0:
        log.warning("login refused (rate limit): user=%r address=%s", username, address)
        response = w.render(
            "login.html",
            status=429,
            next=target,
            username=username,
            error=f"{w.t('login_wait')} {int(wait) + 1}",
        )
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    user = w.directory.authenticate(w.rt, username=username, password=password)
    if user is None:
        limiter.failed(username=username, address=address)
        log.warning("login failed: user=%r address=%s", username, address)
        return w.render(
            "login.html", status=401, next=target, username=username, error=w.t("login_failed")
        )
    limiter.succeeded(username=username)
    log.info("login: user=%s role=%s address=%s", user.name, user.role, address)
    response = RedirectResponse(target, 303)
    write_session(w.request, w.rt, response, new_session(user.name))  # new ID, new token
    return response


@router.post("/logout")
def logout(w: WebDep, csrf: CsrfForm = None) -> Response:
    if not w.session.check_csrf(csrf):
        return w.csrf_refused()
    if w.user:
        log.info("logout: user=%s", w.user.name)
    response = RedirectResponse("/login", 303)
    clear_session(w.request, response)
    return response


@router.get("/me")
def me(w: WebDep) -> Response:
    if w.user is None:
        return w.to_login()
    return w.render("me.html")


@router.post("/me/tokens")
def new_token(w: WebDep, csrf: CsrfForm = None) -> Response:
    if w.user is None:
        return w.to_login()
    if not w.session.check_csrf(csrf):
        return w.csrf_refused()
    return _not_yet(w, back="/me")


def _not_yet(w: Web, *, back: str) -> Response:
    return w.message(w.t("not_yet_title"), w.t("not_yet_text"), status=501, back=back)


# --- cases -----------------------------------------------------------------------------------


def _case_allowed(w: Web, user: WebUser, case_id: str) -> Response | None:
    """None when the user may see the case; else the page that says why not."""
    try:
        check_case_id(case_id, w.rt.settings.case_id_pattern)
    except ManifestError:
        return w.message(w.t("not_found"), w.t("no_such_case"), status=404, back="/search")
    if w.directory.may_view_case(w.rt, user=user, case_id=case_id):
        return None
    record_denial(w.rt, user=user, path=w.request.url.path, case_id=case_id)
    return w.message(w.t("denied_title"), w.t("denied_case"), status=403, back="/me")


@router.post("/cases/{case_id:path}:{action}")
def case_action(w: WebDep, case_id: str, action: str, csrf: CsrfForm = None) -> Response:
    """Link, unlink, hold, release, export: the services behind them are not here yet."""
    if w.user is None:
        return w.to_login()
    if not w.session.check_csrf(csrf):
        return w.csrf_refused()
    if action not in CASE_ACTIONS:
        return w.message(w.t("not_found"), action, status=404, back=f"/cases/{case_id}")
    if (refused := _case_allowed(w, w.user, case_id)) is not None:
        return refused
    return _not_yet(w, back=f"/cases/{case_id}")


@router.get("/cases/{case_id:path}")
def case_page(w: WebDep, case_id: str, gap: str | None = None) -> Response:
    if w.user is None:
        return w.to_login()
    if (refused := _case_allowed(w, w.user, case_id)) is not None:
        return refused
    settings = w.rt.settings
    gap_s = settings.web.gap_threshold_s
    if gap and gap.isdigit() and 0 < int(gap) <= 7 * 86400:
        gap_s = int(gap)
    try:
        with w.rt.sessions() as session:
            tl = timeline.case_timeline(
                session,
                case_id=case_id,
                gap_threshold=timedelta(seconds=gap_s),
                skew_threshold=timedelta(seconds=settings.pipeline.clock_skew_threshold_s),
            )
    except NotFound:
        return w.message(w.t("not_found"), w.t("no_such_case"), status=404, back="/search")
    drawing = draw_timeline(
        tl, officer_label=w.officer, time_label=w.clock, duration_label=w.duration
    )
    names = {r.item_id: r.original_name or r.item_id[:10] for r in tl.recordings}
    return w.render("case.html", tl=tl, drawing=drawing, gap_s=gap_s, names=names)


# --- items -----------------------------------------------------------------------------------


def _item_allowed(w: Web, user: WebUser, item_id: str) -> Response | None:
    try:
        allowed = may_view_item(w.rt, w.directory, user=user, item_id=item_id)
    except NotFound:
        return w.message(w.t("not_found"), w.t("no_such_item"), status=404, back="/search")
    if allowed:
        return None
    record_denial(w.rt, user=user, path=w.request.url.path, item_id=item_id)
    return w.message(w.t("denied_title"), w.t("denied_item"), status=403, back="/me")


@router.post("/items/{item_id}:verify")
def verify_item(w: WebDep, item_id: str, csrf: CsrfForm = None) -> Response:
    if w.user is None:
        return w.to_login()
    if not w.session.check_csrf(csrf):
        return w.csrf_refused()
    if (refused := _item_allowed(w, w.user, item_id)) is not None:
        return refused
    try:
        report = verification.verify_item(w.rt, item_id, actor=actor_of(w.user))
    except LiuhenError as e:  # the store or the index could not be reached: nothing checked
        log.error("verify: user=%s item=%s could not run: %s", w.user.name, item_id, e)
        return w.message(w.t("verify_failed"), str(e), status=503, back=f"/items/{item_id}")
    log.info("verify: user=%s item=%s ok=%s", w.user.name, item_id, report.ok)
    return _item_page(w, w.user, item_id, report=report)


@router.get("/items/{item_id}/files/{role}")
def item_file(w: WebDep, request: Request, item_id: str, role: str) -> Response:
    """The original or a derivative, with HTTP Range (the players seek with it); every
    read is a custody event under the user's name."""
    if w.user is None:
        return w.to_login()
    if (refused := _item_allowed(w, w.user, item_id)) is not None:
        return refused
    try:
        target = resolve(w.rt, item_id, role)
    except NotFound:
        return w.message(w.t("not_found"), role, status=404, back=f"/items/{item_id}")
    response = _bytes_response(w.rt, actor_of(w.user), request, target)
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
    if (refused := _item_allowed(w, w.user, item_id)) is not None:
        return refused
    log_read(w.rt, resolve(w.rt, item_id), action="view", actor=actor_of(w.user))
    return _item_page(w, w.user, item_id, report=None)


def _item_page(w: Web, _user: WebUser, item_id: str, *, report: Any) -> Response:
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
    return w.render(
        "item.html",
        doc=doc,
        kind=kind,
        has=has,
        map=drawn,
        track_fixes=len(coords),
        report=report,
        custody=custody,
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


def _local_day(w: Web, text: str | None, *, after: bool = False) -> datetime | None:
    """Midnight (local zone) starting that day, or the next day with ``after``."""
    if not text:
        return None
    return _midnight(w, date.fromisoformat(text) + timedelta(days=1 if after else 0))


@router.get("/search")
def search(w: WebDep, request: Request) -> Response:
    if w.user is None:
        return w.to_login()
    user = w.user
    q = request.query_params
    form = {k: (q.get(k) or "").strip() or None for k in SEARCH_FIELDS}
    shown = {**form, "date_from": form["from"], "date_to": form["to"]}
    try:
        filters = ItemFilters(
            case=form["case"],
            officer=form["officer"],
            device=form["device"],
            unit=form["unit"],
            start=_local_day(w, form["from"]),
            end=_local_day(w, form["to"], after=True),
            bbox=parse_bbox(form["bbox"]) if form["bbox"] else None,
            status=form["status"],
            media_type=form["media_type"],
        )
    except ValueError as e:
        return w.render(
            "search.html", status=422, f=shown, error=f"{w.t('bad_input')}: {e}",
            results=[], more=False, searched=False, statuses=STATUSES, kinds=KINDS,
            case_hit=None,
        )  # fmt: skip
    decided: dict[str, bool] = {}

    def may_case(case_id: str) -> bool:
        if case_id not in decided:
            decided[case_id] = w.directory.may_view_case(w.rt, user=user, case_id=case_id)
        return decided[case_id]

    def visible(item: Item, cases: list[str]) -> bool:
        if user.role in ("admin", "auditor"):
            return True
        if user.role == "officer" and item.officer_id == user.name:
            return True
        return any(may_case(c) for c in cases)

    results: list[Any] = []
    more = False
    if not filters.empty:
        with w.rt.sessions() as session:
            results, more = find_items(session, filters=filters, visible=visible)
    case_hit = form["case"] if form["case"] and may_case(form["case"]) else None
    return w.render(
        "search.html", f=shown, error=None, results=results, more=more,
        searched=not filters.empty, statuses=STATUSES, kinds=KINDS, case_hit=case_hit,
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
    except ValueError as e:
        error = f"{w.t('bad_input')}: {e}"
        first, last = today - timedelta(days=29), today
    unit = (q.get("unit") or "").strip() or None
    start, end = _midnight(w, first), _midnight(w, last + timedelta(days=1))
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
    if not may_supervise(w.user):
        record_denial(w.rt, user=w.user, path=w.request.url.path)
        return w.message(w.t("denied_title"), w.t("denied_supervision"), status=403, back="/me")
    return None


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
