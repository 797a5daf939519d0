"""The web pages on real services through the app (no browser): login as real users (the
people service), sessions, CSRF, rate limits, who may see what (``ingest.access``, as the
API), the case page's gaps and overlaps, link/unlink, hold/release, export, tokens, search
(``ingest.search``, cursor pages), supervision and its CSV.

The browser test (tests/e2e/test_browser.py) plays media; here every case uses items sealed
with manifest times, so no pipeline needs to run.
"""

from __future__ import annotations

import csv
import html
import io
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from configs.settings import Settings
from ingest import people
from ingest.intake import seal_file
from ingest.manifest import Manifest
from ingest.runtime import Runtime
from integrity.package import verify_package
from storage import people as pstore
from storage import repository as repo
from tests.conftest import SettingsFactory
from tests.people import bearer
from tests.webdata import (
    PASSWORD,
    Clip,
    csrf_of,
    fake_mp4,
    login,
    make_web_users,
    post_form,
    seal_clips,
    set_units,
)

CASE = "C-2026/0301"
NEXT_PAGE = re.compile(r'href="([^"]+)" id="next-page"')
# Officer p1: 0-60 s, 70-130 s (a 10 s pause: under the 60 s threshold), 400-460 s (a 270 s
# gap), 450-500 s on another device (overlaps the previous by 10 s). Officer p2: one clip.
CLIPS = [
    Clip("p1", "cam-1", 0, 60, (CASE,)),
    Clip("p1", "cam-1", 70, 60, (CASE,)),
    Clip("p1", "cam-1", 400, 60, (CASE,)),
    Clip("p1", "cam-9", 450, 50, (CASE,)),
    Clip("p2", "cam-2", 30, 300, (CASE,)),
    Clip("p3", "cam-3", 0, 10, ("C-GRANTED",)),
    Clip("p4", "cam-4", 0, 10, ("C-OTHER",)),
]


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    return make_settings(web={"login_failures_per_user": 3, "login_failures_per_address": 5})


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, workers=0)) as c:  # the people service by default
        make_web_users(c.app.state.runtime)  # type: ignore[attr-defined]
        yield c


@pytest.fixture
def runtime(client: TestClient) -> Runtime:
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    return rt


@pytest.fixture
def items(runtime: Runtime, tmp_path: Path) -> list[str]:
    ids = seal_clips(runtime, tmp_path, CLIPS)
    people.grant(runtime.sessions, name="rev1", case_id="C-GRANTED", until=None, actor="cli:t")
    set_units(
        runtime,
        cases={CASE: "unit-a", "C-OTHER": "unit-b"},
        persons={"p1": "unit-a", "p2": "unit-a", "p4": "unit-b"},
        devices={"cam-3": "unit-c"},
    )
    return ids


def test_pages_need_a_login_and_come_back_after_it(client: TestClient, items: list[str]) -> None:
    r = client.get(f"/cases/{CASE}", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/login?next=")
    cookie = r.headers["set-cookie"]  # every visitor gets a session (for the CSRF token)
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    assert "Secure" not in cookie  # plain http here; https requests get Secure
    r = client.get(r.headers["location"])
    assert "csrf" in r.text and 'name="username"' in r.text
    r = client.post(
        "/login",
        data={"username": "off1", "password": PASSWORD, "csrf": csrf_of(r.text),
              "next": f"/cases/{CASE}"},
        follow_redirects=False,
    )  # fmt: skip
    assert r.status_code == 303 and r.headers["location"] == f"/cases/{CASE}"
    page = client.get(f"/cases/{CASE}")
    assert page.status_code == 200
    for item_id in items[:5]:
        assert f'href="/items/{item_id}"' in page.text
    assert items[5] not in page.text  # another case's item


def test_secure_cookie_over_https(settings: Settings) -> None:
    with TestClient(create_app(settings, workers=0), base_url="https://testserver") as c:
        make_web_users(c.app.state.runtime)  # type: ignore[attr-defined]
        r = c.get("/login")
        assert "Secure" in r.headers["set-cookie"]
        assert login(c, "admin1").status_code == 303


def test_login_refuses_an_open_redirect(client: TestClient) -> None:
    form = client.get("/login")
    r = client.post(
        "/login",
        data={"username": "admin1", "password": PASSWORD, "csrf": csrf_of(form.text),
              "next": "//evil.example/"},
        follow_redirects=False,
    )  # fmt: skip
    assert r.headers["location"] == "/me"


def test_login_failures_are_logged_and_limited_per_user_and_address(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="liuhen.web")
    for _ in range(3):
        assert login(client, "off1", "wrong").status_code == 401
    assert caplog.text.count("login failed: user='off1'") == 3
    r = login(client, "off1")  # the right password, but the user name is locked for now
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert "login refused (rate limit): user='off1'" in caplog.text
    # Other names from the same address: two more failures reach the address limit (5).
    assert login(client, "nobody", "x").status_code == 401
    assert login(client, "nobody2", "x").status_code == 401
    assert login(client, "admin1").status_code == 429
    assert "login: user=" not in caplog.text  # nobody got in
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with rt.sessions() as s:  # the people service kept each wrong password as an event
        failed = [e for e in pstore.case_events(s) if e.action == "login_failed"]
    assert sorted(e.actor for e in failed) == ["user:nobody", "user:nobody2"] + ["user:off1"] * 3


def test_only_a_real_password_logs_in(client: TestClient) -> None:
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    people.add_user(rt.sessions, name="nopw", role="auditor", unit=None, password=None, actor="t")
    assert login(client, "nopw", "x").status_code == 401  # a token-only user has no password
    assert login(client, "off1", PASSWORD + " ").status_code == 401
    assert login(client, "off1").status_code == 303


def test_a_good_login_is_logged_and_issues_a_fresh_session(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="liuhen.web")
    before = client.get("/login")
    anonymous_csrf = csrf_of(before.text)
    assert login(client, "admin1").status_code == 303
    assert "login: user=admin1 role=admin" in caplog.text
    me = client.get("/me")
    assert me.status_code == 200 and "admin1" in me.text
    assert csrf_of(me.text) != anonymous_csrf


def test_every_post_needs_the_csrf_token(
    client: TestClient, items: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="liuhen.web")
    # Logging in without the token fails, with the right password.
    client.get("/login")
    r = client.post("/login", data={"username": "off1", "password": PASSWORD})
    assert r.status_code == 403 and "CSRF" in r.text
    assert login(client, "off1").status_code == 303
    page = client.get(f"/items/{items[0]}").text
    targets = [
        f"/items/{items[0]}:verify",
        f"/cases/{CASE}:link",
        f"/cases/{CASE}:unlink",
        f"/cases/{CASE}:hold",
        f"/cases/{CASE}:release",
        f"/cases/{CASE}:export",
        "/me/tokens",
        "/me/tokens:revoke",
        "/logout",
    ]
    before = _custody_actions(client, items[0])
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with rt.sessions() as s:
        tokens = pstore.live_tokens(s, user_name="off1")
    for path in targets:
        for bad in ({}, {"csrf": "forged"}):
            r = client.post(path, data={"reason": "x", "item_id": items[0], **bad})
            assert r.status_code == 403 and "CSRF" in r.text, path
    assert _custody_actions(client, items[0]) == before  # nothing ran: no verify, no unlink
    with rt.sessions() as s:
        assert pstore.live_tokens(s, user_name="off1") == tokens
        assert repo.case_ids_of(s, item_id=items[0]) == [CASE]
    assert caplog.text.count("bad or missing CSRF token") == 2 * len(targets) + 1
    # With the token, verify runs.
    r = post_form(client, f"/items/{items[0]}:verify", page)
    assert r.status_code == 200 and 'id="verify-result"' in r.text
    assert "verify" in _custody_actions(client, items[0])
    assert client.get("/me").status_code == 200
    assert post_form(client, "/logout", page).status_code == 303
    assert client.get("/me", follow_redirects=False).status_code == 303  # logged out


def test_link_unlink_export_and_tokens_call_the_services(
    client: TestClient, items: list[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    login(client, "off1")
    page = client.get(f"/cases/{CASE}").text
    assert 'id="link-form"' in page and 'id="export-form"' in page
    assert 'id="hold-form"' not in page  # holds are an admin's
    # Unlink without a reason: refused, nothing changed.
    r = post_form(client, f"/cases/{CASE}:unlink", page, item_id=items[0], reason=" ")
    assert r.status_code == 422 and "reason" in r.text
    r = post_form(client, f"/cases/{CASE}:unlink", page, item_id=items[0], reason="wrong case")
    assert r.status_code == 303 and r.headers["location"] == f"/cases/{CASE}?done=unlink"
    with rt.sessions() as s:
        assert repo.case_ids_of(s, item_id=items[0]) == []
        events = [(e.action, e.actor, e.reason) for e in repo.custody_of(s, item_id=items[0])]
    # the unlink, and the legal hold it lifted (the item is in no held case now)
    assert events[-2:] == [("unlink", "user:off1", "wrong case"), ("legal_hold", "user:off1", None)]
    after = client.get(r.headers["location"]).text
    assert "已解除关联" in after
    # The case page still shows that it left: when, by whom, why.
    (row,) = re.findall(r'<tr class="taken-out-row">(.*?)</tr>', after, re.S)
    assert items[0] in row and "user:off1" in row and "wrong case" in row
    r = post_form(client, f"/cases/{CASE}:link", page, item_id=items[0], reason="it is this one")
    assert r.status_code == 303
    assert 'id="taken-out"' not in client.get(f"/cases/{CASE}").text  # back in the case
    with rt.sessions() as s:
        assert repo.case_ids_of(s, item_id=items[0]) == [CASE]
        assert "link" in [e.action for e in repo.custody_of(s, item_id=items[0])[-2:]]
    # Another unit's item cannot be linked into the case: 403, and a denied custody event.
    r = post_form(client, f"/cases/{CASE}:link", page, item_id=items[6], reason="mine now")
    assert r.status_code == 403 and "此次尝试已记录" in r.text
    assert _custody_actions(client, items[6])[-1] == "denied"
    r = post_form(client, f"/cases/{CASE}:unlink", page, item_id="0" * 26, reason="x")
    assert r.status_code == 404
    # Hold is refused to an officer (and recorded); export streams the package.
    assert post_form(client, f"/cases/{CASE}:hold", page, reason="x").status_code == 403
    with rt.sessions() as s:
        denied = [e for e in pstore.case_events(s, case_id=CASE) if e.action == "denied"]
    assert denied and denied[-1].actor == "user:off1"
    r = post_form(client, f"/cases/{CASE}:export", page)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"].startswith('attachment; filename="C-2026_0301-')
    package = tmp_path / "package.zip"
    package.write_bytes(r.content)
    report = verify_package(package, verifier_key=rt.ledger.key.verifier_key)
    assert report.ok and report.checked == 5, report.failures
    assert _custody_actions(client, items[0])[-1] == "export"
    # Tokens: issued on the page (shown once), it works on the API; revoked, it does not.
    me = client.get("/me").text
    r = post_form(client, "/me/tokens", me)
    assert r.status_code == 200
    token = r.text.split('id="new-token" class="token">')[1].split("<")[0]
    assert client.get(f"/v1/cases/{CASE}", headers=bearer(token)).status_code == 200
    r = post_form(client, "/me/tokens:revoke", r.text)
    assert r.status_code == 200 and 'id="revoked">' in r.text
    assert 'id="live-tokens">0<' in r.text
    assert client.get(f"/v1/cases/{CASE}", headers=bearer(token)).status_code == 401


def test_an_admin_holds_and_releases_without_seeing_the_evidence(
    client: TestClient, items: list[str]
) -> None:
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    login(client, "admin1")
    page = client.get(f"/cases/{CASE}")
    assert page.status_code == 200 and 'id="hold-form"' in page.text
    assert items[0] not in page.text  # no evidence on an admin's case page
    assert f'action="/cases/{CASE}:release"' in page.text  # a linked case starts held
    r = post_form(client, f"/cases/{CASE}:release", page.text, reason="proceedings closed")
    assert r.status_code == 303
    with rt.sessions() as s:
        assert not pstore.case_is_held(s, case_id=CASE)
        assert not pstore.item_hold_state(s, item_id=items[0])
    assert rt.store.legal_hold_on(*_original(rt, items[0])) is False
    page = client.get(f"/cases/{CASE}")
    r = post_form(client, f"/cases/{CASE}:hold", page.text, reason="complaint filed")
    assert r.status_code == 303
    with rt.sessions() as s:
        assert pstore.case_is_held(s, case_id=CASE)
    assert rt.store.legal_hold_on(*_original(rt, items[0])) is True
    assert client.get(f"/items/{items[0]}").status_code == 403  # still no evidence
    assert post_form(client, f"/cases/{CASE}:export", page.text).status_code == 403


def _original(rt: Runtime, item_id: str) -> tuple[str, str]:
    with rt.sessions() as s:
        item = repo.get_item(s, item_id=item_id)
        return item.object_key, item.version_id


def _custody_actions(client: TestClient, item_id: str) -> list[str]:
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with rt.sessions() as s:
        return [e.action for e in repo.custody_of(s, item_id=item_id)]


def test_case_page_marks_the_gap_and_the_overlap(client: TestClient, items: list[str]) -> None:
    login(client, "off1")
    r = client.get(f"/cases/{CASE}")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"
    page = r.text
    # One gap (p1: 130 s -> 400 s = 4 min 30 s); the 10 s pause is under the threshold.
    assert page.count('class="gap-row"') == 1
    assert "4 分 30 秒" in page  # Chinese by default
    assert f'href="/items/{items[1]}"' in page and f'href="/items/{items[2]}"' in page
    assert page.count('<g class="gap">') == 1
    assert page.count('class="overlap"') == 1  # p1's two devices, 450-460 s
    assert 'id="gap-count">录像间断: 1' in page
    # A lower threshold turns the 10 s pause into a gap too.
    assert client.get(f"/cases/{CASE}?gap=5").text.count('class="gap-row"') == 2
    assert client.get(f"/cases/{CASE}?gap=abc").text.count('class="gap-row"') == 1  # default
    en = client.get(f"/cases/{CASE}?lang=en").text
    assert "Recording gaps" in en and "4 min 30 s" in en
    # The choice is remembered.
    assert "Recording gaps" in client.get(f"/cases/{CASE}").text
    client.cookies.delete("liuhen_lang")
    assert "Timeline" in client.get(f"/cases/{CASE}", headers={"Accept-Language": "en-US"}).text
    assert (
        "时间轴" in client.get(f"/cases/{CASE}", headers={"Accept-Language": "fr, zh;q=0.5"}).text
    )


def test_who_may_see_which_case(
    client: TestClient, items: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="liuhen.web")
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    login(client, "rev1")  # reviewer, granted C-GRANTED only
    assert client.get("/cases/C-GRANTED").status_code == 200
    r = client.get(f"/cases/{CASE}")
    assert r.status_code == 403 and "您没有查看此案件的权限" in r.text
    assert items[0] not in r.text
    assert f"denied: user=rev1 role=reviewer path=/cases/{CASE} action=case.read" in caplog.text
    with rt.sessions() as s:  # recorded as the API records it
        denied = [e for e in pstore.case_events(s, case_id=CASE) if e.action == "denied"]
    assert [(e.actor, (e.details or {})["attempted"]) for e in denied] == [
        ("user:rev1", "case.read")
    ]
    # An item of a case not granted: refused, logged, and a custody event of that item.
    r = client.get(f"/items/{items[0]}")
    assert r.status_code == 403
    assert client.get(f"/items/{items[0]}/files/original").status_code == 403
    assert _custody_actions(client, items[0]).count("denied") == 2
    assert client.get("/supervision").status_code == 403
    assert 'href="/supervision"' not in client.get("/me").text
    # An officer of unit-a sees the unit's case, not unit-b's.
    client.cookies.clear()
    login(client, "off1")
    assert client.get(f"/cases/{CASE}").status_code == 200
    assert client.get("/cases/C-OTHER").status_code == 403
    assert client.get(f"/items/{items[6]}").status_code == 403
    # Unknown case and item: 404 pages for everyone (that an ID exists is no secret).
    assert client.get("/cases/NOPE-1").status_code == 404
    assert client.get("/items/0000000000").status_code == 404
    # An auditor reads the supervision figures, not the evidence (the API's rule).
    client.cookies.clear()
    login(client, "audit1")
    assert client.get(f"/cases/{CASE}").status_code == 403
    assert client.get(f"/items/{items[0]}").status_code == 403
    assert client.get("/search").status_code == 403
    assert 'href="/supervision"' in client.get("/me").text


def test_item_files_stream_with_ranges_and_are_custody_events(
    client: TestClient, items: list[str]
) -> None:
    login(client, "off1")
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with rt.sessions() as s:
        item = repo.get_item(s, item_id=items[0])
    r = client.get(f"/items/{items[0]}/files/original", headers={"Range": "bytes=0-15"})
    assert r.status_code == 206 and r.content[:8] == b"\x00\x00\x00\x18ftyp"
    assert r.headers["content-range"] == f"bytes 0-15/{item.size}"
    full = client.get(f"/items/{items[0]}/files/original")
    assert full.status_code == 200 and len(full.content) == item.size
    assert "attachment" in full.headers["content-disposition"]
    assert client.get(f"/items/{items[0]}/files/proxy").status_code == 404  # never processed
    with rt.sessions() as s:
        actors = [(e.action, e.actor) for e in repo.custody_of(s, item_id=items[0])]
    assert actors.count(("download", "user:off1")) == 2


def test_search_filters_and_hides_what_the_user_may_not_see(
    client: TestClient, items: list[str]
) -> None:
    login(client, "rev1")
    r = client.get("/search?officer=p4")
    assert r.status_code == 200 and items[6] not in r.text  # C-OTHER is not granted
    r = client.get("/search?case=C-GRANTED")
    assert items[5] in r.text and 'href="/cases/C-GRANTED"' in r.text
    client.cookies.clear()
    login(client, "off1")
    r = client.get("/search?officer=p1")
    assert all(i in r.text for i in items[:4]) and items[4] not in r.text
    assert items[3] in client.get("/search?device=cam-9").text
    assert items[6] not in client.get("/search?unit=unit-b").text  # not off1's unit
    r = client.get("/search?from=2026-03-02")  # local dates (UTC+8): all items are on 03-01
    assert r.text.count('href="/items/') == 0
    assert client.get("/search?media_type=video").text.count('href="/items/') == 5
    assert client.get("/search?media_type=audio").text.count('href="/items/') == 0
    r = client.get("/search?bbox=1,2,3")
    assert r.status_code == 422 and "W,S,E,N" in r.text
    assert client.get("/search?from=03/01").status_code == 422
    # Cursor pages: two at a time, in capture order, none twice.
    seen: list[str] = []
    url: str | None = "/search?officer=p1&limit=2"
    while url:
        page = client.get(url).text
        seen += [i for i in items if f'href="/items/{i}"' in page]
        found = NEXT_PAGE.search(page)
        url = html.unescape(found.group(1)) if found else None
    assert seen == items[:4]
    client.cookies.clear()
    login(client, "off2")
    r = client.get("/search?unit=unit-b")
    assert items[6] in r.text and items[0] not in r.text


def test_supervision_figures_chart_and_csv(client: TestClient, items: list[str]) -> None:
    login(client, "audit1")
    page = client.get("/supervision?from=2026-03-01&to=2026-03-01")
    assert page.status_code == 200
    assert page.text.count('<section class="unit">') == 3  # unit-a, unit-b, unit-c
    assert page.text.count('<svg class="bars"') == 3
    r = client.get("/supervision.csv?from=2026-03-01&to=2026-03-01")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text.lstrip("\ufeff"))))
    by = {(row["unit"], row["officer"]): row for row in rows}
    p1 = by[("unit-a", "p1")]
    assert p1["items"] == "4"
    assert float(p1["recorded_hours"]) == pytest.approx((60 + 60 + 60 + 50) / 3600, abs=1e-3)
    assert p1["cases_with_gaps"] == "1"
    assert p1["late_uploads"] == "4"  # recorded on 2026-03-01, uploaded months later
    assert by[("unit-a", "p2")]["cases_with_gaps"] == "0"
    assert by[("unit-a", "*")]["items"] == "5"
    assert by[("unit-b", "p4")]["items"] == "1"
    assert by[("unit-c", "p3")]["items"] == "1"  # the device's unit, the officer has none
    # Another window holds nothing; a bad one is refused with a page that says why.
    empty = client.get("/supervision.csv?from=2025-01-01&to=2025-01-02")
    assert len(list(csv.reader(io.StringIO(empty.text)))) == 1  # the header only
    assert client.get("/supervision?from=2026-03-05&to=2026-03-01").status_code == 422
    client.cookies.clear()
    login(client, "off1")
    assert client.get("/supervision.csv").status_code == 403


def test_a_device_clock_at_the_calendars_edge_and_odd_queries_are_no_500s(
    client: TestClient, runtime: Runtime, items: list[str], tmp_path: Path
) -> None:
    """One upload whose manifest says year 9999 (a reset clock) used to make its case page,
    its item page and every search listing it a 500 for everyone. The device's word is kept
    in the manifest but not taken for the capture time. Queries a person can type (dates at
    the calendar's edges, a superscript digit, a non-ASCII CSRF token) are refusals or
    ignored, never 500s."""
    path = fake_mp4(tmp_path, "reset-clock.mp4")
    far = datetime(9999, 12, 31, 20, 0, tzinfo=UTC)
    manifest = Manifest(officer_id="p1", device_id="cam-1", case_ids=(CASE,),
                        file_name=path.name, capture_start=far, capture_end=far)  # fmt: skip
    odd = seal_file(runtime, path, manifest, actor="test")
    with runtime.sessions() as s:
        item = repo.get_item(s, item_id=odd.item_id)
        assert item.captured_at is None and item.captured_end is None
        assert item.manifest["capture_start"].startswith("9999-12-31")
        assert not [p for p in item.problems if p["code"] == "late_upload"]
    login(client, "off1")
    for url in (f"/cases/{CASE}", f"/items/{odd.item_id}", f"/search?case={CASE}"):
        r = client.get(url)
        assert r.status_code == 200, (url, r.status_code)
        assert odd.item_id in r.text
    queries = [
        "/search?to=9999-12-31",
        "/search?from=0001-01-01",
        "/search?case=" + CASE + "&limit=%C2%B2",  # limit=²
        f"/cases/{CASE}?gap=%C2%B2",
    ]
    for url in queries:
        r = client.get(url)
        assert r.status_code in {200, 422}, (url, r.status_code, r.text[:200])
    r = post_form(client, "/me/tokens", client.get("/me").text)
    token = r.text.split('id="new-token" class="token">')[1].split("<")[0]
    r = client.get("/v1/items", params={"from": "0001-01-01T00:00+08:00"}, headers=bearer(token))
    assert r.status_code == 422, r.text
    client.cookies.clear()
    login(client, "audit1")
    for url in ("/supervision?from=0001-01-01&to=9999-12-31", "/supervision.csv?to=9999-12-31"):
        r = client.get(url)
        assert r.status_code in {200, 422}, (url, r.status_code, r.text[:200])
    r = client.post("/login", data={"username": "off1", "password": "x", "csrf": "é" * 20})
    assert r.status_code in {400, 403}, r.status_code


def _logged_in(client: TestClient) -> bool:
    r = client.get("/me", follow_redirects=False)
    assert r.status_code in {200, 303}, r.status_code
    return bool(r.status_code == 200)


def test_a_logout_ends_the_session_on_the_server_not_only_in_the_browser(
    client: TestClient,
) -> None:
    login(client, "off1")
    copied = client.cookies.get("liuhen_session")
    assert copied and _logged_in(client)
    assert post_form(client, "/logout", client.get("/me").text).status_code == 303
    client.cookies.set("liuhen_session", copied)  # the cookie kept (copied, or a stale tab)
    assert not _logged_in(client)


def test_revoking_credentials_and_disabling_a_user_end_their_sessions(
    settings: Settings, client: TestClient, runtime: Runtime
) -> None:
    other = TestClient(client.app)  # the same user in a second browser
    login(client, "off1")
    login(other, "off1")
    # Revoking from the web keeps the session asking, ends the others.
    assert post_form(client, "/me/tokens:revoke", client.get("/me").text).status_code == 200
    assert _logged_in(client) and not _logged_in(other)
    # An admin's revoke-tokens ends every session: a live one could issue itself a new token.
    people.revoke_tokens(runtime.sessions, name="off1", actor="cli:admin")
    assert not _logged_in(client)
    # Disabled: sessions end, the password and the tokens are refused, records stay.
    login(client, "off1")
    r = post_form(client, "/me/tokens", client.get("/me").text)
    token = r.text.split('id="new-token" class="token">')[1].split("<")[0]
    assert client.get(f"/v1/cases/{CASE}", headers=bearer(token)).status_code != 401
    done = people.set_disabled(
        runtime.sessions, name="off1", disabled=True, reason="left", actor="cli:admin"
    )
    assert (done["tokens_revoked"], done["web_sessions_ended"]) == (1, 1)
    assert not _logged_in(client)
    assert client.get(f"/v1/cases/{CASE}", headers=bearer(token)).status_code == 401
    client.cookies.clear()
    assert login(client, "off1").status_code == 401
    with runtime.sessions() as s:
        events = [(e.action, e.reason) for e in pstore.case_events(s)]
    assert ("user_disabled", "left") in events
    people.set_disabled(runtime.sessions, name="off1", disabled=False, reason="back", actor="a")
    client.cookies.clear()
    assert login(client, "off1").status_code == 303 and _logged_in(client)
    assert client.get(f"/v1/cases/{CASE}", headers=bearer(token)).status_code == 401  # stays
